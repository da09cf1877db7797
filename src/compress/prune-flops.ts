import {makeValueInfo, valueInfoShape} from '../onnx/build.js'
import {attrInt, weights} from '../onnx/graph.js'
import {modelToBytes} from '../onnx/model.js'
import {DataType, ModelProtoSchema, clone} from '../onnx/proto.js'
import type {ModelProto} from '../onnx/proto.js'
import {dtypeName, tensorDims} from '../onnx/tensor.js'
import {createSession, loadOrt} from '../runtime/ort.js'

const COUNTED = new Set(['Conv', 'ConvTranspose', 'MatMul', 'Gemm'])

export interface FlopCount {
  /** Floating-point operations (2 per multiply-accumulate) of Conv/ConvTranspose/MatMul/Gemm for one run. */
  flops: number
  /** The input shapes the count was made at (symbolic dims: 1 for the first axis, `symbolicSize` after). */
  inputShapes: Record<string, number[]>
}

/**
 * Count the FLOPs of the main graph's Conv/ConvTranspose/MatMul/Gemm nodes by running the model
 * once on zeros with their inputs and outputs exposed, so every shape is the runtime's own rather
 * than a re-implementation of shape inference. Returns undefined when the model cannot run on zeros.
 */
export async function countFlops(model: ModelProto, symbolicSize = 32): Promise<FlopCount | undefined> {
  const ort = await loadOrt()
  const probe = clone(ModelProtoSchema, model)
  const graph = probe.graph!
  const consts = new Map<string, number[]>()
  for (const ref of weights(probe)) if (ref.graph === graph) consts.set(ref.name, tensorDims(ref.tensor))
  const inputs = graph.input.filter((i) => !consts.has(i.name))
  const exposed = new Set(graph.output.map((o) => o.name))
  const nodes = graph.node.filter((n) => COUNTED.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx'))
  for (const n of nodes) {
    for (const name of [n.input[0], n.output[0]]) {
      if (!name || exposed.has(name) || consts.has(name) || inputs.some((i) => i.name === name)) continue
      exposed.add(name)
      graph.output.push(makeValueInfo(name, DataType.FLOAT))
    }
  }
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {}
  const inputShapes: Record<string, number[]> = {}
  for (const i of inputs) {
    const info = valueInfoShape(i)
    const shape = (info?.shape ?? []).map((d, k) => (typeof d === 'number' && d > 0 ? d : k === 0 ? 1 : symbolicSize))
    const n = shape.reduce((a, b) => a * b, 1)
    const type = dtypeName(info?.elemType ?? DataType.FLOAT)
    const data = type === 'int64' ? new BigInt64Array(n) : type === 'int32' ? new Int32Array(n) : type === 'bool' ? new Uint8Array(n) : new Float32Array(n)
    feeds[i.name] = new ort.Tensor(type as never, data as never, shape)
    inputShapes[i.name] = shape
  }
  let shapes: Map<string, number[]>
  try {
    const session = await createSession(modelToBytes(probe), {threads: 1, graphOptimizationLevel: 'disabled'})
    try {
      const out = await session.run(feeds as never)
      shapes = new Map(Object.entries(out).map(([k, t]) => [k, t.dims.map(Number)]))
    } finally {
      await session.release()
    }
  } catch {
    return undefined
  }
  for (const [k, s] of Object.entries(inputShapes)) shapes.set(k, s)
  const prod = (d: number[] | undefined): number => (d ?? []).reduce((a, b) => a * b, 1)
  let flops = 0
  for (const n of nodes) {
    const w = consts.get(n.input[1] ?? '')
    const x = shapes.get(n.input[0] ?? '') ?? consts.get(n.input[0] ?? '')
    const y = shapes.get(n.output[0] ?? '')
    if (!x || !y) continue
    if (n.opType === 'Conv' && w) flops += 2 * prod(y) * prod(w.slice(1))
    else if (n.opType === 'ConvTranspose' && w) flops += 2 * prod(x) * prod(w.slice(1))
    else if (n.opType === 'MatMul') flops += 2 * prod(y) * (x.at(-1) ?? 1)
    else if (n.opType === 'Gemm') flops += 2 * prod(y) * (x[attrInt(n, 'transA', 0) ? 0 : 1] ?? 1)
  }
  return {flops, inputShapes}
}
