import {DataType} from '../../../onnx/proto.js'
import {permuteData} from '../builder.js'
import {windowAttrs, windowOutShape} from '../graph/ops-convolution.js'
import type {Window} from '../graph/ops-convolution.js'
import type {LayerContext, LayerConverter} from './context.js'
import {layerError, pair} from './context.js'
import {withActivation} from './layers-core.js'

function channelsLast(ctx: LayerContext): void {
  const fmt = ctx.cfg.data_format ?? 'channels_last'
  if (fmt !== 'channels_last') throw layerError(ctx, `data_format ${fmt}`)
}

function window(ctx: LayerContext, kernel: [number, number], stridesKey = 'strides'): Window {
  return {
    kernel,
    strides: pair(ctx.cfg[stridesKey], 1),
    dilations: pair(ctx.cfg.dilation_rate, 1),
    padding: (ctx.cfg.padding ?? 'valid').toUpperCase(),
  }
}

function bias(ctx: LayerContext): string[] {
  if (ctx.cfg.use_bias === false) return []
  const w = ctx.need('bias')
  return [ctx.b.constant(`${ctx.hint}_bias`, w.data as Float32Array, w.shape).name]
}

/** Conv2D and DepthwiseConv2D (kernel [kh,kw,in,out] / [kh,kw,in,mult]). */
export const conv2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const depthwise = ctx.layer.class_name === 'DepthwiseConv2D'
  const k = ctx.need(depthwise ? 'depthwise_kernel' : 'kernel')
  const [kh, kw, cin, cout] = k.shape as [number, number, number, number]
  if (!depthwise && (ctx.cfg.groups ?? 1) !== 1) throw layerError(ctx, 'grouped convolution')
  const wData = permuteData(k.data as Float32Array, k.shape, depthwise ? [2, 3, 0, 1] : [3, 2, 0, 1])
  const W = b.constant(`${hint}_W`, wData, depthwise ? [cin * cout, 1, kh, kw] : [cout, cin, kh, kw])
  const w = window(ctx, [kh, kw])
  const channels = depthwise ? cin * cout : cout
  const y = b.op('Conv', [b.nchwName(x), W.name, ...bias(ctx)], {kernel_shape: w.kernel, strides: w.strides, dilations: w.dilations, group: depthwise ? cin : undefined, ...windowAttrs(w, x.shape)}, {hint: `${hint}_conv`, dtype: DataType.FLOAT, shape: windowOutShape(x.shape, w, channels), nchw: true})
  return [withActivation(ctx, y)]
}

/** SeparableConv2D: depthwise then 1×1 pointwise, bias and activation after the pointwise. */
export const separableConv2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const dk = ctx.need('depthwise_kernel')
  const pk = ctx.need('pointwise_kernel')
  const [kh, kw, cin, mult] = dk.shape as [number, number, number, number]
  const cout = pk.shape[3]!
  const DW = b.constant(`${hint}_dw`, permuteData(dk.data as Float32Array, dk.shape, [2, 3, 0, 1]), [cin * mult, 1, kh, kw])
  const PW = b.constant(`${hint}_pw`, permuteData(pk.data as Float32Array, pk.shape, [3, 2, 0, 1]), [cout, cin * mult, 1, 1])
  const w = window(ctx, [kh, kw])
  const shape = windowOutShape(x.shape, w, cin * mult)
  const d = b.op('Conv', [b.nchwName(x), DW.name], {kernel_shape: w.kernel, strides: w.strides, dilations: w.dilations, group: cin, ...windowAttrs(w, x.shape)}, {hint: `${hint}_depthwise`, dtype: DataType.FLOAT, shape, nchw: true})
  const y = b.op('Conv', [d.name, PW.name, ...bias(ctx)], {kernel_shape: [1, 1]}, {hint: `${hint}_pointwise`, dtype: DataType.FLOAT, shape: shape && [shape[0]!, shape[1]!, shape[2]!, cout], nchw: true})
  return [withActivation(ctx, y)]
}

