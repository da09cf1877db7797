/**
 * float16 conversion: weights and compute in half precision. Every float32 tensor becomes float16
 * except around ops on a block-list (kept in float32 behind Casts) and the inputs onnxruntime
 * wants in float32 whatever the data type (Resize roi/scales). Float-ness is propagated through
 * every graph, subgraphs included, so no Cast or declared type is left mismatched.
 */
import {getAttribute, weights} from '../../onnx/graph.js'
import {makeAttribute, makeNode} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto} from '../../onnx/proto.js'
import {toFloat16Array} from '../../onnx/float16.js'
import {makeTensor, setTensorData, tensorToFloat32} from '../../onnx/tensor.js'
import {NameScope} from './graph-util.js'

/** Ops kept in float32 by default: no fp16 CPU kernel worth having, or precision-critical accumulation. */
export const DEFAULT_FP16_BLOCK_LIST = ['Resize', 'Upsample', 'Range', 'NonMaxSuppression', 'TopK', 'RoiAlign', 'CumSum', 'LSTM', 'GRU', 'RNN', 'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'EyeLike']

/** Input slots that must stay float32 whatever the op's data type. */
const FP32_SLOTS: Record<string, number[]> = {Resize: [1, 2], Upsample: [1]}
const NEVER_FLOAT = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf', 'QuantizeLinear', 'DynamicQuantizeLinear', 'MatMulInteger', 'ConvInteger', 'StringNormalizer'])
const FIRST_OUTPUT_ONLY = new Set(['TopK', 'MaxPool', 'Unique'])

export interface Fp16Options {
  /** Keep float32 model inputs and outputs (Casts at the boundary). Default true. */
  keepIO: boolean
  /** Op types kept in float32. */
  blockList: readonly string[]
  /** Node predicate: true = keep this node in float32. */
  excluded: (node: NodeProto) => boolean
  /**
   * Tensors that must stay float32, with why (values beyond float16's range on real data): they are
   * never cast to float16, and every node that reads or writes one stays in float32.
   */
  keepTensors?: Map<string, string>
}

/** float16's largest finite value. */
export const FP16_MAX = 65504

/**
 * The tensors whose values, as calibration saw them, reach beyond half of float16's largest value:
 * in float16 they would overflow to infinity, or come too close to it for the next op.
 */
export function fp16OutOfRange(stats: Map<string, {min: number; max: number; count: number}>): Map<string, string> {
  const out = new Map<string, string>()
  for (const [name, s] of stats) {
    if (s.count === 0) continue
    const reach = Math.max(Math.abs(s.min), Math.abs(s.max))
    if (reach > FP16_MAX / 2) out.set(name, `${name} reaches ${reach.toPrecision(3)} on the calibration data, beyond float16's range (largest ${FP16_MAX})`)
  }
  return out
}

export interface Fp16Result {
  convertedWeights: number
  keptFloat32: {node: string; opType: string; reason: string}[]
  casts: number
}

export function convertFp16(model: ModelProto, opts: Fp16Options): Fp16Result {
  const names = new NameScope(model)
  const result: Fp16Result = {convertedWeights: 0, keptFloat32: [], casts: 0}
  const blocked = new Set(opts.blockList)
  const graph = model.graph!
  convertGraph(graph, new Set(), names, blocked, {...opts, keepTensors: new Map([...(opts.keepTensors ?? []), ...wideWeights(model)])}, result, true)
  return result
}

/**
 * Weights holding values float16 cannot: they would become infinity (a BatchNormalization variance
 * of 4.8e7 in PP-OCR's detector, a 2^20 scale in Silero's legacy model). They stay float32.
 */
function wideWeights(model: ModelProto): Map<string, string> {
  const out = new Map<string, string>()
  const check = (name: string, t: TensorProto) => {
    if (t.dataType !== DataType.FLOAT || !name) return
    let reach = 0
    for (const v of tensorToFloat32(t)) reach = Math.max(reach, Math.abs(v))
    if (reach > FP16_MAX) out.set(name, `weight ${name} holds ${reach.toPrecision(3)}, beyond float16's range (largest ${FP16_MAX})`)
  }
  for (const w of weights(model)) check(w.name, w.tensor)
  return out
}

function isFloatVi(vi: ValueInfoProto): boolean {
  return vi.type?.value.case === 'tensorType' && vi.type.value.value.elemType === DataType.FLOAT
}

function setVi(vi: ValueInfoProto, type: number): void {
  if (vi.type?.value.case === 'tensorType') vi.type.value.value.elemType = type
}

function toHalf(t: TensorProto): void {
  const v = tensorToFloat32(t)
  t.dataType = DataType.FLOAT16
  setTensorData(t, toFloat16Array(v))
}

function dtypeAttrIsFloat(node: NodeProto, name: string): boolean {
  const a = getAttribute(node, name)
  return !a || Number(a.i) === DataType.FLOAT
}

/** Names of float32 tensors in `graph` (before conversion), outer scope included. */
function floatTensors(graph: GraphProto, outer: Set<string>): Set<string> {
  const f = new Set(outer)
  for (const vi of graph.input) if (isFloatVi(vi)) f.add(vi.name)
  for (const t of graph.initializer) if (t.dataType === DataType.FLOAT) f.add(t.name)
  for (const node of graph.node) {
    const op = node.opType
    let outs: boolean[]
    if (node.domain !== '' && node.domain !== 'ai.onnx') outs = node.output.map(() => node.input.some((i) => f.has(i)))
    else if (op === 'Cast') outs = [Number(getAttribute(node, 'to')?.i) === DataType.FLOAT]
    else if (op === 'Constant') outs = [getAttribute(node, 'value')?.t?.dataType === DataType.FLOAT]
    else if (op === 'ConstantOfShape') outs = [(getAttribute(node, 'value')?.t?.dataType ?? DataType.FLOAT) === DataType.FLOAT]
    else if (op === 'DequantizeLinear') outs = [true]
    else if (op.startsWith('Random') || op === 'EyeLike') outs = [dtypeAttrIsFloat(node, 'dtype')]
    else if (NEVER_FLOAT.has(op)) outs = node.output.map(() => false)
    else if (op === 'If') outs = (getAttribute(node, 'then_branch')?.g?.output ?? []).map(isFloatVi)
    else if (op === 'Loop' || op === 'Scan') outs = (getAttribute(node, 'body')?.g?.output ?? []).slice(op === 'Loop' ? 1 : 0).map(isFloatVi)
    else {
      const any = node.input.some((i) => f.has(i))
      outs = node.output.map((_, k) => any && (k === 0 || !FIRST_OUTPUT_ONLY.has(op)))
    }
    node.output.forEach((o, k) => {
      if (o && outs[k]) f.add(o)
    })
  }
  return f
}

function convertGraph(graph: GraphProto, outer: Set<string>, names: NameScope, blocked: Set<string>, opts: Fp16Options, result: Fp16Result, main: boolean): void {
  const floats = floatTensors(graph, outer)
  for (const t of opts.keepTensors?.keys() ?? []) floats.delete(t)
  for (const node of graph.node) for (const a of node.attribute) for (const g of a.g ? [a.g] : a.graphs) convertGraph(g, floats, names, blocked, opts, result, false)
  const out: NodeProto[] = []
  const cast = (from: string, to: number, base: string): {name: string; node: NodeProto} => {
    const name = names.fresh(`${base}_${to === DataType.FLOAT ? 'fp32' : 'fp16'}`)
    result.casts++
    return {name, node: makeNode('Cast', [from], [name], {to}, {name: names.fresh(`${name}_Cast`)})}
  }
  for (const node of graph.node) {
    const wide = opts.keepTensors && [...node.input, ...node.output].find((t) => t && opts.keepTensors!.has(t))
    const keep = blocked.has(node.opType) || (node.domain !== '' && node.domain !== 'ai.onnx' && node.opType !== 'If') || opts.excluded(node) || !!wide
    if (keep) {
      if (wide || node.input.some((i) => floats.has(i)) || node.output.some((o) => floats.has(o))) {
        const reason = opts.excluded(node) ? 'excluded' : wide ? opts.keepTensors!.get(wide)! : 'block-listed op'
        result.keptFloat32.push({node: node.name || node.output[0] || node.opType, opType: node.opType, reason})
      }
      node.input = node.input.map((i) => {
        if (!i || !floats.has(i)) return i
        const c = cast(i, DataType.FLOAT, i)
        out.push(c.node)
        return c.name
      })
      const after: NodeProto[] = []
      node.output = node.output.map((o) => {
        if (!o || !floats.has(o)) return o
        const tmp = names.fresh(`${o}_fp32`)
        after.push(cast(tmp, DataType.FLOAT16, o).node)
        after.at(-1)!.output[0] = o
        return tmp
      })
      out.push(node, ...after)
      continue
    }
    const slots = node.domain === '' ? FP32_SLOTS[node.opType] : undefined
    if (slots) {
      for (const s of slots) {
        const i = node.input[s]
        if (i && floats.has(i)) {
          const c = cast(i, DataType.FLOAT, i)
          out.push(c.node)
          node.input[s] = c.name
        }
      }
    }
    if (node.opType === 'Cast') {
      const to = getAttribute(node, 'to')!
      if (Number(to.i) === DataType.FLOAT) to.i = BigInt(DataType.FLOAT16)
    } else if (node.opType === 'Constant' || node.opType === 'ConstantOfShape') {
      const v = getAttribute(node, 'value')
      if (v?.t && v.t.dataType === DataType.FLOAT) {
        toHalf(v.t)
        if (node.opType === 'Constant') result.convertedWeights++
      } else if (!v && node.opType === 'ConstantOfShape') {
        node.attribute.push(makeAttribute('value', makeTensor('', DataType.FLOAT16, [1], Uint16Array.of(0))))
      }
    } else if (node.opType.startsWith('Random') || node.opType === 'EyeLike') {
      // Kept by the block-list above unless the user removed them from it.
      const d = getAttribute(node, 'dtype')
      if (d && Number(d.i) === DataType.FLOAT) d.i = BigInt(DataType.FLOAT16)
    }
    out.push(node)
  }
  graph.node = out
  for (const t of graph.initializer) {
    if (t.dataType === DataType.FLOAT && !opts.keepTensors?.has(t.name)) {
      toHalf(t)
      result.convertedWeights++
    }
  }
  for (const vi of graph.valueInfo) if (isFloatVi(vi)) setVi(vi, DataType.FLOAT16)
  if (!main || !opts.keepIO) {
    for (const vi of [...graph.input, ...graph.output]) if (isFloatVi(vi)) setVi(vi, DataType.FLOAT16)
    return
  }
  // Main graph with float32 I/O kept: Cast at the boundary.
  const head: NodeProto[] = []
  for (const vi of graph.input) {
    if (!isFloatVi(vi) || graph.initializer.some((t) => t.name === vi.name)) continue
    const c = cast(vi.name, DataType.FLOAT16, vi.name)
    renameUses(graph, vi.name, c.name)
    head.push(c.node)
  }
  const tail: NodeProto[] = []
  for (const vi of graph.output) {
    if (!isFloatVi(vi)) continue
    const producer = graph.node.find((n) => n.output.includes(vi.name))
    if (!producer) continue
    const tmp = names.fresh(`${vi.name}_fp16`)
    producer.output[producer.output.indexOf(vi.name)] = tmp
    renameUses(graph, vi.name, tmp)
    const c = cast(tmp, DataType.FLOAT, vi.name)
    c.node.output[0] = vi.name
    tail.push(c.node)
  }
  graph.node = [...head, ...graph.node, ...tail]
}

/** Point every reader of `from` (this graph and subgraphs that do not shadow it) at `to`. */
function renameUses(graph: GraphProto, from: string, to: string): void {
  for (const n of graph.node) {
    n.input = n.input.map((i) => (i === from ? to : i))
    for (const a of n.attribute) {
      for (const g of a.g ? [a.g] : a.graphs) {
        const shadow = g.input.some((i) => i.name === from) || g.initializer.some((t) => t.name === from) || g.node.some((x) => x.output.includes(from))
        if (shadow) continue
        renameUses(g, from, to)
        for (const o of g.output) if (o.name === from) o.name = to
      }
    }
  }
}
