import {readModel} from '../../src/onnx/model.js'
import {valueInfoShape} from '../../src/onnx/build.js'
import {DataType} from '../../src/onnx/proto.js'
import {createSession, loadOrt} from '../../src/runtime/ort.js'

/** Deterministic pseudo-random numbers (mulberry32), so every run feeds the same samples. */
export function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Sizes for symbolic dims of the real models (batch 1, a short audio window, a small image). */
const SYMBOLIC: Record<string, number> = {batch: 1, sequence: 512}

/**
 * Inputs for a model from its declared input shapes: uniform [0, 1) floats, the 16 kHz sample rate
 * for Silero's `sr`, zero recurrent state. Symbolic dims take a plausible small size.
 */
export async function sampleFeeds(file: string, seed: number): Promise<Record<string, unknown>> {
  const ort = await loadOrt()
  const model = await readModel(file)
  const init = new Set(model.graph!.initializer.map((t) => t.name))
  const random = rng(seed)
  const feeds: Record<string, unknown> = {}
  for (const input of model.graph!.input) {
    if (init.has(input.name)) continue
    const info = valueInfoShape(input)!
    const state = /state|^h$|^c$/.test(input.name)
    const shape = (info.shape ?? []).map((d, i) =>
      typeof d === 'number' && d > 0 ? d : (SYMBOLIC[String(d)] ?? (i === 0 || state ? 1 : i === 1 && info.shape!.length === 2 ? 512 : 64)),
    )
    const n = shape.reduce((a, b) => a * b, 1)
    if (info.elemType === DataType.INT64) feeds[input.name] = new ort.Tensor('int64', BigInt64Array.from({length: n}, () => 16000n), shape)
    else if (state) feeds[input.name] = new ort.Tensor('float32', new Float32Array(n), shape)
    else feeds[input.name] = new ort.Tensor('float32', Float32Array.from({length: n}, () => random()), shape)
  }
  return feeds
}

/** Run a model file on feeds; every output as float32. */
export async function runModel(file: string, feeds: Record<string, unknown>): Promise<Record<string, Float32Array>> {
  const session = await createSession(file, {threads: 2})
  try {
    const out = await session.run(feeds as never)
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, Float32Array.from(t.data as ArrayLike<number>, Number)]))
  } finally {
    await session.release()
  }
}

/** Cosine similarity of two outputs (1 = same direction). */
export function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!
    aa += a[i]! * a[i]!
    bb += b[i]! * b[i]!
  }
  return aa === 0 && bb === 0 ? 1 : ab / Math.sqrt(aa * bb || 1)
}
