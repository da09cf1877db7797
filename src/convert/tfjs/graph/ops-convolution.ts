import {DataType} from '../../../onnx/proto.js'
import {permuteData} from '../builder.js'
import type {GraphBuilder, Val} from '../builder.js'
import {applyActivation} from './ops-elementwise.js'
import type {OpContext, OpConverter} from './context.js'
import {unsupportedAttr} from './context.js'

export interface Window {
  kernel: number[]
  strides: number[]
  dilations: number[]
  padding: string
  /** [top, bottom, left, right] for EXPLICIT padding. */
  explicit?: number[]
}

/** Output size of one spatial dim under TF padding rules; -1 when unknown. */
export function outDim(input: number, k: number, s: number, d: number, padding: string, explicit?: [number, number]): number {
  if (input < 0) return -1
  const eff = (k - 1) * d + 1
  if (padding === 'SAME') return Math.ceil(input / s)
  if (padding === 'VALID') return Math.ceil((input - eff + 1) / s)
  return Math.floor((input + explicit![0] + explicit![1] - eff) / s) + 1
}

/** ONNX `pads` (or auto_pad) for a 2-D window on an NHWC-shaped input. */
export function windowAttrs(w: Window, inShape: number[] | undefined): {pads?: number[]; auto_pad?: string} {
  if (w.padding === 'VALID') return {pads: [0, 0, 0, 0]}
  if (w.padding === 'EXPLICIT') return {pads: [w.explicit![0]!, w.explicit![2]!, w.explicit![1]!, w.explicit![3]!]}
  const h = inShape?.[1] ?? -1
  const wd = inShape?.[2] ?? -1
  if (h < 0 || wd < 0) return {auto_pad: 'SAME_UPPER'}
  const pad = (n: number, i: number): [number, number] => {
    const out = Math.ceil(n / w.strides[i]!)
    const total = Math.max((out - 1) * w.strides[i]! + (w.kernel[i]! - 1) * w.dilations[i]! + 1 - n, 0)
    return [Math.floor(total / 2), total - Math.floor(total / 2)]
  }
  const [t, bt] = pad(h, 0)
  const [l, r] = pad(wd, 1)
  return {pads: [t, l, bt, r]}
}

export function windowOutShape(inShape: number[] | undefined, w: Window, channels: number): number[] | undefined {
  if (!inShape) return undefined
  return [
    inShape[0]!,
    outDim(inShape[1]!, w.kernel[0]!, w.strides[0]!, w.dilations[0]!, w.padding, w.explicit && [w.explicit[0]!, w.explicit[1]!]),
    outDim(inShape[2]!, w.kernel[1]!, w.strides[1]!, w.dilations[1]!, w.padding, w.explicit && [w.explicit[2]!, w.explicit[3]!]),
    channels,
  ]
}

function nhwcOnly(ctx: OpContext): void {
  const fmt = ctx.attrs.string('data_format', 'NHWC')
  if (fmt !== 'NHWC') throw unsupportedAttr(ctx, `data_format ${fmt}`)
}

/** Filter [kh,kw,in,out] (or depthwise [kh,kw,in,mult]) as an ONNX [out,in/group,kh,kw] weight name. */
function filterName(b: GraphBuilder, f: Val, depthwise: boolean, hint: string): string {
  const [kh, kw, cin, cout] = f.shape!
  if (f.value) {
    const oihw = permuteData(f.value, f.shape!, [3, 2, 0, 1])
    // Depthwise: [mult, in, kh, kw] must become [in*mult, 1, kh, kw] with channel-major order.
    const data = depthwise ? permuteData(f.value, f.shape!, [2, 3, 0, 1]) : oihw
    return b.constant(`${hint}_W`, data, depthwise ? [cin! * cout!, 1, kh!, kw!] : [cout!, cin!, kh!, kw!]).name
  }
  const t = b.op('Transpose', [f.name], {perm: depthwise ? [2, 3, 0, 1] : [3, 2, 0, 1]}, {hint: `${hint}_W`, dtype: f.dtype})
  if (!depthwise) return t.name
  return b.op('Reshape', [t.name, b.i64(`${hint}_Wshape`, [cin! * cout!, 1, kh!, kw!])], {}, {hint: `${hint}_Wdw`, dtype: f.dtype}).name
}

