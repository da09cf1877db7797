/**
 * Measurements the quantizer decides with: predictions on an evaluation set (accuracy, agreement
 * with fp32), per-tensor SQNR against fp32 (node sensitivity), and interleaved A/B latency of two
 * models in one process on the target profile.
 */
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import type {Batch, BatchTensor, InputMeta} from '../../data/dataset.js'
import type {ModelProto} from '../../onnx/proto.js'
import {loadOrt, toFeeds} from '../../runtime/ort.js'
import type {Ort} from '../../runtime/ort.js'
import type {HardwareProfile} from '../../stages/types.js'
import {scoreSplit} from '../../eval/metrics.js'
import {sqnr} from './math.js'
import {exposedSession, sessionFor} from './graph-util.js'

type Session = Ort.InferenceSession
type Feeds = Record<string, Ort.Tensor>


/**
 * How a model's outputs become a class per sample. A first output whose last dimension is 1 is a
 * detector's score head: the sample is positive when any score of such heads exceeds `threshold`
 * (0 for logits, 0.5 for probabilities).
 * Otherwise the first output's arg-max is the class.
 */
export function predictions(session: Pick<Session, 'outputNames'>, out: Record<string, Ort.Tensor>, size: number, threshold = 0): number[] {
  const first = out[session.outputNames[0]!]!
  const dims = first.dims
  const preds: number[] = []
  if (dims.at(-1) === 1) {
    const heads = session.outputNames.filter((n) => out[n]?.dims.at(-1) === 1 && out[n]!.type === 'float32')
    for (let s = 0; s < size; s++) {
      let m = Number.NEGATIVE_INFINITY
      for (const h of heads) {
        const d = out[h]!.data as Float32Array
        const per = d.length / size
        for (let i = s * per; i < (s + 1) * per; i++) if (d[i]! > m) m = d[i]!
      }
      preds.push(m > threshold ? 1 : 0)
    }
    return preds
  }
  const d = first.data as Float32Array
  const classes = Number(dims.at(-1))
  const per = d.length / size
  for (let s = 0; s < size; s++) {
    // Sequence outputs ([N, T, C]) score their first step; classifiers have T = 1.
    let best = 0
    for (let c = 1; c < classes; c++) if (d[s * per + c]! > d[s * per + best]!) best = c
    preds.push(best)
  }
  return preds
}

/** Where a one-wide score head splits: 0.5 when the float model's values are all in [0, 1] (a probability, as Silero's speech score), else 0 (a logit). */
export function scoreThreshold(session: Pick<Session, 'outputNames'>, out: Record<string, Ort.Tensor>): number {
  const first = out[session.outputNames[0]!]!
  return first.dims.at(-1) === 1 && first.type === 'float32' ? scoreSplit(first.data as Float32Array) : 0
}

export interface EvalResult {
  samples: number
  /** Top-1 accuracy against labels, when the dataset has them. */
  accuracy?: number
  predictions: number[]
  labels?: number[]
  /** Where a one-wide score head was split (see {@link scoreThreshold}). */
  threshold: number
}

/** A session on a model file (as onnxruntime reads it), or on a model in memory. */
async function sessionOf(model: ModelProto | Uint8Array | string, profile: Partial<HardwareProfile>): Promise<Session> {
  if (typeof model !== 'string') return sessionFor(model, profile)
  return (await loadOrt()).InferenceSession.create(model, {logSeverityLevel: 3, intraOpNumThreads: profile.threads ?? 2})
}

