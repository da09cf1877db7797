/** Inputs for the real models, and a small generated transformer-shaped MatMul model. */
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../../src/onnx/build.js'
import {DataType} from '../../../src/onnx/proto.js'
import type {ModelProto} from '../../../src/onnx/proto.js'
import {makeTensor} from '../../../src/onnx/tensor.js'
import {loadOrt} from '../../../src/runtime/ort.js'
import type {Ort} from '../../../src/runtime/ort.js'
import {MODELS} from '../../helpers/fixtures.js'

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
