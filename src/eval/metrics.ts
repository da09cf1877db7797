import {KilnError, UsageError} from '../errors.js'

/** How model outputs are read for the label metrics. */
export interface TaskOptions {
  /**
   * `classification`: an output [N, C] of class scores, argmax is the prediction.
   * `binary`: one score per sample (see `reduce`, `activation`), positive when ≥ `threshold`.
   * `regression`: one value per sample, compared with the label as a target.
   * Default: `binary` when `positiveClass` or `threshold` is set, or when the output is one value
   * per sample (split at 0.5 for probabilities, 0 for logits); else `classification`.
   */
  task?: 'classification' | 'binary' | 'regression'
  /** Output(s) the label metrics read (default: the first output). Several are concatenated per sample. */
  outputs?: string[]
  /** Binary: how a sample's output values become one score (default `max`). */
  reduce?: 'max' | 'mean' | 'first'
  /** Binary: applied to the score before the threshold (default `none`). */
  activation?: 'none' | 'sigmoid'
  /** Binary: the label value of the positive class (default 1). */
  positiveClass?: number
  /** Binary: decision threshold on the (activated) score (default 0.5). */
  threshold?: number
}

/** One batch's outputs: output name → values (row-major, first dim = batch) and dims. */
export type Outputs = Record<string, {data: Float32Array; dims: number[]}>

export interface MetricInput {
  outputs: Outputs
  baseline?: Outputs
  labels?: Float64Array
  size: number
}

/** A running metric: fed batch by batch, read at the end. */
export interface Accumulator {
  names: string[]
  update(b: MetricInput): void
  result(): Record<string, number>
}

export const BUILTIN_METRICS = ['accuracy', 'topK (top1, top5...)', 'precision', 'recall', 'f1', 'auc', 'mse', 'mae', 'cosine', 'agreement', 'outputError']
const LABEL_METRICS = /^(accuracy|top\d+|precision|recall|f1|auc|mse|mae)$/
const BASELINE_METRICS = /^(cosine|agreement|outputError)$/

export const needsLabels = (m: string) => LABEL_METRICS.test(m)
export const needsBaseline = (m: string) => BASELINE_METRICS.test(m)
export const isBuiltinMetric = (m: string) => LABEL_METRICS.test(m) || BASELINE_METRICS.test(m)

export function taskOf(o: TaskOptions): 'classification' | 'binary' | 'regression' {
  return o.task ?? (o.positiveClass !== undefined || o.threshold !== undefined ? 'binary' : 'classification')
}

/** Per-sample vectors of the selected outputs, concatenated. */
function rows(outputs: Outputs, names: string[], size: number): {width: number; at(i: number): Float32Array; flat?: Float32Array} {
  const parts = names.map((n) => {
    const o = outputs[n]
    if (!o) throw new UsageError(`the model has no output '${n}'; outputs: ${Object.keys(outputs).join(', ')}`, {code: 'E_EVAL_OUTPUT'})
    if (o.dims[0] !== size && size !== 1) throw new KilnError(`output '${n}' has first dimension ${o.dims[0]}, expected the batch size ${size}`, {code: 'E_EVAL_OUTPUT'})
    return {data: o.data, width: o.data.length / size}
  })
  const width = parts.reduce((n, p) => n + p.width, 0)
  return {
    width,
    // One output: sample i is flat[i*width, (i+1)*width), read in place with no view per sample.
    flat: parts.length === 1 ? parts[0]!.data : undefined,
    at(i) {
      if (parts.length === 1) return parts[0]!.data.subarray(i * width, (i + 1) * width)
      const v = new Float32Array(width)
      let off = 0
      for (const p of parts) {
        v.set(p.data.subarray(i * p.width, (i + 1) * p.width), off)
        off += p.width
      }
      return v
    },
  }
}

const argmax = (v: Float32Array): number => argmaxAt(v, 0, v.length)

/** Argmax of v[off, off+width), as an index into that range. */
function argmaxAt(v: Float32Array, off: number, width: number): number {
  let best = 0
  let top = v[off]!
  for (let i = 1; i < width; i++) {
    const x = v[off + i]!
    if (x > top) (top = x), (best = i)
  }
  return best
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x))

