import {DataType} from '../../../onnx/proto.js'
import {TO_NCHW} from '../builder.js'
import type {Val} from '../builder.js'
import type {OpConverter} from './context.js'
import {axisOf, unsupportedAttr} from './context.js'

/**
 * Mean / Sum / Max / Min / Prod / All / Any over constant axes. A channels-first input is reduced in
 * place when the dims that remain keep their source order (global pooling: N,C stays N,C).
 */
export const reduce: OpConverter = (ctx) => {
  const {b, hint, def, attrs} = ctx
  const [x, axesV] = ctx.inputs as [Val, Val]
  if (!axesV.value) throw unsupportedAttr(ctx, 'run-time reduction axes')
  const keep = attrs.bool('keep_dims', false)
  const rank = x.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  const axes = [...new Set(Array.from(axesV.value as ArrayLike<number | bigint>, (a) => axisOf(Number(a), rank)))].sort()
  const shape = keep ? x.shape!.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape!.filter((_, i) => !axes.includes(i))
  let src = x.name
  let physAxes = axes
  let nchw = false
  if (x.nchw) {
    const phys = axes.map((a) => TO_NCHW.indexOf(a)).sort()
    const remaining = TO_NCHW.filter((l) => !axes.includes(l))
    const ordered = remaining.every((l, i) => i === 0 || l > remaining[i - 1]!)
    if (keep || ordered) {
      physAxes = phys
      nchw = keep
    } else {
      src = b.logicalName(x)
    }
  }
  let input = src
  const boolIn = x.dtype === DataType.BOOL
  if (boolIn) input = b.op('Cast', [src], {to: DataType.INT32}, {hint: `${hint}_int`, dtype: DataType.INT32}).name
  const dtype = boolIn ? DataType.INT32 : x.dtype
  const axesAsInput = def.onnx === 'ReduceSum' || b.opset >= 18
  const y = axesAsInput
    ? b.op(def.onnx!, [input, b.i64(`${hint}_axes`, physAxes)], {keepdims: keep ? 1 : 0}, {hint: boolIn ? `${hint}_r` : hint, dtype, shape, nchw})
    : b.op(def.onnx!, [input], {axes: physAxes, keepdims: keep ? 1 : 0}, {hint: boolIn ? `${hint}_r` : hint, dtype, shape, nchw})
  if (!boolIn) return [y]
  return [b.op('Cast', [y.name], {to: DataType.BOOL}, {hint, dtype: DataType.BOOL, shape, nchw})]
}