/** Conv2DTranspose (kernel [kh,kw,out,in]) with TF's 'same'/'valid' output sizes. */
export const conv2dTranspose: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const k = ctx.need('kernel')
  const [kh, kw, cout, cin] = k.shape as [number, number, number, number]
  const W = b.constant(`${hint}_W`, permuteData(k.data as Float32Array, k.shape, [3, 2, 0, 1]), [cin, cout, kh, kw])
  const [sh, sw] = pair(ctx.cfg.strides, 1)
  const dil = pair(ctx.cfg.dilation_rate, 1)
  if (dil[0] !== 1 || dil[1] !== 1) throw layerError(ctx, 'dilation')
  const same = (ctx.cfg.padding ?? 'valid') === 'same'
  const pads = [0, 0, 0, 0]
  const outPad = [0, 0]
  const ks = [kh, kw]
  const ss = [sh, sw]
  if (same) {
    for (let i = 0; i < 2; i++) {
      const total = Math.max(ks[i]! - ss[i]!, 0)
      pads[i] = Math.floor(total / 2)
      pads[i + 2] = total - Math.floor(total / 2)
      outPad[i] = Math.max(ss[i]! - ks[i]!, 0)
    }
  }
  const dim = (n: number, i: number): number => (n < 0 ? -1 : same ? n * ss[i]! : (n - 1) * ss[i]! + ks[i]!)
  const shape = x.shape && [x.shape[0]!, dim(x.shape[1]!, 0), dim(x.shape[2]!, 1), cout]
  const y = b.op('ConvTranspose', [b.nchwName(x), W.name, ...bias(ctx)], {kernel_shape: ks, strides: ss, pads, output_padding: outPad.some((p) => p) ? outPad : undefined}, {hint: `${hint}_convT`, dtype: DataType.FLOAT, shape, nchw: true})
  return [withActivation(ctx, y)]
}

/** MaxPooling2D / AveragePooling2D; 1-D pooling runs as 2-D on [N,C,T,1]. */
export const pooling2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const size = pair(ctx.cfg.pool_size, 2)
  const w: Window = {kernel: size, strides: ctx.cfg.strides ? pair(ctx.cfg.strides, 1) : size, dilations: [1, 1], padding: (ctx.cfg.padding ?? 'valid').toUpperCase()}
  const op = ctx.layer.class_name.startsWith('Max') ? 'MaxPool' : 'AveragePool'
  return [b.op(op, [b.nchwName(x)], {kernel_shape: w.kernel, strides: w.strides, ...windowAttrs(w, x.shape)}, {hint, dtype: x.dtype, shape: windowOutShape(x.shape, w, x.shape?.[3] ?? -1), nchw: true})]
}

/** Global pooling over the spatial (2-D) or time (1-D) axes. */
export const globalPooling: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const op = ctx.layer.class_name.startsWith('GlobalMax') ? 'ReduceMax' : 'ReduceMean'
  const keep = ctx.cfg.keepdims === true
  const rank = x.shape!.length
  const axesInput = b.opset >= 18
  if (rank === 4) {
    const shape = keep ? [x.shape![0]!, 1, 1, x.shape![3]!] : [x.shape![0]!, x.shape![3]!]
    const axes = [2, 3]
    return [axesInput ? b.op(op, [b.nchwName(x), b.i64(`${hint}_axes`, axes)], {keepdims: keep ? 1 : 0}, {hint, dtype: x.dtype, shape, nchw: keep}) : b.op(op, [b.nchwName(x)], {axes, keepdims: keep ? 1 : 0}, {hint, dtype: x.dtype, shape, nchw: keep})]
  }
  const l = b.logical(x)
  const shape = keep ? [l.shape![0]!, 1, l.shape![2]!] : [l.shape![0]!, l.shape![2]!]
  return [axesInput ? b.op(op, [l.name, b.i64(`${hint}_axes`, [1])], {keepdims: keep ? 1 : 0}, {hint, dtype: x.dtype, shape}) : b.op(op, [l.name], {axes: [1], keepdims: keep ? 1 : 0}, {hint, dtype: x.dtype, shape})]
}

export const zeroPadding2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const p = ctx.cfg.padding
  const [[t, bt], [l, r]] = typeof p === 'number' ? [[p, p], [p, p]] : typeof p[0] === 'number' ? [[p[0], p[0]], [p[1], p[1]]] : p
  const shape = x.shape && [x.shape[0]!, x.shape[1]! < 0 ? -1 : x.shape[1]! + t + bt, x.shape[2]! < 0 ? -1 : x.shape[2]! + l + r, x.shape[3]!]
  return [b.op('Pad', [b.nchwName(x), b.i64(`${hint}_pads`, [0, 0, t, l, 0, 0, bt, r])], {mode: 'constant'}, {hint, dtype: x.dtype, shape, nchw: true})]
}

