/**
 * Calibration: activation ranges from a dataset streamed batch by batch through a copy of the
 * float model that exposes every tensor to calibrate as an extra graph output. Memory stays
 * bounded: per tensor only a running min/max and a fixed-size histogram of |x| are kept.
 */
import {KilnError} from '../../errors.js'
import {walkGraphs} from '../../onnx/graph.js'
import type {ModelProto} from '../../onnx/proto.js'
import type {Batch} from '../../data/dataset.js'
import type * as Ort from 'onnxruntime-node'
import {toFeeds} from '../../runtime/ort.js'
import {exposedSession, producersOf} from './graph-util.js'
import type {CalibrationMethod} from './options.js'

export type {CalibrationMethod} from './options.js'

const BINS = 2048

/** Running statistics of one tensor. The |x| histogram widens (re-binning) as larger values arrive. */
export class TensorStats {
  min = Number.POSITIVE_INFINITY
  max = Number.NEGATIVE_INFINITY
  hist = new Float64Array(BINS)
  /** Upper edge of the histogram (|x| range). */
  edge = 0
  /** The shape of the last batch seen (the batch dimension included). */
  dims?: number[]

  /** Values seen so far. */
  count = 0
  /** Sums of each sample's own minimum and maximum, and how many ranges they add up. */
  sampleMinSum = 0
  sampleMaxSum = 0
  samples = 0
  /** The sample reaching furthest from zero: its index in the calibration data and its own range. */
  peak?: {sample: number; min: number; max: number}

