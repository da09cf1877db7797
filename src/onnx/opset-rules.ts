import {makeAttribute, makeNode} from './build.js'
import {toFloat16Array} from './float16.js'
import {attrFloat, attrInt, attrInts, attrString, getAttribute} from './graph.js'
import type {ScopeFacts} from './infer.js'
import {DataType, NodeProtoSchema, create} from './proto.js'
import type {NodeProto} from './proto.js'
import {dtypeName, makeTensor, tensorToFloat32} from './tensor.js'
import type {TypedArray} from './tensor.js'

/** A node that cannot be carried across a version change without guessing: the upgrade is refused. */
export class Refusal extends Error {}

export interface RewriteContext {
  facts: ScopeFacts
  /** A tensor name not used anywhere in the model. */
  unique(base: string): string
}

/** Rewrites `node`, valid just before `version`, into nodes valid at `version`. */
export type Adapter = (node: NodeProto, ctx: RewriteContext) => NodeProto[]

function rebuild(node: NodeProto, changes: {opType?: string; input?: string[]; drop?: string[]; set?: Record<string, Parameters<typeof makeAttribute>[1]>}): NodeProto {
  const drop = new Set([...(changes.drop ?? []), ...Object.keys(changes.set ?? {})])
  const attribute = node.attribute.filter((a) => !drop.has(a.name))
  for (const [k, v] of Object.entries(changes.set ?? {})) attribute.push(makeAttribute(k, v))
  return create(NodeProtoSchema, {...node, opType: changes.opType ?? node.opType, input: changes.input ?? [...node.input], attribute})
}

function constant(ctx: RewriteContext, node: NodeProto, role: string, dataType: number, dims: number[], data: TypedArray): {name: string; node: NodeProto} {
  const name = ctx.unique(`${node.name || node.opType}_${role}`)
  return {name, node: makeNode('Constant', [], [name], {value: makeTensor(name, dataType, dims, data)}, {name: `${name}_const`})}
}

function int64s(ctx: RewriteContext, node: NodeProto, role: string, values: number[]) {
  return constant(ctx, node, role, DataType.INT64, [values.length], BigInt64Array.from(values.map(BigInt)))
}

/** A scalar of the element type of `like` (which must be statically known). */
function scalarLike(ctx: RewriteContext, node: NodeProto, role: string, like: string, value: number) {
  const t = ctx.facts.get(like)?.elemType
  const arrays: Record<number, () => TypedArray> = {
    [DataType.FLOAT]: () => Float32Array.of(value),
    [DataType.DOUBLE]: () => Float64Array.of(value),
    [DataType.FLOAT16]: () => toFloat16Array([value]),
    [DataType.INT32]: () => Int32Array.of(value),
    [DataType.INT64]: () => BigInt64Array.of(BigInt(Math.trunc(value))),
    [DataType.INT8]: () => Int8Array.of(value),
    [DataType.UINT8]: () => Uint8Array.of(value),
  }
  const make = t === undefined ? undefined : arrays[t]
  if (!make) {
    throw new Refusal(
      t === undefined
        ? `cannot tell the element type of '${like}' to build its ${role} input (declare it in value_info)`
        : `${role} of element type ${dtypeName(t)} is not supported`,
    )
  }
  return constant(ctx, node, role, t!, [], make())
}

/** `attr` (INTS) moves to input `index` as an int64 tensor; absent attribute leaves the input absent. */
function intsToInput(attr: string, index: number, required = false): Adapter {
  return (node, ctx) => {
    const values = attrInts(node, attr)
    if (values === undefined) {
      if (required) throw new Refusal(`has no '${attr}' attribute`)
      return [rebuild(node, {drop: [attr]})]
    }
    const c = int64s(ctx, node, attr, values)
    const input = [...node.input]
    while (input.length < index) input.push('')
    input[index] = c.name
    return [c.node, rebuild(node, {input, drop: [attr]})]
  }
}

const reduceAxes = intsToInput('axes', 1)

