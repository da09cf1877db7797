/**
 * Which weighted ops gain from int8 on this machine. Each Conv/Gemm/MatMul the static plan would
 * quantize is cut out into a model of its own, once in float and once in the QDQ form onnxruntime
 * fuses (QLinearConv, QGemm, ...), and both run under onnxruntime's profiler on the target profile
 * with the node's real input shape. Only the compute kernels count: the Quantize/Dequantize at the
 * edges of the one-node model and layout reorders are there in the whole model either way.
 *
 * On x86, int8 convolution has slow paths (a first layer with one input channel, depthwise 5×5)
 * next to fast ones (pointwise and dense 3×3): quantizing only the ops that gain can turn an int8
 * model that is slower than float into one that is faster.
 */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../onnx/build.js'
import {attrInt} from '../../onnx/graph.js'
import {modelToBytes, opsetVersion} from '../../onnx/model.js'
import {DataType} from '../../onnx/proto.js'
import type {ModelProto, NodeProto, TensorProto} from '../../onnx/proto.js'
import {makeTensor, tensorDims, tensorToFloat32} from '../../onnx/tensor.js'
import {loadOrt} from '../../runtime/ort.js'
import type {HardwareProfile} from '../../stages/types.js'
import {nodeLabel, ortOptions, weightIndex} from './graph-util.js'
import type {TensorMeta} from './graph-util.js'
import type {IntType} from './math.js'
import {paramsForRange, quantizeWeight} from './math.js'

export interface NodeTiming {
  node: string
  opType: string
  /** Kernel time per run, microseconds, summed over the timed batch sizes. */
  floatUs: number
  int8Us: number
}

/** Kernels that are not the op's compute: the one-node model's edges, layout changes. */
const EDGE_KERNELS = new Set(['QuantizeLinear', 'DequantizeLinear', 'ReorderInput', 'ReorderOutput', 'Transpose', 'Reshape', 'Identity', 'MemcpyFromHost', 'MemcpyToHost'])

/** More nodes than this and the per-node timing is skipped (it would take longer than it saves). */
export const MAX_TIMED_NODES = 160

export interface Cut {
  node: NodeProto
  float: ModelProto
  int8: ModelProto
  /** The cut model's input, and the tensor of the whole model it stands for. */
  input: string
  source: string
  shape: number[]
}

/**
 * The node input's shape at this batch size: its static dims, with the dynamic ones (image height
 * and width, sequence length) taken from what calibration saw.
 */
function concreteShape(meta: TensorMeta | undefined, seen: readonly number[] | undefined, batch: number): number[] | undefined {
  const rank = meta?.shape.length || seen?.length
  if (!rank) return undefined
  const s = Array.from({length: rank}, (_, i) => {
    const d = meta?.shape[i]
    if (typeof d === 'number' && d > 0) return d
    if (i === 0) return batch
    return seen && seen.length === rank ? seen[i]! : -1
  })
  return s.every((d) => d > 0) ? s : undefined
}

const weightMaps = new WeakMap<ModelProto, Map<string, TensorProto>>()

/** Weights by name, wherever they live (If/Loop bodies included), found once per model. */
function weightsByName(model: ModelProto): Map<string, TensorProto> {
  let w = weightMaps.get(model)
  if (!w) {
    w = new Map([...weightIndex(model)].map(([name, ref]) => [name, ref.tensor]))
    weightMaps.set(model, w)
  }
  return w
}

/** Names inside a cut-out model; the node's input is renamed to IN, so nothing the model calls its tensors can clash. */
const IN = 'kiln_cut_input'
const n = (name: string) => `kiln_cut_${name}`