function binaryScore(v: Float32Array, o: TaskOptions): number {
  let s: number
  if (o.reduce === 'first') s = v[0]!
  else if (o.reduce === 'mean') s = v.reduce((a, b) => a + b, 0) / v.length
  else s = v.reduce((a, b) => (b > a ? b : a), Number.NEGATIVE_INFINITY)
  return o.activation === 'sigmoid' ? sigmoid(s) : s
}

/** How a metric reads outputs: the task, the binary scoring options, and the split. */
interface Scoring {
  task: 'classification' | 'binary' | 'regression'
  scoring: TaskOptions
  threshold: number
}

/**
 * The scoring for outputs `width` values wide, `values` being the first batch's first values. As
 * given, except that with no task given one value per sample is a score, not classes (an arg-max
 * over one value is always 0): binary, split at 0.5 when the values are all probabilities, else at
 * 0 (a logit).
 */
function scoringOf(o: TaskOptions, width: number, values: ArrayLike<number>): Scoring {
  if (o.task !== undefined || taskOf(o) !== 'classification' || width !== 1) return {task: taskOf(o), scoring: o, threshold: o.threshold ?? 0.5}
  return {task: 'binary', scoring: {...o, reduce: 'first', activation: 'none'}, threshold: scoreSplit(values)}
}

/** Where a score splits: 0.5 when the values are all probabilities (in [0, 1]), else 0 (logits). */
export function scoreSplit(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!(values[i]! >= 0 && values[i]! <= 1)) return 0
  return 0.5
}

/** ROC AUC by ranks (Mann–Whitney U), ties counted half. */
export function rocAuc(scores: ArrayLike<number>, positive: ArrayLike<boolean>): number {
  const idx = Array.from({length: scores.length}, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!)
  let nPos = 0
  let rankSum = 0
  for (let i = 0; i < idx.length; ) {
    let j = i
    while (j + 1 < idx.length && scores[idx[j + 1]!] === scores[idx[i]!]) j++
    const rank = (i + j) / 2 + 1
    for (let k = i; k <= j; k++) if (positive[idx[k]!]) (nPos++, (rankSum += rank))
    i = j + 1
  }
  const nNeg = scores.length - nPos
  if (nPos === 0 || nNeg === 0) return Number.NaN
  return (rankSum - (nPos * (nPos + 1)) / 2) / (nPos * nNeg)
}

function checkLabel(label: number, index: number, classes?: number): void {
  if (!Number.isFinite(label) || !Number.isInteger(label) || label < 0 || (classes !== undefined && label >= classes)) {
    throw new KilnError(`label ${label} of sample ${index} is out of range${classes === undefined ? '' : ` for a model with ${classes} classes (0–${classes - 1})`}`, {
      code: 'E_DATA_LABELS',
      tryMessage: 'Check that the labels field holds class indices (0-based), or set the right `labels:` field.',
    })
  }
}

/**
 * Label metrics over model outputs (accuracy, top-k, macro precision/recall/F1, AUC for binary,
 * MSE/MAE for regression). `prefix` names the results (`baseline.` for the baseline model's).
 */
