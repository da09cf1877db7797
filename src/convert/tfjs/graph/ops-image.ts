import {DataType} from '../../../onnx/proto.js'
import {constNumbers} from '../builder.js'
import type {Val} from '../builder.js'
import type {OpConverter} from './context.js'

/**
 * ResizeBilinear / ResizeNearestNeighbor, on the channels-first tensor (onnxruntime resizes only the
 * two inner dims). TF's coordinate conventions map onto ONNX's coordinate_transformation_mode.
 */
export const resize: OpConverter = (ctx) => {
  const {b, hint, attrs, def} = ctx
  const [x, sz] = ctx.inputs as [Val, Val]
  const [h, w] = constNumbers(sz, 'resize size')
  const align = attrs.bool('align_corners')
  const half = attrs.bool('half_pixel_centers')
  const nearest = def.nearest === true
  const mode = align ? 'align_corners' : half ? (nearest ? 'tf_half_pixel_for_nn' : 'half_pixel') : 'asymmetric'
  const xs = b.nchwName(x)
  let sizes: string
  const n = x.shape?.[0] ?? -1
  const c = x.shape?.[3] ?? -1
  if (n >= 0 && c >= 0) sizes = b.i64(`${hint}_sizes`, [n, c, h!, w!])
  else {
    const s = b.op('Shape', [xs], {}, {hint: `${hint}_inshape`, dtype: DataType.INT64})
    const nc = b.op('Slice', [s.name, b.i64(`${hint}_s0`, [0]), b.i64(`${hint}_s1`, [2])], {}, {hint: `${hint}_nc`, dtype: DataType.INT64})
    sizes = b.op('Concat', [nc.name, b.i64(`${hint}_hw`, [h!, w!])], {axis: 0}, {hint: `${hint}_sizes`, dtype: DataType.INT64}).name
  }
  const attrsOut = {
    mode: nearest ? 'nearest' : 'linear',
    coordinate_transformation_mode: mode,
    nearest_mode: nearest ? (align ? 'round_prefer_ceil' : 'floor') : undefined,
  }
  return [b.op('Resize', [xs, '', '', sizes], attrsOut, {hint, dtype: x.dtype, shape: x.shape && [n, h!, w!, c], nchw: true})]
}