  /**
   * Add a batch's values. With `batch` (where its samples start in the data, and how many it
   * holds) and a first axis of that many, each sample's own range counts too (method `average`);
   * otherwise the batch's range counts as one.
   */
  add(data: Float32Array, dims?: readonly number[], batch?: {offset: number; size: number}): void {
    if (data.length === 0) return
    this.count += data.length
    if (dims) this.dims = [...dims]
    // One pass over the values for each sample's range; the batch's is theirs (NaN is in neither).
    const {lo, hi} = this.addSamples(data, dims, batch)
    if (lo < this.min) this.min = lo
    if (hi > this.max) this.max = hi
    const amax = Math.max(0, -lo, hi)
    if (!Number.isFinite(amax)) return
    if (amax > this.edge) this.widen(amax)
    const edge = this.edge
    if (edge === 0) {
      this.hist[0]! += data.length
      return
    }
    const k = BINS / edge
    const h = this.hist
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!
      const a = v < 0 ? -v : v
      const b = Math.min(BINS - 1, Math.floor(a * k))
      if (b >= 0) h[b]!++
    }
  }

  /** Counts each sample's range (see {@link add}); returns the whole batch's. */
  private addSamples(data: Float32Array, dims?: readonly number[], batch?: {offset: number; size: number}): {lo: number; hi: number} {
    const n = batch && dims?.[0] === batch.size && batch.size > 0 ? batch.size : 1
    const per = data.length / n
    let batchLo = Number.POSITIVE_INFINITY
    let batchHi = Number.NEGATIVE_INFINITY
    for (let s = 0; s < n; s++) {
      let lo = Number.POSITIVE_INFINITY
      let hi = Number.NEGATIVE_INFINITY
      for (let i = s * per; i < (s + 1) * per; i++) {
        const v = data[i]!
        if (v < lo) lo = v
        if (v > hi) hi = v
      }
      if (lo < batchLo) batchLo = lo
      if (hi > batchHi) batchHi = hi
      if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue
      this.sampleMinSum += lo
      this.sampleMaxSum += hi
      this.samples++
      if (!this.peak || Math.max(-lo, hi) > Math.max(-this.peak.min, this.peak.max)) this.peak = {sample: (batch?.offset ?? 0) + (n > 1 ? s : 0), min: lo, max: hi}
    }
    return {lo: batchLo, hi: batchHi}
  }

  /** The typical sample's range: each sample's own minimum and maximum, averaged (zero included). */
  averageRange(): {min: number; max: number} {
    if (this.samples === 0) return {min: Math.min(0, this.min), max: Math.max(0, this.max)}
    return {min: Math.min(0, this.sampleMinSum / this.samples), max: Math.max(0, this.sampleMaxSum / this.samples)}
  }

  private widen(amax: number): void {
    // Grow by at least 2x so that a slowly rising maximum does not re-bin on every batch.
    const next = this.edge === 0 ? amax : Math.max(amax, this.edge * 2)
    if (this.edge > 0) {
      const old = this.hist
      const h = new Float64Array(BINS)
      const ratio = this.edge / next
      for (let b = 0; b < BINS; b++) if (old[b]) h[Math.min(BINS - 1, Math.floor((b + 0.5) * ratio))]! += old[b]!
      this.hist = h
    }
    this.edge = next
  }

  /** The range to quantize to, by method. Clipped methods never widen past the observed min/max. */
  range(method: CalibrationMethod, percentile = 99.999): {min: number; max: number} {
    if (!Number.isFinite(this.min)) return {min: 0, max: 0}
    if (method === 'average') return this.averageRange()
    if (method === 'minmax' || this.edge === 0) return {min: this.min, max: this.max}
    const t = method === 'percentile' ? this.percentileThreshold(percentile) : this.entropyThreshold()
    return {min: Math.max(this.min, -t), max: Math.min(this.max, t)}
  }

  private percentileThreshold(p: number): number {
    const total = this.hist.reduce((a, b) => a + b, 0)
    const want = (total * p) / 100
    let acc = 0
    for (let b = 0; b < BINS; b++) {
      acc += this.hist[b]!
      if (acc >= want) return ((b + 1) * this.edge) / BINS
    }
    return this.edge
  }

  /**
   * KL-divergence threshold (the TensorRT method): for each candidate clip bin, compare the clipped
   * distribution with its 128-level quantized version and keep the one losing the least information.
   */
  private entropyThreshold(levels = 128): number {
    // Exact zeros (ReLU floors, padding) quantize exactly whatever the range; left in, their spike
    // dominates the divergence and drags the threshold far into the real data.
    const h = Float64Array.from(this.hist)
    h[0] = 0
    let best = BINS
    let bestKl = Number.POSITIVE_INFINITY
    const step = 16
    for (let i = levels; i <= BINS; i += step) {
      const p = new Float64Array(i)
      for (let b = 0; b < i; b++) p[b] = h[b]!
      let outliers = 0
      for (let b = i; b < BINS; b++) outliers += h[b]!
      p[i - 1]! += outliers
      const q = new Float64Array(i)
      const per = i / levels
      for (let j = 0; j < levels; j++) {
        const start = Math.floor(j * per)
        const end = j === levels - 1 ? i : Math.floor((j + 1) * per)
        let sum = 0
        let nonzero = 0
        for (let b = start; b < end; b++) {
          sum += h[b]!
          if (h[b]! > 0) nonzero++
        }
        if (nonzero === 0) continue
        // q is quantized from the clipped histogram without its tail, while p carries the tail in
        // its last bin: that mismatch is what makes clipping cost something.
        const v = sum / nonzero
        for (let b = start; b < end; b++) if (h[b]! > 0) q[b] = v
      }
      const kl = klDivergence(p, q)
      if (kl < bestKl) {
        bestKl = kl
        best = i
      }
    }
    return (best * this.edge) / BINS
  }
}

function klDivergence(p: Float64Array, q: Float64Array): number {
  let ps = 0
  let qs = 0
  for (let i = 0; i < p.length; i++) {
    ps += p[i]!
    qs += q[i]!
  }
  if (ps === 0 || qs === 0) return Number.POSITIVE_INFINITY
  let kl = 0
  for (let i = 0; i < p.length; i++) {
    if (p[i]! === 0) continue
    const pi = p[i]! / ps
    const qi = q[i]! / qs
    kl += qi === 0 ? pi * 20 : pi * Math.log(pi / qi)
  }
  return kl
}

/** The smallest and largest value a tensor takes: all a range check needs. */
export class Extremes {
  min = Number.POSITIVE_INFINITY
  max = Number.NEGATIVE_INFINITY
  count = 0

  add(data: Float32Array): void {
    let lo = this.min
    let hi = this.max
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!
      if (v < lo) lo = v
      if (v > hi) hi = v
    }
    this.min = lo
    this.max = hi
    this.count += data.length
  }
}

/** What calibration gathers for one tensor, batch by batch. */
export interface Accumulator {
  /** `batch`: where the batch's samples start in the data, and how many it holds. */
  add(data: Float32Array, dims: readonly number[], batch: {offset: number; size: number}): void | Promise<void>
}

