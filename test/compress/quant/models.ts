/** Inputs for the real models, and a small generated transformer-shaped MatMul model. */
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../../src/onnx/build.js'
import {DataType} from '../../../src/onnx/proto.js'
import type {ModelProto} from '../../../src/onnx/proto.js'
import {makeTensor} from '../../../src/onnx/tensor.js'
import {loadOrt} from '../../../src/runtime/ort.js'
import type {Ort} from '../../../src/runtime/ort.js'
import * as fs from 'node:fs'
import {writeNpz} from '../../../src/data/npz-write.js'
import {MODELS, fixture} from '../../helpers/fixtures.js'

export type ModelKey = keyof typeof MODELS

const wave = (n: number, k = 10, a = 1) => Float32Array.from({length: n}, (_, i) => Math.sin(i / k) * a + Math.cos(i / (3 * k)) * 0.2 * a)

/** A deterministic, realistic-range input for each real model. */
export async function feedsFor(key: ModelKey): Promise<Record<string, Ort.Tensor>> {
  const ort = await loadOrt()
  const T = ort.Tensor
  switch (key) {
    case 'blazeface':
      return {'input:0': new T('float32', wave(128 * 128 * 3, 17), [1, 128, 128, 3])}
    case 'sileroV5':
      return {input: new T('float32', wave(512, 5, 0.3), [1, 512]), state: new T('float32', new Float32Array(256), [2, 1, 128]), sr: new T('int64', BigInt64Array.of(16000n), [])}
    case 'sileroLegacy':
      return {input: new T('float32', wave(512, 5, 0.3), [1, 512]), h: new T('float32', new Float32Array(128), [2, 1, 64]), c: new T('float32', new Float32Array(128), [2, 1, 64]), sr: new T('int64', BigInt64Array.of(16000n), [])}
    case 'ocrDet':
      return {x: new T('float32', wave(3 * 64 * 64, 7), [1, 3, 64, 64])}
    case 'ocrRec':
      return {x: new T('float32', wave(3 * 48 * 160, 7), [1, 3, 48, 160])}
    case 'ocrCls':
      return {x: new T('float32', wave(3 * 48 * 192, 7), [1, 3, 48, 192])}
  }
}

/** Run a model file/bytes once; returns every output as float32 arrays. */
export async function runModel(model: string | Uint8Array, feeds: Record<string, Ort.Tensor>): Promise<Record<string, Float32Array>> {
  const ort = await loadOrt()
  const s = await ort.InferenceSession.create(model as Uint8Array, {logSeverityLevel: 3, intraOpNumThreads: 1})
  try {
    const out = await s.run(feeds)
    return Object.fromEntries(Object.entries(out).filter(([, t]) => t.type === 'float32').map(([k, t]) => [k, t.data as Float32Array]))
  } finally {
    await s.release()
  }
}

/**
 * A transformer-shaped stack: `layers` blocks of MatMul(d→4d) → Relu → MatMul(4d→d) + residual,
 * with seeded random weights. Input `x` [batch, seq, d], output `y`.
 */
export function transformerModel(opts: {d: number; layers: number; seed?: number}): ModelProto {
  const {d, layers} = opts
  let seed = opts.seed ?? 7
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff - 0.5) * (2 / Math.sqrt(d))
  const nodes = []
  const inits = []
  let x = 'x'
  for (let l = 0; l < layers; l++) {
    const w1 = `l${l}.fc1`
    const w2 = `l${l}.fc2`
    inits.push(makeTensor(w1, DataType.FLOAT, [d, 4 * d], Float32Array.from({length: d * 4 * d}, rnd)))
    inits.push(makeTensor(w2, DataType.FLOAT, [4 * d, d], Float32Array.from({length: 4 * d * d}, rnd)))
    nodes.push(makeNode('MatMul', [x, w1], [`l${l}.h`], {}, {name: `l${l}/fc1`}))
    nodes.push(makeNode('Relu', [`l${l}.h`], [`l${l}.a`], {}, {name: `l${l}/relu`}))
    nodes.push(makeNode('MatMul', [`l${l}.a`, w2], [`l${l}.o`], {}, {name: `l${l}/fc2`}))
    const out = l === layers - 1 ? 'y' : `l${l}.r`
    nodes.push(makeNode('Add', [x, `l${l}.o`], [out], {}, {name: `l${l}/residual`}))
    x = out
  }
  const graph = makeGraph({
    name: 'transformer',
    node: nodes,
    initializer: inits,
    input: [makeValueInfo('x', DataType.FLOAT, ['batch', 'seq', d])],
    output: [makeValueInfo('y', DataType.FLOAT, ['batch', 'seq', d])],
  })
  return makeModel(graph, {'': 17})
}

