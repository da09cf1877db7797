import {DataType} from '../../../onnx/proto.js'
import {TO_NCHW, constNumbers, size} from '../builder.js'
import type {ConstData, Val} from '../builder.js'
import type {OpConverter} from './context.js'
import {axisOf, unsupportedAttr} from './context.js'

/** Identity-like ops: the value passes through unchanged. */
export const identity: OpConverter = (ctx) => ctx.inputs.map((v) => ({...v}))

function reshapeShape(inShape: number[] | undefined, target: number[]): number[] {
  const known = inShape && inShape.every((d) => d >= 0) ? size(inShape) : -1
  const rest = target.reduce((a, d) => (d >= 0 ? a * d : a), 1)
  return target.map((d) => (d === -1 ? (known >= 0 && rest > 0 ? known / rest : -1) : d))
}

export const reshape: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [x0, s] = ctx.inputs as [Val, Val]
  const x = b.logical(x0)
  if (s.value) {
    const target = constNumbers(s, 'reshape target')
    const shape = reshapeShape(x.shape, target)
    if (x.value && shape.every((d) => d >= 0)) return [b.constant(hint, x.value, shape)]
    return [b.op('Reshape', [x.name, b.i64(`${hint}_shape`, target)], {}, {hint, dtype: x.dtype, shape})]
  }
  const rank = s.shape?.[0]
  return [b.op('Reshape', [x.name, b.int64Name(s)], {}, {hint, dtype: x.dtype, shape: rank !== undefined && rank >= 0 ? new Array(rank).fill(-1) : undefined})]
}

export const squeeze: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const rank = x.shape?.length
  let dims = attrs.ints('squeeze_dims')
  if (!dims.length) dims = attrs.ints('axis')
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  if (!dims.length) {
    if (x.shape!.some((d) => d < 0)) throw unsupportedAttr(ctx, 'squeezing every size-1 dim of a tensor with unknown dims')
    dims = x.shape!.flatMap((d, i) => (d === 1 ? [i] : []))
  }
  const axes = dims.map((d) => axisOf(d, rank))
  const shape = x.shape!.filter((_, i) => !axes.includes(i))
  if (x.value) return [b.constant(hint, x.value, shape)]
  return [b.op('Squeeze', [x.name, b.i64(`${hint}_axes`, axes)], {}, {hint, dtype: x.dtype, shape})]
}

export const expandDims: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [x0, d] = ctx.inputs as [Val, Val]
  const x = b.logical(x0)
  const rank = x.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  const axis = axisOf(constNumbers(d, 'ExpandDims axis')[0]!, rank + 1)
  const shape = [...x.shape!]
  shape.splice(axis, 0, 1)
  if (x.value) return [b.constant(hint, x.value, shape)]
  return [b.op('Unsqueeze', [x.name, b.i64(`${hint}_axes`, [axis])], {}, {hint, dtype: x.dtype, shape})]
}

export const transpose: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [x, p] = ctx.inputs as [Val, Val]
  const perm = constNumbers(p, 'Transpose permutation')
  const shape = x.shape && perm.map((i) => x.shape![i]!)
  // A channels-first input is permuted directly: one Transpose instead of two.
  const phys = x.nchw ? perm.map((i) => TO_NCHW.indexOf(i)) : perm
  return [b.op('Transpose', [x.name], {perm: phys}, {hint, dtype: x.dtype, shape})]
}

/** Pad / PadV2 / MirrorPad. */
export const pad: OpConverter = (ctx) => {
  const {b, hint, def, attrs} = ctx
  const [x, p, c] = ctx.inputs as [Val, Val, Val | undefined]
  const pads = constNumbers(p, 'paddings')
  const rank = pads.length / 2
  let order = [...Array(rank).keys()]
  if (x.nchw) order = TO_NCHW
  const begins = order.map((d) => pads[d * 2]!)
  const ends = order.map((d) => pads[d * 2 + 1]!)
  const shape = x.shape?.map((d, i) => (d < 0 ? -1 : d + pads[i * 2]! + pads[i * 2 + 1]!))
  let mode = 'constant'
  if (def.mirror) {
    const m = attrs.string('mode', 'REFLECT')
    if (m !== 'REFLECT') throw unsupportedAttr(ctx, `MirrorPad mode ${m}`)
    mode = 'reflect'
  }
  const inputs = [x.name, b.i64(`${hint}_pads`, [...begins, ...ends])]
  if (c) inputs.push(c.name)
  return [b.op('Pad', inputs, {mode}, {hint, dtype: x.dtype, shape, nchw: x.nchw})]
}

export const shapeOf: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const x = ctx.inputs[0]!
  if (x.shape && x.shape.every((d) => d >= 0)) return [b.constant(hint, Int32Array.from(x.shape), [x.shape.length])]
  return [b.op('Shape', [b.logicalName(x)], {}, {hint, dtype: DataType.INT64, shape: x.shape ? [x.shape.length] : undefined})]
}

export const tile: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [x, m] = ctx.inputs as [Val, Val]
  const mult = constNumbers(m, 'Tile multiples')
  const phys = x.nchw ? TO_NCHW.map((i) => mult[i]!) : mult
  const shape = x.shape?.map((d, i) => (d < 0 ? -1 : d * mult[i]!))
  return [b.op('Tile', [x.name, b.i64(`${hint}_reps`, phys)], {}, {hint, dtype: x.dtype, shape, nchw: x.nchw})]
}

export const fill: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [d, v] = ctx.inputs as [Val, Val]
  if (d.value && v.value) {
    const dims = constNumbers(d, 'Fill dims')
    const out = new (v.value.constructor as new (n: number) => ConstData)(size(dims))
    out.fill(v.value[0] as never)
    return [b.constant(hint, out, dims)]
  }
  return [b.op('Expand', [v.name, b.int64Name(d)], {}, {hint, dtype: v.dtype, shape: d.shape ? new Array(d.shape[0]!).fill(-1) : undefined})]
}

/** ZerosLike / OnesLike. */
export const constantLike: OpConverter = (ctx) => {
  const {b, hint, def} = ctx
  const x = ctx.inputs[0]!
  const one = x.dtype === DataType.FLOAT ? Float32Array.of(def.fill ?? 0) : x.dtype === DataType.INT64 ? BigInt64Array.of(BigInt(def.fill ?? 0)) : Int32Array.of(def.fill ?? 0)
  const v = b.constant(`${hint}_value`, one, [])
  const s = b.op('Shape', [x.name], {}, {hint: `${hint}_shape`, dtype: DataType.INT64})
  return [b.op('Expand', [v.name, s.name], {}, {hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw})]
}

export const range: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [s, l, d] = ctx.inputs as [Val, Val, Val]
  if (s.value && l.value && d.value) {
    const [start, limit, delta] = [Number(s.value[0]), Number(l.value[0]), Number(d.value[0])]
    const vals: number[] = []
    for (let v = start; delta > 0 ? v < limit : v > limit; v += delta) vals.push(v)
    return [b.constant(hint, s.dtype === DataType.FLOAT ? Float32Array.from(vals) : Int32Array.from(vals), [vals.length])]
  }
  return [b.op('Range', [s.name, l.name, d.name], {}, {hint, dtype: s.dtype, shape: [-1]})]
}