export interface CalibrationResult<S extends Accumulator = TensorStats> {
  stats: Map<string, S>
  samples: number
  batches: number
}

/**
 * A copy of the float model that hands out the tensors to calibrate as extra outputs (wherever they
 * are computed, subgraphs included), on one onnxruntime session. {@link collect} streams batches
 * through it; several collections may share the session, each fetching only its own tensors.
 */
export class CalibrationRun {
  private constructor(
    private readonly session: Ort.InferenceSession,
    /** Each exposed tensor's output name. */
    private readonly outputs: Map<string, string>,
  ) {}

  static async open(model: ModelProto, tensors: readonly string[], threads = 2): Promise<CalibrationRun> {
    const {session, outputs} = await exposedSession(model, tensors, {threads}, 'basic')
    return new CalibrationRun(session, outputs)
  }

  /**
   * Statistics of `tensors` (all exposed ones by default) over `batches`: range statistics
   * ({@link TensorStats}) or what `opts.accumulator` makes. A tensor in an If branch that no
   * sample took gets none.
   */
  async collect<S extends Accumulator = TensorStats>(
    batches: AsyncIterable<Batch>,
    opts: {tensors?: readonly string[]; signal?: AbortSignal; onBatch?: (samples: number) => void; accumulator?: (tensor: string) => S} = {},
  ): Promise<CalibrationResult<S>> {
    const make = opts.accumulator ?? ((() => new TensorStats()) as unknown as (tensor: string) => S)
    const wanted = (opts.tensors ?? [...this.outputs.keys()]).filter((t) => this.outputs.has(t))
    const stats = new Map(wanted.map((t) => [t, make(t)]))
    const fetch = [...new Set(wanted.map((t) => this.outputs.get(t)!))]
    let samples = 0
    let count = 0
    for await (const batch of batches) {
      if (opts.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      const out = await this.session.run(await toFeeds(batch.inputs), fetch)
      for (const name of wanted) {
        const v = out[this.outputs.get(name)!]
        if (v && v.type === 'float32') await stats.get(name)!.add(v.data as Float32Array, v.dims, {offset: samples, size: batch.size})
      }
      for (const v of Object.values(out)) v.dispose?.()
      samples += batch.size
      count++
      opts.onBatch?.(samples)
    }
    if (samples === 0) throw new KilnError('the calibration dataset is empty', {code: 'E_DATA_EMPTY', tryMessage: 'Give at least one sample (100–500 representative samples are typical).'})
    return {stats, samples, batches: count}
  }

  async close(): Promise<void> {
    await this.session.release()
  }
}

/** Run `batches` through `model` once and collect range statistics of `tensors` (see {@link CalibrationRun}). */
export async function calibrate(model: ModelProto, tensors: string[], batches: AsyncIterable<Batch>, opts: {threads?: number; signal?: AbortSignal; onBatch?: (samples: number) => void} = {}): Promise<CalibrationResult> {
  const run = await CalibrationRun.open(model, tensors, opts.threads)
  try {
    return await run.collect(batches, opts)
  } finally {
    await run.close()
  }
}

/** Ops that move or regroup values without changing them. */
const LAYOUT_OPS = new Set(['Reshape', 'Transpose', 'Concat', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity', 'Split', 'Slice', 'Gather'])

/**
 * Tensors whose values are the model's answer: graph outputs, and what reaches them only through
 * ops that move values without changing them (a detector's score map reshaped and concatenated
 * into its output). Their extremes are the result itself (the one anchor that found the face), so
 * clipping calibration (percentile, entropy) must not cut them: they keep their observed range.
 * Inside a subgraph, the body's outputs count likewise: they are what the owner node hands on.
 */
export function answerTensors(model: ModelProto): Set<string> {
  const out = new Set<string>()
  for (const {graph} of walkGraphs(model)) {
    const producers = producersOf(graph)
    const stack = graph.output.map((o) => o.name)
    while (stack.length) {
      const name = stack.pop()!
      if (out.has(name)) continue
      out.add(name)
      const p = producers.get(name)
      // The data input only (Reshape's shape, Gather's indices and Slice's bounds are not values).
      if (p && LAYOUT_OPS.has(p.opType)) stack.push(...(p.opType === 'Concat' ? p.input : p.input.slice(0, 1)).filter(Boolean))
    }
  }
  return out
}
