import {KilnError} from '../../../errors.js'
import type {Val} from '../builder.js'
import type {OpConverter} from './context.js'
import {argReduce, matMul, softmax} from './ops-matrices.js'
import {conv2d, fusedBatchNorm, pool} from './ops-convolution.js'
import {addN, applyActivation, binary, cast, clip, unary} from './ops-elementwise.js'
import {nonMaxSuppression, topK, where} from './ops-dynamic.js'
import {resize} from './ops-image.js'
import {reduce} from './ops-reduction.js'
import {concat, gather, pack, slice, split, stridedSlice, unpack} from './ops-slice-join.js'
import {constantLike, expandDims, fill, identity, pad, range, reshape, shapeOf, squeeze, tile, transpose} from './ops-transform.js'
import type {OpDef} from './op-list.js'

const prelu: OpConverter = (ctx) => [applyActivation(ctx.b, ctx.inputs[0]!, 'PRelu', ctx.hint, {alphaVal: ctx.inputs[1] as Val})]

const BY_KIND: Record<string, OpConverter> = {
  identity,
  reshape,
  squeeze,
  expandDims,
  transpose,
  pad,
  shape: shapeOf,
  tile,
  concat,
  pack,
  unpack,
  stridedSlice,
  slice,
  gather,
  split,
  batchnorm: fusedBatchNorm,
  softmax,
  fill,
  like: constantLike,
  range,
  prelu,
  cast,
  clip,
  addn: addN,
  topk: topK,
  where,
  nms: nonMaxSuppression,
}

/** The converter for one op-table entry: one executor per category, as tfjs-converter does. */
export function converterFor(op: string, def: OpDef): OpConverter {
  if (def.kind && BY_KIND[def.kind]) return BY_KIND[def.kind]!
  switch (def.category) {
    case 'unary':
      return unary
    case 'binary':
      return binary
    case 'convolution':
      return conv2d
    case 'pooling':
      return pool
    case 'matrices':
      return matMul
    case 'reduction':
      return reduce
    case 'arg_reduction':
      return argReduce
    case 'image':
      return resize
    default:
      throw new KilnError(`no converter for TF op ${op} (category ${def.category})`, {code: 'E_TFJS_UNSUPPORTED'})
  }
}
