import {DataType} from '../../../onnx/proto.js'
import {TO_NCHW, permuteData, size} from '../builder.js'
import type {ConstData, GraphBuilder, Val} from '../builder.js'
import type {OpContext, OpConverter} from './context.js'
import {broadcastShapes} from './context.js'

/**
 * Names of the operands of an element-wise op, in a common layout. Channels-first is kept when some
 * operand already is and every other one is rank 4 or a constant (whose data is permuted here);
 * otherwise everything is brought back to the source order.
 */
export function commonLayout(b: GraphBuilder, vals: Val[]): {names: string[]; nchw: boolean} {
  const outRank = Math.max(...vals.map((v) => v.shape?.length ?? -1))
  const anyNchw = vals.some((v) => v.nchw)
  const canNchw = outRank === 4 && vals.every((v) => v.shape && (v.shape.length === 4 || v.value))
  if (anyNchw && canNchw) {
    const names = vals.map((v) => {
      if (v.shape!.length === 4) return b.nchwName(v)
      const shape4 = [...new Array(4 - v.shape!.length).fill(1), ...v.shape!]
      if (size(shape4) === 1) return v.name
      return b.constant(`${v.name}_nchw`, permuteData(v.value!, shape4, TO_NCHW), TO_NCHW.map((p) => shape4[p]!)).name
    })
    return {names, nchw: true}
  }
  return {names: vals.map((v) => b.logicalName(v)), nchw: false}
}

/** Bring integer operands to one integer type: shape arithmetic mixes TF's int32 with ONNX's int64. */
function unifyInts(b: GraphBuilder, vals: Val[]): Val[] {
  const ints = vals.map((v) => v.dtype === DataType.INT32 || v.dtype === DataType.INT64)
  if (!ints.every(Boolean) || vals.every((v) => v.dtype === vals[0]!.dtype)) return vals
  return vals.map((v) => (v.dtype === DataType.INT64 ? v : {...v, nchw: false, name: b.int64Name(v), dtype: DataType.INT64, value: v.value && BigInt64Array.from(v.value as Int32Array, (x) => BigInt(x))}))
}

function foldBinary(fn: (x: number, y: number) => number, a: Val, c: Val, out: number[]): ConstData {
  const res = new (a.value!.constructor as new (n: number) => ConstData)(size(out))
  const av = a.value!
  const cv = c.value!
  const idx = (shape: number[], flat: number): number => {
    let off = 0
    let stride = 1
    let rem = flat
    const outIdx: number[] = []
    for (let d = out.length - 1; d >= 0; d--) {
      outIdx[d] = rem % out[d]!
      rem = Math.floor(rem / out[d]!)
    }
    for (let d = shape.length - 1; d >= 0; d--) {
      const od = out.length - shape.length + d
      off += (shape[d] === 1 ? 0 : outIdx[od]!) * stride
      stride *= shape[d]!
    }
    return off
  }
  const isBig = res instanceof BigInt64Array
  for (let i = 0; i < res.length; i++) {
    const r = fn(Number(av[idx(a.shape!, i)]), Number(cv[idx(c.shape!, i)]))
    ;(res as any)[i] = isBig ? BigInt(Math.trunc(r)) : r
  }
  return res
}

/** Binary element-wise op: `def.onnx`, optionally followed by `def.then` (e.g. Floor for FloorDiv). */
export const binary: OpConverter = (ctx) => {
  const {b, def, hint} = ctx
  const vals = unifyInts(b, ctx.inputs.slice(0, 2))
  const [x, y] = vals as [Val, Val]
  const shape = broadcastShapes(x.shape, y.shape)
  const outDtype = def.bool ? DataType.BOOL : x.dtype
  if (def.fold && x.value && y.value && shape && shape.every((d) => d >= 0) && size(shape) <= 1024 && !def.bool) {
    return [{...b.constant(hint, foldBinary(def.fold, x, y, shape), shape)}]
  }
  const {names, nchw} = commonLayout(b, vals)
  if (def.square) {
    const d = b.op('Sub', names, {}, {hint: `${hint}_diff`, dtype: outDtype})
    return [b.op('Mul', [d.name, d.name], {}, {hint, dtype: outDtype, shape, nchw})]
  }
  const isInt = x.dtype === DataType.INT32 || x.dtype === DataType.INT64
  if (def.floorMod && !isInt) {
    const q = b.op('Div', names, {}, {hint: `${hint}_q`, dtype: outDtype})
    const fl = b.op('Floor', [q.name], {}, {hint: `${hint}_floor`, dtype: outDtype})
    const m = b.op('Mul', [fl.name, names[1]!], {}, {hint: `${hint}_m`, dtype: outDtype})
    return [b.op('Sub', [names[0]!, m.name], {}, {hint, dtype: outDtype, shape, nchw})]
  }
  if (def.then && !isInt) {
    const t = b.op(def.onnx!, names, {}, {hint: `${hint}_${def.onnx}`, dtype: outDtype})
    return [b.op(def.then, [t.name], {}, {hint, dtype: outDtype, shape, nchw})]
  }
  return [b.op(def.onnx!, names, {}, {hint, dtype: outDtype, shape, nchw})]
}

