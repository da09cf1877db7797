import {DataType} from '../../../onnx/proto.js'
import {TO_NCHW, size} from '../builder.js'
import type {GraphBuilder, Val} from '../builder.js'
import {applyActivation, commonLayout} from '../graph/ops-elementwise.js'
import type {LayerContext, LayerConverter} from './context.js'
import {layerError} from './context.js'

/**
 * A Keras activation by name on `x`, keeping its layout. Softmax runs on the last logical axis.
 */
export function activation(b: GraphBuilder, x: Val, name: string | undefined, hint: string, err: (what: string) => Error): Val {
  switch (name ?? 'linear') {
    case 'linear':
      return x
    case 'relu':
      return applyActivation(b, x, 'Relu', hint)
    case 'relu6':
      return applyActivation(b, x, 'Relu6', hint)
    case 'sigmoid':
      return applyActivation(b, x, 'Sigmoid', hint)
    case 'hard_sigmoid':
    case 'hardSigmoid':
      return b.op('HardSigmoid', [x.name], {alpha: {float: 0.2}, beta: {float: 0.5}}, {hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw})
    case 'tanh':
      return applyActivation(b, x, 'Tanh', hint)
    case 'softplus':
      return applyActivation(b, x, 'Softplus', hint)
    case 'softsign':
      return applyActivation(b, x, 'Softsign', hint)
    case 'elu':
      return applyActivation(b, x, 'Elu', hint, {alpha: 1})
    case 'selu':
      return applyActivation(b, x, 'Selu', hint)
    case 'swish':
      return applyActivation(b, x, 'Swish', hint)
    case 'exponential':
      return applyActivation(b, x, 'Exp', hint)
    case 'softmax':
      return b.op('Softmax', [x.name], {axis: x.nchw ? 1 : -1}, {hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw})
    default:
      throw err(`activation '${name}'`)
  }
}

export function withActivation(ctx: LayerContext, y: Val): Val {
  return activation(ctx.b, y, ctx.cfg.activation, ctx.hint, (w) => layerError(ctx, w))
}

export const inputLayer: LayerConverter = (ctx) => ctx.inputs

export const identityLayer: LayerConverter = (ctx) => ctx.inputs

export const activationLayer: LayerConverter = (ctx) => [activation(ctx.b, ctx.inputs[0]!, ctx.cfg.activation, ctx.hint, (w) => layerError(ctx, w))]

/** ReLU (max_value, negative_slope, threshold), LeakyReLU, ELU, Softmax, ThresholdedReLU, PReLU. */
export const activationClassLayer: LayerConverter = (ctx) => {
  const {b, cfg, hint} = ctx
  const x = ctx.inputs[0]!
  const out = {hint, dtype: x.dtype, shape: x.shape, nchw: x.nchw}
  switch (ctx.layer.class_name) {
    case 'ReLU': {
      const slope = cfg.negative_slope ?? 0
      const threshold = cfg.threshold ?? 0
      if (slope !== 0 || threshold !== 0) throw layerError(ctx, 'negative_slope or threshold')
      if (cfg.max_value === null || cfg.max_value === undefined) return [b.op('Relu', [x.name], {}, out)]
      return [b.op('Clip', [x.name, b.f32(`${hint}_min`, [0], []), b.f32(`${hint}_max`, [cfg.max_value], [])], {}, out)]
    }
    case 'LeakyReLU':
      return [b.op('LeakyRelu', [x.name], {alpha: {float: cfg.alpha ?? 0.3}}, out)]
    case 'ELU':
      return [b.op('Elu', [x.name], {alpha: {float: cfg.alpha ?? 1}}, out)]
    case 'ThresholdedReLU':
      return [b.op('ThresholdedRelu', [x.name], {alpha: {float: cfg.theta ?? 1}}, out)]
    case 'Softmax': {
      const rank = x.shape?.length ?? 0
      const axis = cfg.axis ?? -1
      const logical = axis < 0 ? axis + rank : axis
      if (x.nchw) return [b.op('Softmax', [x.name], {axis: TO_NCHW.indexOf(logical)}, out)]
      return [b.op('Softmax', [x.name], {axis: logical}, out)]
    }
    case 'PReLU': {
      const w = ctx.need('alpha')
      const alpha = b.constant(`${hint}_alpha`, w.data as Float32Array, w.shape)
      return [applyActivation(b, x, 'PRelu', hint, {alphaVal: alpha})]
    }
    default:
      throw layerError(ctx, 'this activation layer')
  }
}