export function labelMetrics(wanted: string[], o: TaskOptions, side: 'outputs' | 'baseline', prefix = ''): Accumulator {
  // Fixed on the first batch.
  let how: Scoring | undefined
  const ks = wanted.flatMap((m) => (/^top\d+$/.test(m) ? [Number(m.slice(3))] : []))
  let n = 0
  let correct = 0
  const topCorrect = new Map<number, number>(ks.map((k) => [k, 0]))
  let confusion: number[][] | undefined
  const scores: number[] = []
  const positives: boolean[] = []
  let se = 0
  let ae = 0
  let outputNames: string[] | undefined
  return {
    names: wanted.filter(needsLabels),
    update(b) {
      const outs = side === 'outputs' ? b.outputs : b.baseline!
      if (!b.labels) throw new KilnError(`metrics ${wanted.filter(needsLabels).join(', ')} need labels; the dataset has none`, {code: 'E_DATA_LABELS', tryMessage: 'Set `labels:` on the dataset, or ask only for metrics against a baseline (agreement, cosine).'})
      outputNames ??= o.outputs ?? [Object.keys(outs)[0]!]
      const r = rows(outs, outputNames, b.size)
      if (!how) {
        how = scoringOf(o, r.width, Array.from({length: b.size}, (_, i) => r.at(i)[0]!))
        // Binary options on another task would be read by nothing.
        const unread = how.task === 'binary' ? [] : (['reduce', 'activation', 'positiveClass', 'threshold'] as const).filter((k) => o[k] !== undefined)
        if (unread.length) throw new UsageError(`${unread.join(', ')} ${unread.length > 1 ? 'apply' : 'applies'} to binary tasks; this one is ${how.task}`, {code: 'E_EVAL_TASK', tryMessage: 'Set task: binary (--task binary), or drop them.'})
      }
      const {task, scoring, threshold} = how
      for (let i = 0; i < b.size; i++) {
        const label = b.labels[i]!
        if (task === 'regression') {
          const d = r.at(i)[0]! - label
          se += d * d
          ae += Math.abs(d)
        } else if (task === 'binary') {
          const s = binaryScore(r.at(i), scoring)
          const pos = label === (o.positiveClass ?? 1)
          if (!Number.isFinite(label)) checkLabel(label, n + i)
          // Without a named positive class, a binary task reads 0/1 labels: labels 0–9 mean a classifier was
          // given a binary option (a threshold), and "class 1 against the rest" is rarely what was meant.
          if (o.positiveClass === undefined && label !== 0 && label !== 1) {
            throw new UsageError(`label ${label} (sample ${n + i}): a binary task reads labels 0 and 1`, {
              code: 'E_DATA_LABELS',
              tryMessage: 'For a classifier, drop threshold (task classification). For a binary model, give 0/1 labels, or name the positive label with positiveClass (--positive-class).',
            })
          }
          scores.push(s)
          positives.push(pos)
          if (s >= threshold === pos) correct++
        } else {
          checkLabel(label, n + i, r.width)
          const data = r.flat ?? r.at(i)
          const off = r.flat ? i * r.width : 0
          const pred = argmaxAt(data, off, r.width)
          if (pred === label) correct++
          confusion ??= Array.from({length: r.width}, () => new Array<number>(r.width).fill(0))
          confusion[label]![pred]!++
          if (ks.length) {
            const target = data[off + label]!
            let higher = 0
            for (let c = 0; c < r.width; c++) if (data[off + c]! > target) higher++
            for (const k of ks) if (higher < k) topCorrect.set(k, topCorrect.get(k)! + 1)
          }
        }
      }
      n += b.size
    },
    result() {
      const out: Record<string, number> = {}
      const put = (k: string, v: number) => {
        if (wanted.includes(k)) out[prefix + k] = v
      }
      const {task, threshold} = how ?? scoringOf(o, 0, [])
      if (task === 'regression') {
        put('mse', se / n)
        put('mae', ae / n)
        return out
      }
      put('accuracy', correct / n)
      for (const k of ks) out[`${prefix}top${k}`] = task === 'classification' ? topCorrect.get(k)! / n : correct / n
      if (task === 'binary') {
        let tp = 0, fp = 0, fn = 0
        scores.forEach((s, i) => {
          const p = s >= threshold
          if (p && positives[i]) tp++
          else if (p) fp++
          else if (positives[i]) fn++
        })
        const precision = tp + fp ? tp / (tp + fp) : 0
        const recall = tp + fn ? tp / (tp + fn) : 0
        put('precision', precision)
        put('recall', recall)
        put('f1', precision + recall ? (2 * precision * recall) / (precision + recall) : 0)
        put('auc', rocAuc(scores, positives))
        return out
      }
      // Macro averages over the classes present in the labels or the predictions.
      const c = confusion ?? []
      let ps = 0, rs = 0, fs = 0, k = 0
      for (let j = 0; j < c.length; j++) {
        const tp = c[j]![j]!
        const actual = c[j]!.reduce((a, b) => a + b, 0)
        const predicted = c.reduce((a, row) => a + row[j]!, 0)
        if (actual === 0 && predicted === 0) continue
        const p = predicted ? tp / predicted : 0
        const r = actual ? tp / actual : 0
        ps += p
        rs += r
        fs += p + r ? (2 * p * r) / (p + r) : 0
        k++
      }
      put('precision', k ? ps / k : 0)
      put('recall', k ? rs / k : 0)
      put('f1', k ? fs / k : 0)
      if (wanted.includes('auc')) throw new UsageError('metric auc is for binary tasks', {code: 'E_EVAL_METRIC', tryMessage: 'Set positiveClass/threshold (binary task), or drop auc.'})
      return out
    },
  }
}