/** Predictions (and accuracy, with labels). `threshold` splits a one-wide score head; by default the first batch decides. */
export async function evaluate(model: ModelProto | Uint8Array | string, batches: () => AsyncIterable<Batch>, profile: Partial<HardwareProfile>, signal?: AbortSignal, threshold?: number): Promise<EvalResult> {
  const session = await sessionOf(model, profile)
  const preds: number[] = []
  const labels: number[] = []
  let hasLabels = true
  try {
    for await (const batch of batches()) {
      if (signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      const out = await session.run(await toFeeds(batch.inputs))
      threshold ??= scoreThreshold(session, out)
      preds.push(...predictions(session, out, batch.size, threshold))
      if (batch.labels) labels.push(...batch.labels)
      else hasLabels = false
    }
  } finally {
    await session.release()
  }
  if (preds.length === 0) throw new KilnError('the evaluation dataset is empty', {code: 'E_DATA_EMPTY', tryMessage: 'Give a dataset with at least one sample.'})
  const result: EvalResult = {samples: preds.length, predictions: preds, threshold: threshold ?? 0}
  if (hasLabels && labels.length === preds.length) {
    result.labels = labels
    result.accuracy = preds.filter((p, i) => p === labels[i]).length / preds.length
  }
  return result
}

/**
 * How closely a quantized model follows the float one on some batches: top-1 agreement of their
 * predictions (see {@link predictions}) and the SQNR (dB) of each float output, averaged.
 */
/** A model's outputs on some batches, kept to compare other models against. */
export interface Reference {
  outputNames: readonly string[]
  outputs: Record<string, Ort.Tensor>[]
}

export async function referenceOutputs(model: ModelProto | Uint8Array | string, batches: Batch[], profile: Partial<HardwareProfile>): Promise<Reference> {
  const session = await sessionOf(model, profile)
  try {
    const outputs: Record<string, Ort.Tensor>[] = []
    for (const batch of batches) outputs.push(await session.run(await toFeeds(batch.inputs)))
    return {outputNames: [...session.outputNames], outputs}
  } finally {
    await session.release()
  }
}

export async function outputAgreement(ref: ModelProto | Uint8Array | string | Reference, test: ModelProto | Uint8Array, batches: Batch[], profile: Partial<HardwareProfile>): Promise<{samples: number; agreement: number; sqnrDb: number}> {
  const a = typeof ref === 'object' && 'outputs' in ref ? ref : await referenceOutputs(ref, batches, profile)
  const b = await sessionFor(test, profile)
  let same = 0
  let n = 0
  let db = 0
  let outputs = 0
  try {
    for (const [i, batch] of batches.entries()) {
      const ra = a.outputs[i]!
      const rb = await b.run(await toFeeds(batch.inputs))
      const threshold = scoreThreshold(a, ra)
      const pa = predictions(a, ra, batch.size, threshold)
      const pb = predictions(b, rb, batch.size, threshold)
      same += pa.filter((p, i) => p === pb[i]).length
      n += batch.size
      for (const name of a.outputNames) {
        if (ra[name]?.type !== 'float32' || rb[name]?.type !== 'float32') continue
        db += Math.max(-20, Math.min(sqnr(ra[name].data as Float32Array, rb[name].data as Float32Array), 100))
        outputs++
      }
    }
  } finally {
    await b.release()
  }
  return {samples: n, agreement: same / Math.max(1, n), sqnrDb: outputs ? db / outputs : Number.POSITIVE_INFINITY}
}

export function agreement(a: number[], b: number[]): number {
  return a.filter((p, i) => p === b[i]).length / Math.max(1, a.length)
}

/**
 * SQNR (dB) of main-graph tensors of `test` against `ref`, averaged over the given batches. Each
 * pair names the tensor in `ref` and the tensor in `test` that should carry the same values (a
 * quantized tensor is compared through its DequantizeLinear output, which holds the rounding).
 */
export async function tensorSqnr(ref: ModelProto, test: ModelProto, pairs: [string, string][], batches: Batch[], profile: Partial<HardwareProfile>): Promise<Map<string, number>> {
  // Both models hand out the tensors compared, wherever they are computed (If/Loop bodies too).
  const ea = await exposedSession(ref, pairs.map((p) => p[0]), profile, 'basic')
  const eb = await exposedSession(test, pairs.map((p) => p[1]), profile, 'basic')
  const live = pairs.filter(([x, y]) => ea.outputs.has(x) && eb.outputs.has(y))
  const a = ea.session
  const b = eb.session
  const sums = new Map<string, {s: number; n: number}>()
  try {
    for (const batch of batches) {
      const feeds = await toFeeds(batch.inputs)
      const ra = await a.run(feeds, [...new Set(live.map((p) => ea.outputs.get(p[0])!))])
      const rb = await b.run(feeds, [...new Set(live.map((p) => eb.outputs.get(p[1])!))])
      for (const [t, u] of live) {
        const x = ra[ea.outputs.get(t)!]!.data as Float32Array
        const y = rb[eb.outputs.get(u)!]!.data as Float32Array
        // An If branch this batch did not take hands out nothing.
        if (x.length === 0 || x.length !== y.length) continue
        const v = sqnr(x, y)
        const e = sums.get(t) ?? {s: 0, n: 0}
        e.s += Math.min(v, 200)
        e.n++
        sums.set(t, e)
      }
    }
  } finally {
    await a.release()
    await b.release()
  }
  return new Map([...sums].map(([t, e]) => [t, e.s / e.n]))
}

/** Random inputs for a model, for timing when no dataset is given. Symbolic dims take `fill`. */
export function syntheticInputs(inputs: InputMeta[], batch: number, fill = 64): Record<string, BatchTensor> {
  const out: Record<string, BatchTensor> = {}
  let seed = 12345
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) * 2 - 1
  for (const i of inputs) {
    const dims = i.dims.map((d, k) => (typeof d === 'number' && d >= 0 ? d : k === 0 ? batch : fill))
    const n = dims.reduce((a, b) => a * b, 1)
    let data: BatchTensor['data']
    if (i.type === 'float32') data = Float32Array.from({length: n}, rnd)
    else if (i.type === 'int64') data = new BigInt64Array(n).fill(1n)
    else if (i.type === 'int32') data = new Int32Array(n).fill(1)
    else data = new Uint8Array(n)
    out[i.name] = {type: i.type, data, dims}
  }
  return out
}