/** The node alone, in float and in the QDQ form onnxruntime fuses, or undefined when it cannot be cut out. */
export function cutNode(model: ModelProto, node: NodeProto, meta: Map<string, TensorMeta>, seen: Map<string, readonly number[] | undefined>, ranges: Map<string, {min: number; max: number}>, batch: number, activations: IntType, symmetric: boolean, reduceRange: boolean): Cut | undefined {
  const w = weightsByName(model)
  const op = node.opType
  const x = node.input[0]!
  const weightName = node.input[1]
  const weight = weightName ? w.get(weightName) : undefined
  if (!weight || weight.dataType !== DataType.FLOAT || w.has(x)) return undefined
  const shape = concreteShape(meta.get(x), seen.get(x), batch)
  if (!shape) return undefined
  const bias = node.input[2] ? w.get(node.input[2]) : undefined
  if (node.input[2] && (!bias || bias.dataType !== DataType.FLOAT)) return undefined
  const opset = Math.max(13, opsetVersion(model) ?? 13)
  // Under the names the node reads (a Constant node's tensor may carry another name, or none).
  const inits = [{...weight, name: weightName!}, ...(bias ? [{...bias, name: node.input[2]!}] : [])]
  const float = makeModel(
    makeGraph({node: [makeNode(op, [IN, ...node.input.slice(1)], [n('y')], {}, {name: n('node')})], input: [makeValueInfo(IN, DataType.FLOAT, shape)], output: [makeValueInfo(n('y'), DataType.FLOAT)], initializer: inits}),
    {'': opset},
  )
  float.graph!.node[0]!.attribute = node.attribute

  // Weights per output channel: axis 0 of Conv and of Gemm with transB, axis 1 of [K, N] otherwise.
  const dims = tensorDims(weight)
  const axis = op === 'Conv' || (op === 'Gemm' && attrInt(node, 'transB', 0) === 1) ? 0 : dims.length === 2 ? 1 : undefined
  if (axis === undefined) return undefined
  const qw = quantizeWeight(tensorToFloat32(weight), dims, axis, reduceRange)
  const r = ranges.get(x) ?? {min: -1, max: 1}
  const xp = paramsForRange(r.min, r.max, activations, symmetric)
  const out = ranges.get(node.output[0]!) ?? r
  const yp = paramsForRange(out.min, out.max, activations, symmetric)
  const zpType = activations === 'uint8' ? DataType.UINT8 : DataType.INT8
  const zp = (v: number) => (activations === 'uint8' ? Uint8Array.of(v) : Int8Array.of(v))
  const qInits: TensorProto[] = [
    makeTensor(n('xs'), DataType.FLOAT, [], Float32Array.of(xp.scale)), makeTensor(n('xz'), zpType, [], zp(xp.zeroPoint)),
    makeTensor(n('ys'), DataType.FLOAT, [], Float32Array.of(yp.scale)), makeTensor(n('yz'), zpType, [], zp(yp.zeroPoint)),
    makeTensor(n('wq'), DataType.INT8, dims, qw.data), makeTensor(n('ws'), DataType.FLOAT, [qw.scales.length], qw.scales), makeTensor(n('wz'), DataType.INT8, [qw.scales.length], qw.zeroPoints),
  ]
  const nodes: NodeProto[] = [
    makeNode('QuantizeLinear', [IN, n('xs'), n('xz')], [n('xq')]),
    makeNode('DequantizeLinear', [n('xq'), n('xs'), n('xz')], [n('xd')]),
    makeNode('DequantizeLinear', [n('wq'), n('ws'), n('wz')], [n('wd')], {axis}),
  ]
  const inputs = [n('xd'), n('wd')]
  if (bias) {
    const b = tensorToFloat32(bias)
    const bs = Float32Array.from(qw.scales.length === 1 ? b.map(() => xp.scale * qw.scales[0]!) : qw.scales.map((s) => xp.scale * s))
    if (bs.length !== b.length) return undefined
    const bq = Int32Array.from(b, (v, i) => Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(v / bs[i]!))))
    qInits.push(makeTensor(n('bq'), DataType.INT32, [b.length], bq), makeTensor(n('bs'), DataType.FLOAT, [b.length], bs), makeTensor(n('bz'), DataType.INT32, [b.length], new Int32Array(b.length)))
    nodes.push(makeNode('DequantizeLinear', [n('bq'), n('bs'), n('bz')], [n('bd')], {axis: 0}))
    inputs.push(n('bd'))
  }
  const q = makeNode(op, inputs, [n('yf')], {}, {name: n('node')})
  q.attribute = node.attribute
  nodes.push(q, makeNode('QuantizeLinear', [n('yf'), n('ys'), n('yz')], [n('yq')]), makeNode('DequantizeLinear', [n('yq'), n('ys'), n('yz')], [n('y')]))
  const int8 = makeModel(makeGraph({node: nodes, input: [makeValueInfo(IN, DataType.FLOAT, shape)], output: [makeValueInfo(n('y'), DataType.FLOAT)], initializer: qInits}), {'': opset})
  return {node, float, int8, input: IN, shape, source: x}
}

