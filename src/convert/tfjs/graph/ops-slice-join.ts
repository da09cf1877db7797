import {DataType} from '../../../onnx/proto.js'
import {TO_NCHW, constNumbers} from '../builder.js'
import type {ConstData, Val} from '../builder.js'
import type {OpConverter} from './context.js'
import {axisOf, unsupportedAttr} from './context.js'

const OPEN = 2 ** 62

function concatConsts(vals: Val[]): ConstData {
  const big = vals.some((v) => v.value instanceof BigInt64Array)
  const flat = vals.flatMap((v) => Array.from(v.value as ArrayLike<number | bigint>, (x) => Number(x)))
  if (big) return BigInt64Array.from(flat, (x) => BigInt(x))
  return vals[0]!.value instanceof Float32Array ? Float32Array.from(flat) : Int32Array.from(flat)
}

/** Bring a mix of int32 and int64 values to int64 when they disagree. */
function sameIntType(ctx: Parameters<OpConverter>[0], vals: Val[]): {names: string[]; dtype: number} {
  const mixed = vals.some((v) => v.dtype === DataType.INT64) && vals.some((v) => v.dtype === DataType.INT32)
  if (!mixed) return {names: vals.map((v) => ctx.b.logicalName(v)), dtype: vals[0]!.dtype}
  return {names: vals.map((v) => ctx.b.int64Name(v)), dtype: DataType.INT64}
}

export const concat: OpConverter = (ctx) => {
  const {b, hint, def} = ctx
  const axisV = def.axisFirst ? ctx.inputs[0]! : ctx.inputs.at(-1)!
  const vals = def.axisFirst ? ctx.inputs.slice(1) : ctx.inputs.slice(0, -1)
  const rank = vals.find((v) => v.shape)?.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'inputs of unknown rank')
  const axis = axisOf(constNumbers(axisV, 'concat axis')[0]!, rank)
  const known = vals.every((v) => v.shape)
  const shape = known ? vals[0]!.shape!.map((d, i) => (i === axis ? (vals.every((v) => v.shape![i]! >= 0) ? vals.reduce((a, v) => a + v.shape![i]!, 0) : -1) : d)) : undefined
  if (rank === 1 && vals.every((v) => v.value)) return [b.constant(hint, concatConsts(vals), shape!)]
  if (rank === 4 && vals.some((v) => v.nchw) && vals.every((v) => v.shape?.length === 4)) {
    return [b.op('Concat', vals.map((v) => b.nchwName(v)), {axis: TO_NCHW.indexOf(axis)}, {hint, dtype: vals[0]!.dtype, shape, nchw: true})]
  }
  const {names, dtype} = sameIntType(ctx, vals)
  return [b.op('Concat', names, {axis}, {hint, dtype, shape})]
}

export const pack: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const vals = ctx.inputs
  const rank = vals[0]!.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'inputs of unknown rank')
  const axis = axisOf(attrs.int('axis', 0), rank + 1)
  const shape = [...vals[0]!.shape!]
  shape.splice(axis, 0, vals.length)
  if (axis === 0 && vals.every((v) => v.value)) return [b.constant(hint, concatConsts(vals), shape)]
  const {names, dtype} = sameIntType(ctx, vals)
  const axes = b.i64(`${hint}_axes`, [axis])
  const parts = names.map((n, i) => b.op('Unsqueeze', [n, axes], {}, {hint: `${hint}_${i}`, dtype}).name)
  return [b.op('Concat', parts, {axis}, {hint, dtype, shape})]
}

export const unpack: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const rank = x.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  const axis = axisOf(attrs.int('axis', 0), rank)
  const num = attrs.int('num', x.shape![axis]!)
  const shape = x.shape!.filter((_, i) => i !== axis)
  const parts = b.opMulti('Split', [x.name, b.i64(`${hint}_split`, new Array(num).fill(1))], {axis}, Array.from({length: num}, (_, i) => ({hint: `${hint}_part${i}`, dtype: x.dtype})))
  const axes = b.i64(`${hint}_axes`, [axis])
  return parts.map((p, i) => b.op('Squeeze', [p.name, axes], {}, {hint: i === 0 ? hint : `${hint}:${i}`, dtype: x.dtype, shape}))
}