/** Metrics of the model against the baseline model: agreement, cosine similarity, per-output error statistics. */
export function baselineMetrics(wanted: string[], o: TaskOptions): Accumulator {
  // Fixed on the first batch, from the baseline's values.
  let how: Scoring | undefined
  let n = 0
  let agree = 0
  let cosSum = 0
  // One value per sample: cosine over all samples' values (a single value's cosine is only its sign).
  const scalar = {seen: false, dot: 0, nv: 0, nw: 0}
  const err = new Map<string, {maxAbs: number; sumAbs: number; sumSq: number; refSq: number; count: number}>()
  let outputNames: string[] | undefined
  return {
    names: wanted.filter(needsBaseline),
    update(b) {
      if (!b.baseline) return
      outputNames ??= o.outputs ?? [Object.keys(b.outputs)[0]!]
      const r = rows(b.outputs, outputNames, b.size)
      const rb = rows(b.baseline, outputNames, b.size)
      // The baseline's values decide whether one value per sample is a probability or a logit.
      how ??= scoringOf(o, r.width, Array.from({length: b.size}, (_, i) => rb.at(i)[0]!))
      const {task, scoring, threshold} = how
      for (let i = 0; i < b.size; i++) {
        const v = r.at(i)
        const w = rb.at(i)
        if (task === 'binary') agree += binaryScore(v, scoring) >= threshold === binaryScore(w, scoring) >= threshold ? 1 : 0
        else if (task === 'regression') agree += Math.abs(v[0]! - w[0]!) <= 1e-3 * Math.max(1, Math.abs(w[0]!)) ? 1 : 0
        else agree += argmax(v) === argmax(w) ? 1 : 0
        let dot = 0, nv = 0, nw = 0
        for (let j = 0; j < v.length; j++) (dot += v[j]! * w[j]!), (nv += v[j]! * v[j]!), (nw += w[j]! * w[j]!)
        if (v.length === 1) (scalar.seen = true), (scalar.dot += dot), (scalar.nv += nv), (scalar.nw += nw)
        else cosSum += nv === 0 && nw === 0 ? 1 : dot / (Math.sqrt(nv * nw) || 1)
      }
      if (wanted.includes('outputError')) {
        for (const [name, out] of Object.entries(b.outputs)) {
          const ref = b.baseline[name]
          if (!ref || ref.data.length !== out.data.length) continue
          const e = err.get(name) ?? {maxAbs: 0, sumAbs: 0, sumSq: 0, refSq: 0, count: 0}
          for (let j = 0; j < out.data.length; j++) {
            const d = Math.abs(out.data[j]! - ref.data[j]!)
            if (d > e.maxAbs || Number.isNaN(d)) e.maxAbs = d
            e.sumAbs += d
            e.sumSq += d * d
            e.refSq += ref.data[j]! * ref.data[j]!
          }
          e.count += out.data.length
          err.set(name, e)
        }
      }
      n += b.size
    },
    result() {
      const out: Record<string, number> = {}
      if (n === 0) return out
      if (wanted.includes('agreement')) out.agreement = agree / n
      if (wanted.includes('cosine')) out.cosine = !scalar.seen ? cosSum / n : scalar.nv === 0 && scalar.nw === 0 ? 1 : scalar.dot / (Math.sqrt(scalar.nv * scalar.nw) || 1)
      for (const [name, e] of err) {
        out[`outputError.${name}.maxAbs`] = e.maxAbs
        out[`outputError.${name}.meanAbs`] = e.sumAbs / e.count
        out[`outputError.${name}.rmse`] = Math.sqrt(e.sumSq / e.count)
        // Error relative to the baseline's own magnitude: comparable across outputs of any scale.
        out[`outputError.${name}.relRmse`] = Math.sqrt(e.sumSq / Math.max(e.refSq, 1e-30))
      }
      return out
    },
  }
}
