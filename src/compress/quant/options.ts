/**
 * Which quantization options each mode reads. An option given to a mode that does not read it is
 * refused rather than silently ignored: `--block-size 64 --mode static` most likely means the user
 * expected something that will not happen. Kept free of heavy imports: the pipeline schema checks it.
 */
export type QuantizeMode = 'dynamic' | 'static' | 'fp16' | 'int4'

/**
 * How static calibration turns what the data reaches into a range: the whole range (`minmax`), a
 * percentile of |x|, the KL-optimal clip (`entropy`), or each sample's own range averaged
 * (`average`), which a few extreme samples (a blank image) cannot stretch.
 */
export const CALIBRATION_METHODS = ['minmax', 'percentile', 'entropy', 'average'] as const
export type CalibrationMethod = (typeof CALIBRATION_METHODS)[number]

interface Applicability {
  modes: readonly QuantizeMode[]
  /** The terminal flag, for messages. */
  flag: string
}

const APPLIES: Record<string, Applicability> = {
  calibration: {modes: ['static', 'dynamic', 'int4', 'fp16'], flag: '--calibration'},
  method: {modes: ['static'], flag: '--method'},
  percentile: {modes: ['static'], flag: '--percentile'},
  activations: {modes: ['static'], flag: '--activations'},
  equalize: {modes: ['static'], flag: 'equalize'},
  perChannel: {modes: ['static', 'dynamic'], flag: '--per-channel'},
  symmetric: {modes: ['static', 'int4'], flag: '--symmetric'},
  blockSize: {modes: ['int4'], flag: '--block-size'},
  algorithm: {modes: ['int4'], flag: '--algorithm'},
  accuracyLevel: {modes: ['int4'], flag: 'accuracyLevel'},
  keepIOTypes: {modes: ['fp16'], flag: '--keep-io-types'},
  blockList: {modes: ['fp16'], flag: '--block-list'},
}

export interface Misapplied {
  key: string
  flag: string
  /** Where it applies, in words: "int4 mode", "the percentile method". */
  where: string
}

/** The options in `opts` (given, not undefined) that `mode` does not read. `percentile` also needs the percentile method. */
export function misappliedOptions(mode: QuantizeMode, opts: Record<string, unknown>): Misapplied[] {
  const out: Misapplied[] = []
  for (const [key, {modes, flag}] of Object.entries(APPLIES)) {
    if (opts[key] === undefined || modes.includes(mode)) continue
    out.push({key, flag, where: `${modes.join(', ')} mode${modes.length > 1 ? 's' : ''}`})
  }
  if (opts.percentile !== undefined && mode === 'static' && (opts.method ?? 'minmax') !== 'percentile') out.push({key: 'percentile', flag: '--percentile', where: 'the percentile method'})
  return out
}

/** One line naming them: "blockSize (--block-size) applies to int4 mode only; …". */
export function describeMisapplied(list: readonly Misapplied[]): string {
  return list.map((m) => `${m.key} (${m.flag}) applies to ${m.where} only`).join('; ')
}