/** Split (axis, value) and SplitV (value, sizes, axis) into equal or given parts. */
export const split: OpConverter = (ctx) => {
  const {b, hint, attrs, def} = ctx
  const [xv, sizesV, axisV] = def.splitV ? (ctx.inputs as [Val, Val, Val]) : ([ctx.inputs[1]!, undefined, ctx.inputs[0]!] as [Val, Val | undefined, Val])
  const x = b.logical(xv)
  const rank = x.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  const axis = axisOf(constNumbers(axisV, 'split axis')[0]!, rank)
  const dim = x.shape![axis]!
  let sizes: number[]
  if (sizesV) {
    sizes = constNumbers(sizesV, 'split sizes')
    const known = sizes.filter((s) => s >= 0).reduce((a, s) => a + s, 0)
    if (sizes.includes(-1)) {
      if (dim < 0) throw unsupportedAttr(ctx, 'an inferred split size along an unknown dim')
      sizes = sizes.map((s) => (s < 0 ? dim - known : s))
    }
  } else {
    const n = attrs.int('num_split', 1)
    if (dim < 0) throw unsupportedAttr(ctx, 'an even split along an unknown dim')
    sizes = new Array(n).fill(dim / n)
  }
  const outs = sizes.map((s, i) => ({hint: i === 0 ? hint : `${hint}:${i}`, dtype: x.dtype, shape: x.shape!.map((d, j) => (j === axis ? s : d))}))
  return b.opMulti('Split', [x.name, b.i64(`${hint}_sizes`, sizes)], {axis}, outs)
}

/** Gather rows of a constant (small) tensor at conversion time. */
function foldStridedSlice(data: ConstData, shape: number[], specs: {begin: number; step: number; count: number}[]): ConstData {
  const outCount = specs.reduce((a, s) => a * s.count, 1)
  const out = new (data.constructor as new (n: number) => ConstData)(outCount)
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1))
  const idx = new Array(shape.length).fill(0)
  for (let o = 0; o < outCount; o++) {
    let src = 0
    for (let d = 0; d < shape.length; d++) src += (specs[d]!.begin + idx[d] * specs[d]!.step) * strides[d]!
    ;(out as any)[o] = (data as any)[src]
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < specs[d]!.count) break
      idx[d] = 0
    }
  }
  return out
}