/** Unary element-wise op keeping the input's layout. */
export const unary: OpConverter = (ctx) => {
  const {b, def, hint, attrs} = ctx
  const x = ctx.inputs[0]!
  const y = applyActivation(b, x, def.onnx!, hint, {alpha: def.alphaAttr ? attrs.float(def.alphaAttr, def.alpha ?? 0.2) : def.alpha})
  return [def.bool ? {...y, dtype: DataType.BOOL} : y]
}

/**
 * An activation on `x` keeping its layout. `kind` is an ONNX op name or one of the TF activations
 * that need more than one ONNX op (Relu6, Rsqrt, Square, Swish).
 */
export function applyActivation(b: GraphBuilder, x: Val, kind: string, hint: string, opts: {alpha?: number; alphaVal?: Val} = {}): Val {
  const out = {hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw}
  switch (kind) {
    case 'Relu6':
      return b.op('Clip', [x.name, b.f32(`${hint}_min`, [0], []), b.f32(`${hint}_max`, [6], [])], {}, out)
    case 'Rsqrt': {
      const s = b.op('Sqrt', [x.name], {}, {hint: `${hint}_sqrt`, dtype: x.dtype})
      return b.op('Reciprocal', [s.name], {}, out)
    }
    case 'Square':
      return b.op('Mul', [x.name, x.name], {}, out)
    case 'Swish': {
      const s = b.op('Sigmoid', [x.name], {}, {hint: `${hint}_sigmoid`, dtype: x.dtype})
      return b.op('Mul', [x.name, s.name], {}, out)
    }
    case 'PRelu': {
      const {names} = commonLayout(b, [x, opts.alphaVal!])
      return b.op('PRelu', names, {}, out)
    }
    case 'LeakyRelu':
      return b.op('LeakyRelu', [x.name], {alpha: {float: opts.alpha ?? 0.2}}, out)
    case 'Elu':
    case 'Selu':
    case 'HardSigmoid':
      return b.op(kind, [x.name], opts.alpha === undefined ? {} : {alpha: {float: opts.alpha}}, out)
    default:
      return b.op(kind, [x.name], {}, out)
  }
}

/** TF `Cast` to `DstT`. */
export const cast: OpConverter = (ctx) => {
  const x = ctx.inputs[0]!
  const to = ctx.attrs.dtype('DstT') ?? DataType.FLOAT
  if (x.dtype === to || (to === DataType.INT32 && x.dtype === DataType.INT64 && !x.nchw)) return [{...x}]
  return [ctx.b.op('Cast', [x.name], {to}, {hint: ctx.hint, dtype: to, shape: x.shape, nchw: x.nchw})]
}

/** `ClipByValue(x, lo, hi)`. */
export const clip: OpConverter = (ctx) => {
  const [x, lo, hi] = ctx.inputs as [Val, Val, Val]
  if (lo.shape?.length === 0 && hi.shape?.length === 0) return [ctx.b.op('Clip', [x.name, lo.name, hi.name], {}, {hint: ctx.hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw})]
  const {names, nchw} = commonLayout(ctx.b, [x, lo, hi])
  const m = ctx.b.op('Max', [names[0]!, names[1]!], {}, {hint: `${ctx.hint}_lo`, dtype: x.dtype})
  return [ctx.b.op('Min', [m.name, names[2]!], {}, {hint: ctx.hint, dtype: x.dtype, shape: x.shape, nchw})]
}

/** `AddN`: a sum of any number of tensors. */
export const addN: OpConverter = (ctx) => {
  const {names, nchw} = commonLayout(ctx.b, ctx.inputs)
  const x = ctx.inputs[0]!
  return [ctx.b.op('Sum', names, {}, {hint: ctx.hint, dtype: x.dtype, shape: x.shape, nchw})]
}