/** A recording's 16 kHz PCM as float32 in [-1, 1]. */
function speechPcm(name: string): Float32Array {
  const wav = fs.readFileSync(fixture(`data/speech/${name}`))
  const at = wav.indexOf('data') + 8
  const pcm = new Int16Array(wav.buffer.slice(wav.byteOffset + at, wav.byteOffset + wav.length - ((wav.length - at) % 2)))
  return Float32Array.from(pcm, (v) => v / 32768)
}

export interface SileroStream {
  /** Each 512-sample chunk with the recurrent state the float model carried into it. */
  npz: string
  /** The float model's speech probability for each chunk. */
  probability: number[]
  feeds: Record<string, Ort.Tensor>[]
}

/**
 * Real speech run through Silero chunk by chunk at 16 kHz, as a streaming VAD runs: each chunk's
 * state is what the float model handed on from the chunk before. Written as an NPZ named after the
 * model's inputs (`sr` a scalar per sample, the state shaped like the whole input).
 */
export async function sileroStream(key: 'sileroV5' | 'sileroLegacy', recordings: string[], chunks: number, npz: string): Promise<SileroStream> {
  const ort = await loadOrt()
  const T = ort.Tensor
  const legacy = key === 'sileroLegacy'
  const session = await ort.InferenceSession.create(MODELS[key], {logSeverityLevel: 3, intraOpNumThreads: 1})
  const stateNames = legacy ? ['h', 'c'] : ['state']
  const stateDims = legacy ? [2, 1, 64] : [2, 1, 128]
  const size = stateDims.reduce((a, b) => a * b, 1)
  const inputs: Float32Array[] = []
  const states: Float32Array[][] = stateNames.map(() => [])
  const probability: number[] = []
  const feeds: Record<string, Ort.Tensor>[] = []
  try {
    for (const rec of recordings) {
      const pcm = speechPcm(rec)
      let state = stateNames.map(() => new Float32Array(size))
      for (let at = 0; at + 512 <= pcm.length && inputs.length < chunks; at += 512) {
        const x = pcm.slice(at, at + 512)
        const f: Record<string, Ort.Tensor> = {input: new T('float32', x, [1, 512]), sr: new T('int64', BigInt64Array.of(16000n), [])}
        stateNames.forEach((n, i) => (f[n] = new T('float32', state[i]!, stateDims)))
        inputs.push(x)
        stateNames.forEach((_, i) => states[i]!.push(state[i]!))
        feeds.push(f)
        const out = await session.run(f)
        probability.push((out.output!.data as Float32Array)[0]!)
        state = (legacy ? ['hn', 'cn'] : ['stateN']).map((n) => Float32Array.from(out[n]!.data as Float32Array))
      }
    }
  } finally {
    await session.release()
  }
  const join = (xs: Float32Array[]) => {
    const out = new Float32Array(xs.length * xs[0]!.length)
    xs.forEach((x, i) => out.set(x, i * x.length))
    return out
  }
  const n = inputs.length
  await writeNpz(npz, {
    input: {dtype: '<f4', shape: [n, 512], data: join(inputs)},
    sr: {dtype: '<i8', shape: [n], data: new BigInt64Array(n).fill(16000n)},
    ...Object.fromEntries(stateNames.map((name, i) => [name, {dtype: '<f4', shape: [n, ...stateDims], data: join(states[i]!)}])),
  })
  return {npz, probability, feeds}
}

/** A model's speech/no-speech decisions (at 0.5) on a stream against the float model's, and its mean |Δp|. */
export async function sileroAgreement(model: string, stream: SileroStream): Promise<{agreement: number; meanAbsError: number}> {
  const ort = await loadOrt()
  const session = await ort.InferenceSession.create(model, {logSeverityLevel: 3, intraOpNumThreads: 1})
  let same = 0
  let err = 0
  try {
    for (let i = 0; i < stream.feeds.length; i++) {
      const p = ((await session.run(stream.feeds[i]!)).output!.data as Float32Array)[0]!
      if (p > 0.5 === stream.probability[i]! > 0.5) same++
      err += Math.abs(p - stream.probability[i]!)
    }
  } finally {
    await session.release()
  }
  return {agreement: same / stream.feeds.length, meanAbsError: err / stream.feeds.length}
}