/** Compute-kernel time per run (µs) of a model under onnxruntime's profiler. */
async function kernelTime(model: ModelProto, input: string, shape: number[], range: {min: number; max: number}, profile: Partial<HardwareProfile>, dir: string, runs: number): Promise<number> {
  const ort = await loadOrt()
  const prefix = path.join(dir, `p${Math.random().toString(36).slice(2)}`)
  // A probe: a cut-out node onnxruntime will not take is simply not timed, so its complaints stay quiet.
  const session = await ort.InferenceSession.create(modelToBytes(model), {...ortOptions(profile), enableProfiling: true, profileFilePrefix: prefix, logSeverityLevel: 4})
  const n = shape.reduce((a, b) => a * b, 1)
  const span = range.max - range.min || 1
  const data = Float32Array.from({length: n}, (_, i) => range.min + span * (((i * 2654435761) >>> 0) % 1000) / 1000)
  const feeds = {[input]: new ort.Tensor('float32', data, shape)}
  try {
    for (let i = 0; i < 3; i++) await session.run(feeds)
    for (let i = 0; i < runs; i++) await session.run(feeds)
  } finally {
    ;(session as unknown as {endProfiling?: () => void}).endProfiling?.()
    await session.release()
  }
  const file = fs.readdirSync(dir).find((f) => path.join(dir, f).startsWith(prefix))
  if (!file) return Number.NaN
  const events = JSON.parse(await fsp.readFile(path.join(dir, file), 'utf8')) as {cat?: string; name?: string; dur?: number; args?: {op_name?: string}}[]
  await fsp.rm(path.join(dir, file), {force: true})
  // The profile covers warm-up runs too; the medians of per-run sums are what is compared.
  const perRun: number[] = []
  let current = 0
  for (const e of events) {
    if (e.cat === 'Session' && e.name === 'model_run') {
      perRun.push(current)
      current = 0
    } else if (e.cat === 'Node' && e.name?.endsWith('_kernel_time') && !EDGE_KERNELS.has(e.args?.op_name ?? '')) current += e.dur ?? 0
  }
  const timed = perRun.slice(3).sort((a, b) => a - b)
  return timed.length ? timed[Math.floor(timed.length / 2)]! : Number.NaN
}

/**
 * Time each planned weighted node in float and in int8, at each batch size. Nodes that cannot be
 * cut out (unknown input shape, weights computed at run time) are left out of the result.
 */
export async function timeNodes(
  model: ModelProto,
  nodes: NodeProto[],
  meta: Map<string, TensorMeta>,
  /** Shapes calibration saw, for dims the model leaves dynamic. */
  seen: Map<string, readonly number[] | undefined>,
  ranges: Map<string, {min: number; max: number}>,
  opts: {batches: number[]; profile: Partial<HardwareProfile>; activations: IntType; symmetric: boolean; reduceRange: boolean; signal?: AbortSignal},
): Promise<NodeTiming[]> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-node-timing-'))
  const out: NodeTiming[] = []
  try {
    for (const node of nodes) {
      let floatUs = 0
      let int8Us = 0
      let ok = true
      for (const batch of opts.batches) {
        if (opts.signal?.aborted) return out
        const c = cutNode(model, node, meta, seen, ranges, batch, opts.activations, opts.symmetric, opts.reduceRange)
        if (!c) {
          ok = false
          break
        }
        const range = ranges.get(c.source) ?? {min: -1, max: 1}
        // Fewer runs for bigger nodes: a few milliseconds of each is enough to rank them.
        const runs = c.shape.reduce((a, b) => a * b, 1) > 1 << 20 ? 8 : 24
        try {
          floatUs += await kernelTime(c.float, c.input, c.shape, range, opts.profile, dir, runs)
          int8Us += await kernelTime(c.int8, c.input, c.shape, range, opts.profile, dir, runs)
        } catch {
          // A node onnxruntime will not run alone (an attribute combination its fused kernel lacks)
          // is simply not timed; the whole-model A/B still judges every candidate.
          ok = false
          break
        }
      }
      if (ok && Number.isFinite(floatUs) && Number.isFinite(int8Us)) out.push({node: nodeLabel(node), opType: node.opType, floatUs, int8Us})
    }
  } finally {
    await fsp.rm(dir, {recursive: true, force: true})
  }
  return out
}