/** Dense: x·kernel + bias on the last axis, then the activation. */
export const dense: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const k = ctx.need('kernel')
  const kernel = b.constant(`${hint}_kernel`, k.data as Float32Array, k.shape)
  const shape = x.shape && [...x.shape.slice(0, -1), k.shape[1]!]
  const useBias = ctx.cfg.use_bias !== false
  let y = b.op('MatMul', [x.name, kernel.name], {}, {hint: `${hint}_matmul`, dtype: DataType.FLOAT, shape})
  if (useBias) {
    const bias = ctx.need('bias')
    y = b.op('Add', [y.name, b.constant(`${hint}_bias`, bias.data as Float32Array, bias.shape).name], {}, {hint: `${hint}_bias`, dtype: DataType.FLOAT, shape})
  }
  return [withActivation(ctx, y)]
}

/** Add / Multiply / Average / Maximum / Minimum. */
export const merge: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const ins = ctx.inputs
  const {names, nchw} = commonLayout(b, ins)
  const shape = ins[0]!.shape
  const dtype = ins[0]!.dtype
  const out = {hint, dtype, shape, nchw}
  switch (ctx.layer.class_name) {
    case 'Add':
      return [b.op('Sum', names, {}, out)]
    case 'Multiply':
      return [names.slice(1).reduce<Val>((acc, n, i) => b.op('Mul', [acc.name, n], {}, i === names.length - 2 ? out : {...out, hint: `${hint}_${i}`}), {name: names[0]!, dtype})]
    case 'Average': {
      const s = b.op('Sum', names, {}, {...out, hint: `${hint}_sum`})
      return [b.op('Div', [s.name, b.f32(`${hint}_n`, [names.length], [])], {}, out)]
    }
    case 'Maximum':
      return [b.op('Max', names, {}, out)]
    case 'Minimum':
      return [b.op('Min', names, {}, out)]
    default:
      throw layerError(ctx, 'this merge')
  }
}

export const concatenate: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const ins = ctx.inputs
  const rank = ins[0]!.shape!.length
  const axis = (ctx.cfg.axis ?? -1) < 0 ? (ctx.cfg.axis ?? -1) + rank : ctx.cfg.axis
  const shape = ins[0]!.shape!.map((d, i) => (i === axis ? (ins.every((v) => v.shape![i]! >= 0) ? ins.reduce((a, v) => a + v.shape![i]!, 0) : -1) : d))
  if (rank === 4 && ins.some((v) => v.nchw)) return [b.op('Concat', ins.map((v) => b.nchwName(v)), {axis: TO_NCHW.indexOf(axis)}, {hint, dtype: ins[0]!.dtype, shape, nchw: true})]
  return [b.op('Concat', ins.map((v) => b.logicalName(v)), {axis}, {hint, dtype: ins[0]!.dtype, shape})]
}

export const reshapeLayer: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const target: number[] = ctx.cfg.target_shape
  const known = x.shape && x.shape.slice(1).every((d) => d >= 0) ? size(x.shape.slice(1)) : -1
  const rest = target.reduce((a, d) => (d >= 0 ? a * d : a), 1)
  const shape = [x.shape?.[0] ?? -1, ...target.map((d) => (d < 0 && known >= 0 ? known / rest : d))]
  return [b.op('Reshape', [x.name, b.i64(`${hint}_shape`, [0, ...target])], {}, {hint, dtype: x.dtype, shape})]
}

export const flatten: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const tail = x.shape!.slice(1)
  const shape = [x.shape![0]!, tail.every((d) => d >= 0) ? size(tail) : -1]
  return [b.op('Flatten', [x.name], {axis: 1}, {hint, dtype: x.dtype, shape})]
}

export const permute: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const perm = [0, ...(ctx.cfg.dims as number[])]
  return [b.op('Transpose', [x.name], {perm}, {hint, dtype: x.dtype, shape: x.shape && perm.map((p) => x.shape![p]!)})]
}

export const repeatVector: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const n = ctx.cfg.n as number
  const u = b.op('Unsqueeze', [x.name, b.i64(`${hint}_axes`, [1])], {}, {hint: `${hint}_unsq`, dtype: x.dtype})
  return [b.op('Tile', [u.name, b.i64(`${hint}_reps`, [1, n, 1])], {}, {hint, dtype: x.dtype, shape: x.shape && [x.shape[0]!, n, x.shape[1]!]})]
}

/** Embedding: indices (any numeric dtype, truncated like TF.js's cast to int32) gather rows. */
export const embedding: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  const e = ctx.need('embeddings')
  const table = b.constant(`${hint}_embeddings`, e.data as Float32Array, e.shape)
  const idx = x.dtype === DataType.INT32 || x.dtype === DataType.INT64 ? x.name : b.op('Cast', [x.name], {to: DataType.INT32}, {hint: `${hint}_idx`, dtype: DataType.INT32}).name
  return [b.op('Gather', [table.name, idx], {axis: 0}, {hint, dtype: DataType.FLOAT, shape: x.shape && [...x.shape, e.shape[1]!]})]
}