/** Softmax-like ops: before 13 they flatten to 2-D at `axis`; from 13 they work along `axis` only. */
const softmax13: Adapter = (node, ctx) => {
  const axis = attrInt(node, 'axis', 1)
  const rank = ctx.facts.rank(node.input[0]!)
  if (axis === -1 || (rank !== undefined && (axis === rank - 1 || axis + rank === rank - 1))) return [rebuild(node, {set: {axis: -1}})]
  // Rank unknown or axis not last: reproduce the old semantics exactly, whatever the rank.
  const flat = ctx.unique(`${node.output[0]}_flat`)
  const inner = ctx.unique(`${node.output[0]}_2d`)
  const shape = ctx.unique(`${node.output[0]}_shape`)
  const base = node.name || node.output[0]
  const op = rebuild(node, {input: [flat], set: {axis: -1}})
  op.output = [inner]
  return [
    makeNode('Flatten', [node.input[0]!], [flat], {axis}, {name: `${base}_flatten`}),
    op,
    makeNode('Shape', [node.input[0]!], [shape], {}, {name: `${base}_shape`}),
    makeNode('Reshape', [inner, shape], [node.output[0]!], {}, {name: `${base}_reshape`}),
  ]
}

/** Upsample (deprecated in 10) becomes Resize-10, which has the same semantics. */
const upsampleToResize: Adapter = (node, ctx) => {
  const mode = attrString(node, 'mode') ?? 'nearest'
  if (mode !== 'nearest' && mode !== 'linear') throw new Refusal(`mode '${mode}' has no Resize equivalent`)
  const scalesAttr = getAttribute(node, 'scales')
  if (scalesAttr && scalesAttr.floats.length) {
    const c = constant(ctx, node, 'scales', DataType.FLOAT, [scalesAttr.floats.length], Float32Array.from(scalesAttr.floats))
    return [c.node, rebuild(node, {opType: 'Resize', input: [node.input[0]!, c.name], drop: ['scales']})]
  }
  return [rebuild(node, {opType: 'Resize'})]
}

/**
 * Resize-10 → 11: roi becomes an input and the coordinate mapping is explicit. Resize-10 maps
 * asymmetrically and, in nearest mode, rounds down when upsampling and up when downsampling, so the
 * rounding can only be carried over when the scales are known constants all on one side of 1.
 */
const resize11: Adapter = (node, ctx) => {
  const mode = attrString(node, 'mode') ?? 'nearest'
  const set: Record<string, string> = {coordinate_transformation_mode: 'asymmetric'}
  if (mode === 'nearest') {
    const scales = ctx.facts.constant(node.input[1] ?? '')
    if (!scales) throw new Refusal('nearest mode with scales that are not a constant')
    const s = tensorToFloat32(scales)
    if (s.every((v) => v >= 1)) set.nearest_mode = 'floor'
    else if (s.every((v) => v <= 1)) set.nearest_mode = 'ceil'
    else throw new Refusal('nearest mode that both up- and downsamples')
  }
  const roi = constant(ctx, node, 'roi', DataType.FLOAT, [0], new Float32Array(0))
  return [roi.node, rebuild(node, {input: [node.input[0]!, roi.name, node.input[1]!], set})]
}

/** Clip-6 → 11: min/max attributes become inputs of the input's element type. */
const clip11: Adapter = (node, ctx) => {
  const out: NodeProto[] = []
  const input = [node.input[0]!]
  for (const [attr, index] of [['min', 1], ['max', 2]] as const) {
    if (!getAttribute(node, attr)) continue
    const c = scalarLike(ctx, node, attr, node.input[0]!, attrFloat(node, attr, 0))
    out.push(c.node)
    while (input.length < index) input.push('')
    input[index] = c.name
  }
  return [...out, rebuild(node, {input, drop: ['min', 'max']})]
}

/** Pad-2 → 11: pads and value become inputs. */
const pad11: Adapter = (node, ctx) => {
  const pads = attrInts(node, 'pads')
  if (!pads) throw new Refusal("has no 'pads' attribute")
  const p = int64s(ctx, node, 'pads', pads)
  const out = [p.node]
  const input = [node.input[0]!, p.name]
  const value = attrFloat(node, 'value', 0)
  if (value !== 0) {
    const v = scalarLike(ctx, node, 'constant_value', node.input[0]!, value)
    out.push(v.node)
    input.push(v.name)
  }
  return [...out, rebuild(node, {input, drop: ['pads', 'value']})]
}

/** Slice-1 → 10: starts/ends/axes become int64 inputs. */
const slice10: Adapter = (node, ctx) => {
  const starts = attrInts(node, 'starts')
  const ends = attrInts(node, 'ends')
  if (!starts || !ends) throw new Refusal('has no starts/ends')
  const s = int64s(ctx, node, 'starts', starts)
  const e = int64s(ctx, node, 'ends', ends)
  const out = [s.node, e.node]
  const input = [node.input[0]!, s.name, e.name]
  const axes = attrInts(node, 'axes')
  if (axes) {
    const a = int64s(ctx, node, 'axes', axes)
    out.push(a.node)
    input.push(a.name)
  }
  return [...out, rebuild(node, {input, drop: ['starts', 'ends', 'axes']})]
}