export const cropping2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const c = ctx.cfg.cropping
  const [[t, bt], [l, r]] = typeof c === 'number' ? [[c, c], [c, c]] : typeof c[0] === 'number' ? [[c[0], c[0]], [c[1], c[1]]] : c
  const shape = x.shape && [x.shape[0]!, x.shape[1]! < 0 ? -1 : x.shape[1]! - t - bt, x.shape[2]! < 0 ? -1 : x.shape[2]! - l - r, x.shape[3]!]
  return [b.op('Slice', [b.nchwName(x), b.i64(`${hint}_starts`, [t, l]), b.i64(`${hint}_ends`, [-bt || 2 ** 62, -r || 2 ** 62]), b.i64(`${hint}_axes`, [2, 3])], {}, {hint, dtype: x.dtype, shape, nchw: true})]
}

/** UpSampling2D: nearest or bilinear, with TF.js's (asymmetric) coordinate convention. */
export const upSampling2d: LayerConverter = (ctx) => {
  const {b, hint} = ctx
  channelsLast(ctx)
  const x = ctx.inputs[0]!
  const [sh, sw] = pair(ctx.cfg.size, 2)
  const bilinear = ctx.cfg.interpolation === 'bilinear'
  const shape = x.shape && [x.shape[0]!, x.shape[1]! < 0 ? -1 : x.shape[1]! * sh, x.shape[2]! < 0 ? -1 : x.shape[2]! * sw, x.shape[3]!]
  const scales = b.f32(`${hint}_scales`, [1, 1, sh, sw])
  return [b.op('Resize', [b.nchwName(x), '', scales], {mode: bilinear ? 'linear' : 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: bilinear ? undefined : 'floor'}, {hint, dtype: x.dtype, shape, nchw: true})]
}

/** BatchNormalization in inference mode (moving statistics), on the last axis. */
export const batchNorm: LayerConverter = (ctx) => {
  const {b, cfg, hint} = ctx
  const x = ctx.inputs[0]!
  const rank = x.shape!.length
  const axis = Array.isArray(cfg.axis) ? cfg.axis[0] : (cfg.axis ?? -1)
  if ((axis < 0 ? axis + rank : axis) !== rank - 1) throw layerError(ctx, `axis ${axis} (only the channel axis)`)
  const mean = ctx.need('moving_mean')
  const variance = ctx.need('moving_variance')
  const c = mean.shape[0]!
  const gamma = cfg.scale === false ? new Float32Array(c).fill(1) : (ctx.need('gamma').data as Float32Array)
  const beta = cfg.center === false ? new Float32Array(c) : (ctx.need('beta').data as Float32Array)
  const eps = cfg.epsilon ?? 1e-3
  if (rank === 4 || rank === 2) {
    const ins = [rank === 4 ? b.nchwName(x) : b.logicalName(x), ...[gamma, beta, mean.data as Float32Array, variance.data as Float32Array].map((d, i) => b.constant(`${hint}_${['scale', 'bias', 'mean', 'var'][i]}`, d, [c]).name)]
    return [b.op('BatchNormalization', ins, {epsilon: {float: eps}}, {hint, dtype: x.dtype, shape: x.shape, nchw: rank === 4})]
  }
  // Other ranks: channel is last, so fold into one scale and shift that broadcast on the last axis.
  const scale = new Float32Array(c)
  const shift = new Float32Array(c)
  const m = mean.data as Float32Array
  const v = variance.data as Float32Array
  for (let i = 0; i < c; i++) {
    scale[i] = gamma[i]! / Math.sqrt(v[i]! + eps)
    shift[i] = beta[i]! - m[i]! * scale[i]!
  }
  const l = b.logical(x)
  const y = b.op('Mul', [l.name, b.constant(`${hint}_scale`, scale, [c]).name], {}, {hint: `${hint}_mul`, dtype: x.dtype})
  return [b.op('Add', [y.name, b.constant(`${hint}_shift`, shift, [c]).name], {}, {hint, dtype: x.dtype, shape: x.shape})]
}

