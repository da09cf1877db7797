import {DataType} from '../../../onnx/proto.js'
import {permuteData} from '../builder.js'
import type {Val} from '../builder.js'
import {applyFused} from './ops-convolution.js'
import type {OpConverter} from './context.js'
import {axisOf, broadcastShapes, unsupportedAttr} from './context.js'

function swapLast(rank: number): number[] {
  const p = [...Array(rank).keys()]
  ;[p[rank - 2], p[rank - 1]] = [p[rank - 1]!, p[rank - 2]!]
  return p
}

/** MatMul, _FusedMatMul, BatchMatMul(V2/V3): transposes of constants are done at conversion time. */
export const matMul: OpConverter = (ctx) => {
  const {b, attrs, hint, def} = ctx
  const [a0, c0] = ctx.inputs as [Val, Val]
  const ta = attrs.bool(def.batch ? 'adj_x' : 'transpose_a')
  const tb = attrs.bool(def.batch ? 'adj_y' : 'transpose_b')
  const prep = (v: Val, t: boolean, tag: string): Val => {
    const l = b.logical(v)
    if (!t) return l
    const rank = l.shape?.length
    if (rank === undefined) throw unsupportedAttr(ctx, 'a transposed operand of unknown rank')
    const perm = swapLast(rank)
    const shape = perm.map((p) => l.shape![p]!)
    if (l.value) return b.constant(`${l.name}_T`, permuteData(l.value, l.shape!, perm), shape)
    return b.op('Transpose', [l.name], {perm}, {hint: `${hint}_${tag}T`, dtype: l.dtype, shape})
  }
  const a = prep(a0, ta, 'a')
  const c = prep(c0, tb, 'b')
  let shape: number[] | undefined
  if (a.shape && c.shape) {
    const batch = broadcastShapes(a.shape.slice(0, -2), c.shape.slice(0, -2)) ?? []
    shape = [...batch, a.shape.at(-2)!, c.shape.at(-1)!]
  }
  const fused = def.fused ? attrs.strings('fused_ops') : []
  const y = b.op('MatMul', [a.name, c.name], {}, {hint: fused.length ? `${hint}_matmul` : hint, dtype: a.dtype, shape})
  return [applyFused(ctx, y, fused, ctx.inputs.slice(2))]
}

/** Softmax / LogSoftmax over the last axis. */
export const softmax: OpConverter = (ctx) => {
  const x = ctx.inputs[0]!
  const axis = x.nchw ? 1 : -1
  return [ctx.b.op(ctx.def.onnx!, [x.name], {axis}, {hint: ctx.hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw})]
}

/** ArgMax / ArgMin along a constant axis; TF returns int64 by default (output_type). */
export const argReduce: OpConverter = (ctx) => {
  const {b, hint, def, attrs} = ctx
  const [x0, axisV] = ctx.inputs as [Val, Val]
  if (!axisV.value) throw unsupportedAttr(ctx, 'a run-time axis')
  const x = b.logical(x0)
  const rank = x.shape?.length ?? 0
  const axis = axisOf(Number(axisV.value[0]), rank)
  const shape = x.shape?.filter((_, i) => i !== axis)
  const y = b.op(def.onnx!, [x.name], {axis, keepdims: 0}, {hint: `${hint}_i64`, dtype: DataType.INT64, shape})
  const to = attrs.dtype('output_type') ?? DataType.INT64
  if (to === DataType.INT64) return [{...y}]
  return [b.op('Cast', [y.name], {to}, {hint, dtype: to, shape})]
}
