import {performance} from 'node:perf_hooks'
import {readBatches} from '../data/dataset.js'
import type {InputMeta} from '../data/dataset.js'
import {KilnError, UsageError} from '../errors.js'
import {getProfile} from '../runtime/profiles.js'
import {createProfileSession, usesAllCores} from '../runtime/profiles.js'
import type {Ort} from '../runtime/ort.js'
import {toFeeds} from '../runtime/ort.js'
import type {DatasetSpec, HardwareProfile} from '../stages/types.js'
import {isCustomMetricRef, loadCustomMetric} from './custom.js'
import type {Accumulator, Outputs, TaskOptions} from './metrics.js'
import {baselineMetrics, BUILTIN_METRICS, isBuiltinMetric, labelMetrics, needsBaseline, needsLabels} from './metrics.js'

/** Options of {@link evaluateModel}. */
export interface EvaluateOptions extends TaskOptions {
  model: string
  /** A second model run on the same batches (agreement, cosine, output error, accuracy drop). */
  baseline?: string
  dataset: DatasetSpec
  /** Built-in metric names or custom metric module paths. Default: accuracy (+ agreement and cosine with a baseline). */
  metrics?: string[]
  /** Batch size (default 32; 1 or the fixed size when the model's batch dimension is fixed). */
  batchSize?: number
  /** Session settings (default the built-in `cpu-2t`). */
  profile?: HardwareProfile
  /** Where custom metric paths resolve from. */
  baseDir?: string
  signal?: AbortSignal
  progress?(done: number): void
}

export interface EvaluateResult {
  model: string
  baseline?: string
  dataset: string
  samples: number
  batchSize: number
  seconds: number
  samplesPerSecond: number
  /** Metric name → value; the baseline's own label metrics are under `baseline.<name>`. */
  metrics: Record<string, number>
}

/** What the model says about its inputs, in the dataset reader's terms. */
export function inputMetaOf(session: Ort.InferenceSession): InputMeta[] {
  return session.inputMetadata.map((m) => ({name: m.name, type: m.isTensor ? m.type : '', dims: m.isTensor ? [...m.shape] : []}))
}

function fixedBatch(meta: InputMeta[]): number | undefined {
  const d = meta[0]?.dims[0]
  return typeof d === 'number' && d > 0 ? d : undefined
}

function defaultMetrics(o: EvaluateOptions): string[] {
  const m = ['accuracy']
  if (o.baseline) m.push('agreement', 'cosine')
  return m
}

/**
 * Run a model (and optionally a baseline) over a dataset and compute metrics. The dataset reader
 * prefetches the next batch on the I/O thread pool while the models run, unless the profile's
 * threads already take every core: then it reads in line, which is faster than contending.
 * Batch memory is recycled, so a long evaluation allocates (and page-faults) only a few batches.
 */
export async function evaluateModel(o: EvaluateOptions): Promise<EvaluateResult> {
  const metrics = o.metrics?.length ? o.metrics : defaultMetrics(o)
  const unknown = metrics.filter((m) => !isBuiltinMetric(m) && !isCustomMetricRef(m))
  if (unknown.length) {
    throw new UsageError(`unknown metric${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`, {code: 'E_EVAL_METRIC', tryMessage: `Built-in metrics: ${BUILTIN_METRICS.join(', ')}; or a module path like ./my-metric.js`})
  }
  const baselineWanted = metrics.filter(needsBaseline)
  if (baselineWanted.length && !o.baseline) {
    throw new UsageError(`metric${baselineWanted.length > 1 ? 's' : ''} ${baselineWanted.join(', ')} compare with a baseline model, and none was given`, {code: 'E_EVAL_METRIC', tryMessage: 'Set `baseline:` (input or a stage id), or `--baseline MODEL`.'})
  }
  const profile = o.profile ?? getProfile('cpu-2t')
  const session = await createProfileSession(o.model, profile)
  const base = o.baseline ? await createProfileSession(o.baseline, profile) : undefined
  try {
    const meta = inputMetaOf(session)
    if (base) {
      const bm = inputMetaOf(base)
      const names = (m: InputMeta[]) => m.map((i) => i.name).sort().join(',')
      if (names(bm) !== names(meta)) throw new KilnError(`the baseline's inputs (${names(bm)}) differ from the model's (${names(meta)})`, {code: 'E_EVAL_BASELINE'})
    }
    const fixed = fixedBatch(meta)
    const batchSize = fixed ?? o.batchSize ?? 32
    const accs: Accumulator[] = []
    const label = metrics.filter(needsLabels)
    if (label.length) {
      accs.push(labelMetrics(label, o, 'outputs'))
      if (base) accs.push(labelMetrics(label, o, 'baseline', 'baseline.'))
    }
    if (baselineWanted.length) accs.push(baselineMetrics(baselineWanted, o))
    for (const m of metrics.filter(isCustomMetricRef)) accs.push(await loadCustomMetric(m, o.baseDir ?? process.cwd()))

    const toOutputs = (r: Ort.InferenceSession.OnnxValueMapType): Outputs =>
      Object.fromEntries(
        Object.entries(r).map(([k, t]) => {
          const d = t.data
          const data = d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>, Number)
          return [k, {data, dims: [...t.dims]}]
        }),
      )
    const t0 = performance.now()
    let n = 0
    // A model input with no batch axis of its own makes the batches one sample each.
    let whole = false
    for await (const b of readBatches(o.dataset, {batchSize, inputs: meta, signal: o.signal, reuse: true, inline: usesAllCores(profile)})) {
      if (fixed && b.size !== fixed) {
        throw new KilnError(`the model's batch dimension is fixed at ${fixed}; the dataset's ${n + b.size} samples are not a multiple of it`, {code: 'E_EVAL_BATCH', tryMessage: `Set the dataset's limit to a multiple of ${fixed}.`})
      }
      const feeds = await toFeeds(b.inputs)
      const [out, ref] = await Promise.all([session.run(feeds), base?.run(feeds)])
      const outputs = toOutputs(out)
      const input = {outputs, baseline: ref ? alignOutputs(toOutputs(ref), Object.keys(outputs)) : undefined, labels: b.labels, size: b.size}
      for (const a of accs) a.update(input)
      n += b.size
      whole ||= b.whole !== undefined
      o.progress?.(n)
    }
    const seconds = (performance.now() - t0) / 1000
    const result: Record<string, number> = {}
    for (const a of accs) Object.assign(result, a.result())
    return {model: o.model, baseline: o.baseline, dataset: o.dataset.name, samples: n, batchSize: whole ? 1 : batchSize, seconds, samplesPerSecond: n / seconds, metrics: result}
  } finally {
    await session.release()
    await base?.release()
  }
}

/**
 * The baseline's outputs under the model's output names. Conversion and some optimisers rename
 * outputs; when names differ but the count matches, outputs pair up by position.
 */
export function alignOutputs(baseline: Outputs, names: string[]): Outputs {
  if (names.every((n) => n in baseline)) return baseline
  const values = Object.values(baseline)
  if (values.length !== names.length) {
    throw new KilnError(`the baseline's outputs (${Object.keys(baseline).join(', ')}) do not match the model's (${names.join(', ')})`, {
      code: 'E_EVAL_BASELINE',
      tryMessage: 'Compare models with the same outputs, or name the output to read with `output:`.',
    })
  }
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]))
}