/** TF StridedSlice with all five masks, lowered to Slice + Squeeze + Unsqueeze. */
export const stridedSlice: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const [x0, bv, ev, sv] = ctx.inputs as [Val, Val, Val, Val]
  const x = b.logical(x0)
  const rank = x.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'an input of unknown rank')
  const begin = constNumbers(bv, 'StridedSlice begin')
  const end = constNumbers(ev, 'StridedSlice end')
  const strides = constNumbers(sv, 'StridedSlice strides')
  const [bm, em, elm, nam, sam] = ['begin_mask', 'end_mask', 'ellipsis_mask', 'new_axis_mask', 'shrink_axis_mask'].map((n) => attrs.int(n, 0)) as [number, number, number, number, number]
  const n = begin.length
  const consuming = [...Array(n).keys()].filter((i) => !(elm & (1 << i)) && !(nam & (1 << i))).length
  const dims: {begin: number; end: number; step: number; shrink: boolean}[] = []
  const tokens: (number | 'new')[] = []
  let d = 0
  const full = (): void => {
    dims.push({begin: 0, end: OPEN, step: 1, shrink: false})
    tokens.push(d++)
  }
  let sawEllipsis = false
  for (let i = 0; i < n; i++) {
    const bit = 1 << i
    if (elm & bit) {
      sawEllipsis = true
      for (let k = 0; k < rank - consuming; k++) full()
    } else if (nam & bit) {
      tokens.push('new')
    } else if (sam & bit) {
      dims.push({begin: begin[i]!, end: begin[i] === -1 ? OPEN : begin[i]! + 1, step: 1, shrink: true})
      d++
    } else {
      const step = strides[i]!
      dims.push({begin: bm & bit ? (step > 0 ? 0 : OPEN) : begin[i]!, end: em & bit ? (step > 0 ? OPEN : -OPEN) : end[i]!, step, shrink: false})
      tokens.push(d++)
    }
  }
  if (!sawEllipsis) while (d < rank) full()
  const resolved = dims.map((s, i) => {
    const dim = x.shape![i]!
    if (dim < 0) return undefined
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + dim : v, lo), hi)
    const start = s.step > 0 ? clamp(s.begin >= OPEN ? dim : s.begin, 0, dim) : clamp(s.begin >= OPEN ? dim - 1 : s.begin, -1, dim - 1)
    const stop = s.step > 0 ? clamp(s.end >= OPEN ? dim : s.end, 0, dim) : s.end <= -OPEN ? -1 : clamp(s.end, -1, dim - 1)
    const count = Math.max(0, Math.ceil((stop - start) / s.step))
    return {begin: start, step: s.step, count}
  })
  const outShape = tokens.map((t) => (t === 'new' ? 1 : (resolved[t]?.count ?? -1)))
  if (x.value && resolved.every(Boolean)) return [b.constant(hint, foldStridedSlice(x.value, x.shape!, resolved as {begin: number; step: number; count: number}[]), outShape)]
  const axes = dims.map((_, i) => i)
  let cur = b.op('Slice', [x.name, b.i64(`${hint}_begin`, dims.map((s) => s.begin)), b.i64(`${hint}_end`, dims.map((s) => s.end)), b.i64(`${hint}_axes`, axes), b.i64(`${hint}_steps`, dims.map((s) => s.step))], {}, {hint: `${hint}_slice`, dtype: x.dtype})
  const shrink = dims.flatMap((s, i) => (s.shrink ? [i] : []))
  if (shrink.length) cur = b.op('Squeeze', [cur.name, b.i64(`${hint}_shrink`, shrink)], {}, {hint: `${hint}_squeeze`, dtype: x.dtype})
  const newAxes = tokens.flatMap((t, i) => (t === 'new' ? [i] : []))
  if (newAxes.length) cur = b.op('Unsqueeze', [cur.name, b.i64(`${hint}_new`, newAxes)], {}, {hint: `${hint}_unsqueeze`, dtype: x.dtype})
  return [b.op('Identity', [cur.name], {}, {hint, dtype: x.dtype, shape: outShape})]
}

/** TF Slice(x, begin, size); size -1 means "to the end". */
export const slice: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const [x0, bv, sv] = ctx.inputs as [Val, Val, Val]
  const x = b.logical(x0)
  const begin = constNumbers(bv, 'Slice begin')
  const sizes = constNumbers(sv, 'Slice size')
  const shape = sizes.map((s, i) => (s >= 0 ? s : x.shape && x.shape[i]! >= 0 ? x.shape[i]! - begin[i]! : -1))
  const ends = sizes.map((s, i) => (s < 0 ? OPEN : begin[i]! + s))
  return [b.op('Slice', [x.name, b.i64(`${hint}_begin`, begin), b.i64(`${hint}_end`, ends), b.i64(`${hint}_axes`, begin.map((_, i) => i))], {}, {hint, dtype: x.dtype, shape})]
}

/** GatherV2(params, indices, axis) and Gather(params, indices). */
export const gather: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const [p0, idx, axisV] = ctx.inputs as [Val, Val, Val | undefined]
  if (attrs.int('batch_dims', 0) !== 0) throw unsupportedAttr(ctx, 'batch_dims')
  const p = b.logical(p0)
  const rank = p.shape?.length
  if (rank === undefined) throw unsupportedAttr(ctx, 'params of unknown rank')
  const axis = axisOf(axisV ? constNumbers(axisV, 'Gather axis')[0]! : 0, rank)
  const shape = idx.shape && [...p.shape!.slice(0, axis), ...idx.shape, ...p.shape!.slice(axis + 1)]
  if (p.value && idx.value && rank === 1 && shape) {
    const ids = constNumbers(idx, 'indices')
    const out = new (p.value.constructor as new (n: number) => ConstData)(ids.length)
    ids.forEach((id, i) => ((out as any)[i] = (p.value as any)[id < 0 ? id + p.shape![0]! : id]))
    return [b.constant(hint, out, shape)]
  }
  return [b.op('Gather', [p.name, b.logicalName(idx)], {axis}, {hint, dtype: p.dtype, shape})]
}

