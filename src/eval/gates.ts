import {UsageError} from '../errors.js'
import type {GateResult} from '../stages/types.js'

/** A gate's direction: `max` gates fail above the limit, `min` gates below it. */
export const GATE_KINDS: Record<string, {dir: 'max' | 'min'; what: string; unit?: string}> = {
  accuracy: {dir: 'min', what: 'accuracy'},
  accuracyDrop: {dir: 'max', what: 'accuracy drop vs the baseline'},
  agreement: {dir: 'min', what: 'top-1 agreement with the baseline'},
  cosine: {dir: 'min', what: 'cosine similarity with the baseline'},
  latencyP50Ms: {dir: 'max', what: 'p50 latency', unit: 'ms'},
  latencyP95Ms: {dir: 'max', what: 'p95 latency', unit: 'ms'},
  latencyP99Ms: {dir: 'max', what: 'p99 latency', unit: 'ms'},
  throughput: {dir: 'min', what: 'throughput', unit: 'samples/s'},
  speedup: {dir: 'min', what: 'speed-up vs the baseline (lower bound of the 95% interval)', unit: '×'},
  sizeRatio: {dir: 'max', what: 'size relative to the baseline'},
  compressedSizeRatio: {dir: 'max', what: 'compressed size relative to the baseline'},
  sizeBytes: {dir: 'max', what: 'model size', unit: 'bytes'},
}

/** A gate as written: a number for the built-in kinds, `{min}`/`{max}` for any metric. */
export type GateSpec = number | {min?: number; max?: number}

const fmt = (x: number) => (Number.isInteger(x) ? String(x) : Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(3) : x.toPrecision(3))

/**
 * Check gates against measured values. A gate whose value was not measured is a usage error (a
 * latency gate without a benchmark, say): a silent pass would be worse.
 */
export function checkGates(gates: Record<string, GateSpec>, values: Record<string, number | undefined>, stage?: string, notes: Record<string, string> = {}): GateResult[] {
  const out: GateResult[] = []
  for (const [name, spec] of Object.entries(gates)) {
    const kind = GATE_KINDS[name]
    const bounds: {dir: 'max' | 'min'; limit: number}[] =
      typeof spec === 'number'
        ? kind
          ? [{dir: kind.dir, limit: spec}]
          : (() => {
              throw new UsageError(`gate '${name}' needs {min: …} or {max: …}: it is not a built-in gate`, {code: 'E_GATE', tryMessage: `Built-in gates: ${Object.keys(GATE_KINDS).join(', ')}; any metric takes {min, max}.`})
            })()
        : [...(spec.min === undefined ? [] : [{dir: 'min' as const, limit: spec.min}]), ...(spec.max === undefined ? [] : [{dir: 'max' as const, limit: spec.max}])]
    const value = values[name]
    if (value === undefined || Number.isNaN(value)) {
      throw new UsageError(`gate '${name}' has no value to check: ${notes[name] ?? 'the metric was not measured'}`, {code: 'E_GATE', tryMessage: notes[`${name}.try`] ?? `Add the metric to 'metrics:' (or a benchmark/baseline for latency, speed-up and size gates).`})
    }
    for (const {dir, limit} of bounds) {
      const passed = dir === 'max' ? value <= limit : value >= limit
      const what = kind?.what ?? name
      const unit = kind?.unit ? ` ${kind.unit}` : ''
      const missed = Math.abs(value - limit)
      const message = passed
        ? `${what} ${fmt(value)}${unit}, ${dir === 'max' ? 'at most' : 'at least'} ${fmt(limit)}${unit}: passed`
        : `${what} ${fmt(value)}${unit}, ${dir === 'max' ? 'limit' : 'minimum'} ${fmt(limit)}${unit} (missed by ${fmt(missed)}${unit})`
      out.push({name, value, limit, passed, message: notes[name] ? `${message}; ${notes[name]}` : message, ...(stage ? {stage} : {})})
    }
  }
  return out
}