/** Split-18 needs num_outputs when no split sizes are given. */
const split18: Adapter = (node) => (node.input[1] ? [node] : [rebuild(node, {set: {num_outputs: node.output.length}})])

/** TopK-1 → 10: the scalar `k` attribute becomes a 1-element int64 input. */
const topk10: Adapter = (node, ctx) => {
  if (!getAttribute(node, 'k')) throw new Refusal("has no 'k' attribute")
  const k = int64s(ctx, node, 'k', [attrInt(node, 'k', 0)])
  return [k.node, rebuild(node, {input: [node.input[0]!, k.name], drop: ['k']})]
}

const dropout10: Adapter = (node) => {
  if (node.output[1]) throw new Refusal('its mask output changes type from the data type to bool')
  return [node]
}

const dropout12: Adapter = (node, ctx) => {
  if (!getAttribute(node, 'ratio')) return [node]
  const r = constant(ctx, node, 'ratio', DataType.FLOAT, [], Float32Array.of(attrFloat(node, 'ratio', 0.5)))
  return [r.node, rebuild(node, {input: [node.input[0]!, r.name], drop: ['ratio']})]
}

const batchNorm9: Adapter = (node) => {
  if (getAttribute(node, 'spatial') && attrInt(node, 'spatial', 1) !== 1) throw new Refusal('spatial=0 has no equivalent from opset 9')
  return [rebuild(node, {drop: ['spatial']})]
}

const batchNorm14: Adapter = (node) => {
  if (node.output.slice(1).some(Boolean)) throw new Refusal('training-mode outputs (mean/var) are not carried over')
  return [node]
}

const refuse =
  (why: string): Adapter =>
  () => {
    throw new Refusal(why)
  }

/**
 * Breaking changes per op, by the opset version that introduced them. Versions not listed for a
 * known op only widened types or added attributes whose defaults keep the old behaviour.
 */
export const BREAKING: Record<string, Record<number, Adapter>> = {
  Squeeze: {13: intsToInput('axes', 1)},
  Unsqueeze: {13: intsToInput('axes', 1, true)},
  ReduceSum: {13: reduceAxes},
  ...Object.fromEntries(
    ['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare'].map((op) => [op, {18: reduceAxes}]),
  ),
  Split: {13: intsToInput('split', 1), 18: split18},
  Clip: {11: clip11},
  Pad: {11: pad11},
  Slice: {10: slice10},
  TopK: {10: topk10},
  Softmax: {13: softmax13},
  LogSoftmax: {13: softmax13},
  Hardmax: {13: softmax13},
  Upsample: {10: upsampleToResize},
  Resize: {11: resize11},
  Dropout: {10: dropout10, 12: dropout12},
  BatchNormalization: {9: batchNorm9, 14: batchNorm14},
  Scatter: {11: (node) => [rebuild(node, {opType: 'ScatterElements'})]},
  Scan: {9: refuse('Scan-8 iterates over a batch axis that Scan-9 removed')},
  RoiAlign: {16: (node) => [getAttribute(node, 'coordinate_transformation_mode') ? node : rebuild(node, {set: {coordinate_transformation_mode: 'output_half_pixel'}})]},
  GroupNormalization: {21: refuse('scale and bias change from per-group to per-channel in opset 21')},
}

/** Ops (default domain) known to keep their behaviour across every version from 7 to MAX_OPSET, except as listed in BREAKING. */
const COMPATIBLE = (
  'Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BitShift Cast CastLike Ceil Celu Compress Concat ' +
  'Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Det Div DynamicQuantizeLinear ' +
  'Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool ' +
  'GlobalMaxPool Greater GreaterOrEqual HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization ' +
  'LeakyRelu Less LessOrEqual Log Loop LpNormalization LpPool MatMul MatMulInteger Max MaxPool MaxRoiPool MaxUnpool Mean ' +
  'MeanVarianceNormalization Min Mish Mod Mul Multinomial Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pow QLinearConv QLinearMatMul ' +
  'QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal Relu Reshape ReverseSequence Round ' +
  'ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Softplus Softsign SpaceToDepth Sqrt Sub Sum Tan Tanh ' +
  'ThresholdedRelu Tile Transpose Trilu Unique Where Xor'
).split(' ')

export const KNOWN_OPS = new Set([...COMPATIBLE, ...Object.keys(BREAKING)])