/** Conv2D, DepthwiseConv2dNative and their fused forms (bias, batch norm, activation). */
export const conv2d: OpConverter = (ctx) => {
  const {b, attrs, hint, def} = ctx
  nhwcOnly(ctx)
  const [x, f] = ctx.inputs as [Val, Val]
  const depthwise = def.depthwise === true
  if (!f.shape || f.shape.length !== 4) throw unsupportedAttr(ctx, 'a filter of unknown shape')
  const strides = attrs.ints('strides')
  const dil = attrs.ints('dilations')
  const expl = attrs.ints('explicit_paddings')
  const w: Window = {
    kernel: [f.shape[0]!, f.shape[1]!],
    strides: strides.length === 4 ? [strides[1]!, strides[2]!] : [1, 1],
    dilations: dil.length === 4 ? [dil[1]!, dil[2]!] : [1, 1],
    padding: attrs.string('padding', 'VALID'),
    explicit: expl.length === 8 ? [expl[2]!, expl[3]!, expl[4]!, expl[5]!] : undefined,
  }
  const channels = depthwise ? f.shape[2]! * f.shape[3]! : f.shape[3]!
  const inputs = [b.nchwName(x), filterName(b, f, depthwise, hint)]
  const fused = def.fused ? attrs.strings('fused_ops') : []
  const extra = ctx.inputs.slice(2)
  let rest = fused
  if (fused[0] === 'BiasAdd') {
    inputs.push(b.logicalName(extra.shift()!))
    rest = fused.slice(1)
  }
  const shape = windowOutShape(x.shape, w, channels)
  const y = b.op(
    'Conv',
    inputs,
    {strides: w.strides, dilations: w.dilations, group: depthwise ? f.shape[2]! : undefined, kernel_shape: w.kernel, ...windowAttrs(w, x.shape)},
    {hint: rest.length ? `${hint}_conv` : hint, dtype: DataType.FLOAT, shape, nchw: true},
  )
  return [applyFused(ctx, y, rest, extra)]
}

/** The fused tail of _FusedConv2D / _FusedMatMul / FusedDepthwiseConv2dNative. */
export function applyFused(ctx: OpContext, y: Val, ops: string[], extra: Val[]): Val {
  const {b, attrs, hint} = ctx
  let out = y
  const args = [...extra]
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!
    const last = i === ops.length - 1
    const h = last ? hint : `${hint}_${op}`
    if (op === 'BiasAdd') {
      const bias = args.shift()!
      out = b.op('Add', [out.name, out.nchw ? b.constant(`${bias.name}_c11`, bias.value!, [bias.shape![0]!, 1, 1]).name : b.logicalName(bias)], {}, {...out, hint: h})
    } else if (op === 'FusedBatchNorm') {
      const [scale, offset, mean, variance] = args.splice(0, 4) as [Val, Val, Val, Val]
      if (!out.nchw) throw unsupportedAttr(ctx, 'FusedBatchNorm after MatMul')
      out = b.op('BatchNormalization', [out.name, scale.name, offset.name, mean.name, variance.name], {epsilon: {float: attrs.float('epsilon', 1e-3)}}, {...out, hint: h})
    } else if (op === 'Relu' || op === 'Relu6' || op === 'Elu' || op === 'Sigmoid' || op === 'Tanh') {
      out = applyActivation(b, out, op, h)
    } else if (op === 'LeakyRelu') {
      out = applyActivation(b, out, 'LeakyRelu', h, {alpha: attrs.float('leakyrelu_alpha', 0.2)})
    } else if (op === 'Prelu') {
      out = applyActivation(b, out, 'PRelu', h, {alphaVal: args.shift()!})
    } else {
      throw unsupportedAttr(ctx, `fused op ${op}`)
    }
  }
  return out
}

/** MaxPool / AvgPool (NHWC, 2-D windows). */
export const pool: OpConverter = (ctx) => {
  const {b, attrs, hint, def} = ctx
  nhwcOnly(ctx)
  const x = ctx.inputs[0]!
  const k = attrs.ints('ksize')
  const s = attrs.ints('strides')
  if (k[0] !== 1 || k[3] !== 1 || s[0] !== 1 || s[3] !== 1) throw unsupportedAttr(ctx, 'pooling over the batch or channel axis')
  const w: Window = {kernel: [k[1]!, k[2]!], strides: [s[1]!, s[2]!], dilations: [1, 1], padding: attrs.string('padding', 'VALID')}
  const shape = windowOutShape(x.shape, w, x.shape?.[3] ?? -1)
  return [b.op(def.onnx!, [b.nchwName(x)], {kernel_shape: w.kernel, strides: w.strides, ...windowAttrs(w, x.shape)}, {hint, dtype: x.dtype, shape, nchw: true})]
}

/** FusedBatchNorm / V2 / V3 in inference mode: only the first output is meaningful. */
export const fusedBatchNorm: OpConverter = (ctx) => {
  const {b, attrs, hint} = ctx
  if (attrs.bool('is_training', false)) throw unsupportedAttr(ctx, 'training-mode batch norm')
  nhwcOnly(ctx)
  const [x, scale, offset, mean, variance] = ctx.inputs as [Val, Val, Val, Val, Val]
  const y = b.op('BatchNormalization', [b.nchwName(x), scale.name, offset.name, mean.name, variance.name], {epsilon: {float: attrs.float('epsilon', 1e-3)}}, {hint, dtype: x.dtype, shape: x.shape, nchw: true})
  return [y]
}