export interface ABResult {
  batch: number
  baselineMs: number
  candidateMs: number
  /** baseline / candidate (geometric mean of paired rounds): above 1 means the candidate is faster. */
  speedup: number
  /** 95% confidence interval of the speed-up. */
  low: number
  high: number
  verdict: 'faster' | 'slower' | 'inconclusive'
}

/**
 * A/B latency of a candidate model (bytes) against the input file on the profile, in one process,
 * interleaved in rounds (the project's benchmarkAB). Feeds come from real data when given.
 */
export async function latencyAB(baseline: string, candidate: Uint8Array, profile: HardwareProfile, batches: number[], feeds: (batch: number) => Promise<Record<string, BatchTensor>>, signal?: AbortSignal): Promise<ABResult[]> {
  const {benchmarkAB} = await import('../../runtime/bench.js')
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-quant-'))
  const file = path.join(dir, 'candidate.onnx')
  try {
    await fsp.writeFile(file, candidate)
    const prepared = new Map<number, Feeds>()
    for (const b of batches) prepared.set(b, await toFeeds(await feeds(b)))
    const r = await benchmarkAB({baseline, candidate: file}, profile, {batch: batches, warmup: 3, iterations: 40, rounds: 8, compressedSize: false, feeds: (b) => prepared.get(b), signal})
    return r.comparisons.map((c) => ({
      batch: c.batch,
      baselineMs: r.baseline.runs.find((x) => x.batch === c.batch)?.latencyMs.mean ?? Number.NaN,
      candidateMs: r.candidate.runs.find((x) => x.batch === c.batch)?.latencyMs.mean ?? Number.NaN,
      speedup: c.speedup,
      low: c.low,
      high: c.high,
      verdict: c.verdict,
    }))
  } finally {
    await fsp.rm(dir, {recursive: true, force: true})
  }
}
