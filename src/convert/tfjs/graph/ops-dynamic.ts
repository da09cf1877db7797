import {DataType} from '../../../onnx/proto.js'
import type {Val} from '../builder.js'
import type {OpConverter} from './context.js'
import {unsupportedAttr} from './context.js'

/** TopKV2(x, k) along the last axis: values and int32 indices, largest first. */
export const topK: OpConverter = (ctx) => {
  const {b, hint, attrs} = ctx
  const [x0, k] = ctx.inputs as [Val, Val]
  const x = b.logical(x0)
  if (!attrs.bool('sorted', true)) throw unsupportedAttr(ctx, 'sorted=false')
  const kShape = b.op('Reshape', [b.int64Name(k), b.i64(`${hint}_k1`, [1])], {}, {hint: `${hint}_k`, dtype: DataType.INT64})
  const kv = k.value ? Number(k.value[0]) : -1
  const shape = x.shape && [...x.shape.slice(0, -1), kv]
  const [values, indices] = b.opMulti('TopK', [x.name, kShape.name], {axis: -1, largest: 1, sorted: 1}, [
    {hint, dtype: x.dtype, shape},
    {hint: `${hint}_i64`, dtype: DataType.INT64, shape},
  ]) as [Val, Val]
  return [values, b.op('Cast', [indices.name], {to: DataType.INT32}, {hint: `${hint}:1`, dtype: DataType.INT32, shape})]
}

/** Where(condition): the coordinates of true elements, [count, rank]. */
export const where: OpConverter = (ctx) => {
  const {b, hint} = ctx
  const c = b.logical(ctx.inputs[0]!)
  if (ctx.inputs.length > 1) throw unsupportedAttr(ctx, 'the three-input (select) form')
  const nz = b.op('NonZero', [c.name], {}, {hint: `${hint}_nz`, dtype: DataType.INT64})
  return [b.op('Transpose', [nz.name], {perm: [1, 0]}, {hint, dtype: DataType.INT64, shape: [-1, c.shape?.length ?? -1]})]
}

/**
 * NonMaxSuppressionV3 / V5 (hard NMS): boxes [N,4] as [y1,x1,y2,x2] like ONNX's default box
 * format, scores [N]; returns the kept indices in descending score order. V5 also returns their
 * scores and the count.
 */
export const nonMaxSuppression: OpConverter = (ctx) => {
  const {b, hint, def} = ctx
  const [boxes, scores, maxOut, iou, scoreThr, sigma] = ctx.inputs as [Val, Val, Val, Val, Val | undefined, Val | undefined]
  if (sigma && (!sigma.value || Number(sigma.value[0]) !== 0)) throw unsupportedAttr(ctx, 'soft-NMS (soft_nms_sigma ≠ 0)')
  if (ctx.attrs.bool('pad_to_max_output_size')) throw unsupportedAttr(ctx, 'pad_to_max_output_size')
  const bx = b.op('Unsqueeze', [b.logicalName(boxes), b.i64(`${hint}_ax0`, [0])], {}, {hint: `${hint}_boxes`, dtype: boxes.dtype})
  const sc = b.op('Unsqueeze', [b.logicalName(scores), b.i64(`${hint}_ax01`, [0, 1])], {}, {hint: `${hint}_scores`, dtype: scores.dtype})
  const one = (v: Val, tag: string, dtype: number): string => {
    const name = dtype === DataType.INT64 ? b.int64Name(v) : v.dtype === dtype ? v.name : b.op('Cast', [v.name], {to: dtype}, {hint: `${hint}_${tag}c`, dtype}).name
    return b.op('Reshape', [name, b.i64(`${hint}_${tag}1`, [1])], {}, {hint: `${hint}_${tag}`, dtype}).name
  }
  const inputs = [bx.name, sc.name, one(maxOut, 'max', DataType.INT64), one(iou, 'iou', DataType.FLOAT)]
  if (scoreThr) inputs.push(one(scoreThr, 'score', DataType.FLOAT))
  const sel = b.op('NonMaxSuppression', inputs, {center_point_box: 0}, {hint: `${hint}_sel`, dtype: DataType.INT64})
  const col = b.op('Gather', [sel.name, b.constant(`${hint}_col`, BigInt64Array.of(2n), []).name], {axis: 1}, {hint: `${hint}_idx64`, dtype: DataType.INT64})
  const idx = b.op('Cast', [col.name], {to: DataType.INT32}, {hint, dtype: DataType.INT32, shape: [-1]})
  if (!def.v5) return [idx]
  const kept = b.op('Gather', [b.logicalName(scores), col.name], {axis: 0}, {hint: `${hint}:1`, dtype: scores.dtype, shape: [-1]})
  const count = b.op('Shape', [col.name], {}, {hint: `${hint}_n`, dtype: DataType.INT64})
  const valid = b.op('Cast', [b.op('Squeeze', [count.name, b.i64(`${hint}_ax`, [0])], {}, {hint: `${hint}_n0`, dtype: DataType.INT64}).name], {to: DataType.INT32}, {hint: `${hint}:2`, dtype: DataType.INT32, shape: []})
  return [idx, kept, valid]
}
