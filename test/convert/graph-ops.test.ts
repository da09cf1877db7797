/**
 * One case per TF op (or op variant) of the graph-model table: a tiny graph model is written,
 * converted, and checked against TF.js running the same model. Rank-4 cases run twice: on the raw
 * input and behind a convolution, so both the source and the channels-first layout paths are covered.
 */
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {convertTfjs} from '../../src/convert/tfjs/index.js'
import type {VerifyReport} from '../../src/convert/tfjs/index.js'
import {OP_LIST} from '../../src/convert/tfjs/graph/op-list.js'
import {attr, values, writeGraphModel} from './graph-builder.js'
import type {GraphConst, GraphSpec} from './graph-builder.js'
import {tempDir} from './helpers.js'

interface Case {
  name: string
  nodes: GraphSpec['nodes']
  consts?: Record<string, GraphConst>
  shape?: number[]
}

const C = 4
const X = [1, 6, 6, C]
const f = (vals: number[], shape: number[]): GraphConst => ({values: vals, shape})
const i32 = (vals: number[], shape = [vals.length]): GraphConst => ({values: vals, shape, dtype: 'int32'})
const node = (op: string, input: string[], a: Record<string, unknown> = {}, name = 'y') => ({name, op, input, attr: a})
const conv = {strides: attr.ints([1, 1, 1, 1]), padding: attr.s('SAME'), data_format: attr.s('NHWC'), dilations: attr.ints([1, 1, 1, 1])}
const filt = (kh: number, kw: number, cin: number, cout: number, seed = 3) => f(values(kh * kw * cin * cout, seed), [kh, kw, cin, cout])

/** Overlapping boxes [y1,x1,y2,x2] on a small grid, so suppression has work to do. */
function boxes(n: number): number[] {
  return Array.from({length: n}, (_, i) => {
    const y = (i % 4) * 0.15
    const x = Math.floor(i / 4) * 0.2
    return [y, x, y + 0.3, x + 0.35]
  }).flat()
}

const unaryOps = ['Relu', 'Relu6', 'Elu', 'Selu', 'Sigmoid', 'Tanh', 'Softplus', 'Exp', 'Log', 'Sqrt', 'Rsqrt', 'Square', 'Neg', 'Abs', 'Floor', 'Ceil', 'Round', 'Sign', 'Reciprocal', 'Sin', 'Cos', 'Erf', 'Tan', 'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh']
const binaryOps = ['Add', 'AddV2', 'BiasAdd', 'Sub', 'Mul', 'RealDiv', 'Div', 'FloorDiv', 'FloorMod', 'Maximum', 'Minimum', 'Pow', 'SquaredDifference']
const compareOps = ['Greater', 'GreaterEqual', 'Less', 'LessEqual', 'Equal']
const toFloat = (input: string) => node('Cast', [input], {DstT: attr.type('DT_FLOAT')}, 'out')

const CASES: Case[] = [
  ...unaryOps.map((op) => ({name: op, nodes: [node(op, ['x'])]})),
  {name: 'LeakyRelu', nodes: [node('LeakyRelu', ['x'], {alpha: attr.f(0.3)})]},
  {name: 'Prelu', nodes: [node('Prelu', ['x', 'a'])], consts: {a: f(values(C, 5), [C])}},
  ...binaryOps.map((op) => ({name: `${op} per-channel const`, nodes: [node(op, ['x', 'c'])], consts: {c: f(values(C, 7).map((v) => v + 2), [C])}})),
  {name: 'Mul two tensors', nodes: [node('Relu', ['x'], {}, 'r'), node('Mul', ['x', 'r'])]},
  {name: 'Sub scalar first', nodes: [node('Sub', ['c', 'x'])], consts: {c: f([0.5], [])}},
  ...compareOps.map((op) => ({name: op, nodes: [node('Round', ['x'], {}, 'r'), node(op, ['r', 'c']), toFloat('y')], consts: {c: f([0], [])}})),
  {name: 'LogicalNot', nodes: [node('Greater', ['x', 'c'], {}, 'g'), node('LogicalNot', ['g']), toFloat('y')], consts: {c: f([0.2], [])}},
  ...['LogicalAnd', 'LogicalOr'].map((op) => ({name: op, nodes: [node('Greater', ['x', 'c'], {}, 'g'), node('Less', ['x', 'd'], {}, 'l'), node(op, ['g', 'l']), toFloat('y')], consts: {c: f([0.1], []), d: f([0.4], [])}})),
  {name: 'IsNan', nodes: [node('Sub', ['x', 'c'], {}, 's'), node('Sqrt', ['s'], {}, 'q'), node('IsNan', ['q']), toFloat('y')], consts: {c: f([0.3], [])}},
  ...['All', 'Any'].map((op) => ({name: op, nodes: [node('Greater', ['x', 'c'], {}, 'g'), node(op, ['g', 'ax'], {keep_dims: attr.b(false)}), toFloat('y')], consts: {c: f([0.1], []), ax: i32([3])}})),
  {name: 'AddN', nodes: [node('Relu', ['x'], {}, 'r'), node('AddN', ['x', 'r', 'x'])]},
  {name: 'ClipByValue', nodes: [node('ClipByValue', ['x', 'lo', 'hi'])], consts: {lo: f([0.2], []), hi: f([0.7], [])}},
  {name: 'Cast to int32', nodes: [node('Mul', ['x', 'c'], {}, 'm'), node('Cast', ['m'], {DstT: attr.type('DT_INT32')})], consts: {c: f([10], [])}},
  // convolution and pooling
  {name: 'Conv2D VALID stride 2', nodes: [node('Conv2D', ['x', 'w'], {...conv, padding: attr.s('VALID'), strides: attr.ints([1, 2, 2, 1])})], consts: {w: filt(3, 3, C, 5)}},
  {name: 'Conv2D SAME dilated', nodes: [node('Conv2D', ['x', 'w'], {...conv, dilations: attr.ints([1, 2, 2, 1])})], consts: {w: filt(3, 3, C, 3)}},
  {name: 'Conv2D SAME stride 2 on unknown H/W, then resize', shape: [-1, -1, -1, C], nodes: [node('Conv2D', ['x', 'w'], {...conv, strides: attr.ints([1, 2, 2, 1])}, 'c'), node('ResizeBilinear', ['c', 's'], {align_corners: attr.b(false), half_pixel_centers: attr.b(true)})], consts: {w: filt(3, 3, C, 5), s: i32([7, 5])}},
  {name: 'Conv2D EXPLICIT', nodes: [node('Conv2D', ['x', 'w'], {...conv, padding: attr.s('EXPLICIT'), explicit_paddings: attr.ints([0, 0, 1, 2, 0, 1, 0, 0])})], consts: {w: filt(3, 2, C, 2)}},
  ...['Relu', 'Relu6', 'Elu', 'Sigmoid'].map((act) => ({name: `_FusedConv2D BiasAdd+${act}`, nodes: [node('_FusedConv2D', ['x', 'w', 'b'], {...conv, fused_ops: attr.strs(['BiasAdd', act]), num_args: attr.i(1)})], consts: {w: filt(3, 3, C, 6), b: f(values(6, 9), [6])}})),
  {name: '_FusedConv2D BiasAdd+LeakyRelu', nodes: [node('_FusedConv2D', ['x', 'w', 'b'], {...conv, fused_ops: attr.strs(['BiasAdd', 'LeakyRelu']), num_args: attr.i(1), leakyrelu_alpha: attr.f(0.1)})], consts: {w: filt(3, 3, C, 6), b: f(values(6, 9), [6])}},
  {name: '_FusedConv2D BiasAdd+Prelu', nodes: [node('_FusedConv2D', ['x', 'w', 'b', 'a'], {...conv, fused_ops: attr.strs(['BiasAdd', 'Prelu']), num_args: attr.i(2)})], consts: {w: filt(1, 1, C, 6), b: f(values(6, 9), [6]), a: f(values(6, 4), [6])}},
  {name: 'DepthwiseConv2dNative multiplier 2', nodes: [node('DepthwiseConv2dNative', ['x', 'w'], {...conv, strides: attr.ints([1, 2, 2, 1])})], consts: {w: filt(3, 3, C, 2)}},
  {name: 'FusedDepthwiseConv2dNative BiasAdd+Relu6', nodes: [node('FusedDepthwiseConv2dNative', ['x', 'w', 'b'], {...conv, fused_ops: attr.strs(['BiasAdd', 'Relu6']), num_args: attr.i(1)})], consts: {w: filt(3, 3, C, 1), b: f(values(C, 2), [C])}},
  {name: 'MaxPool SAME', nodes: [node('MaxPool', ['x'], {ksize: attr.ints([1, 3, 3, 1]), strides: attr.ints([1, 2, 2, 1]), padding: attr.s('SAME'), data_format: attr.s('NHWC')})]},
  {name: 'AvgPool SAME', nodes: [node('AvgPool', ['x'], {ksize: attr.ints([1, 3, 3, 1]), strides: attr.ints([1, 2, 2, 1]), padding: attr.s('SAME'), data_format: attr.s('NHWC')})]},
  ...['FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3'].map((op) => ({name: op, nodes: [node(op, ['x', 's', 'o', 'm', 'v'], {epsilon: attr.f(0.001), data_format: attr.s('NHWC')})], consts: {s: f(values(C, 1), [C]), o: f(values(C, 2), [C]), m: f(values(C, 3), [C]), v: f(values(C, 4).map((q) => q + 1.5), [C])}})),
  // normalization and reductions
  {name: 'Softmax', nodes: [node('Softmax', ['x'])]},
  {name: 'LogSoftmax', nodes: [node('LogSoftmax', ['x'])]},
  ...['Mean', 'Sum', 'Max', 'Min', 'Prod'].map((op) => ({name: `${op} spatial`, nodes: [node(op, ['x', 'ax'], {keep_dims: attr.b(false)})], consts: {ax: i32([1, 2])}})),
  {name: 'Mean keep_dims channels', nodes: [node('Mean', ['x', 'ax'], {keep_dims: attr.b(true)})], consts: {ax: i32([-1])}},
  {name: 'Sum over H and C', nodes: [node('Sum', ['x', 'ax'], {keep_dims: attr.b(false)})], consts: {ax: i32([1, 3])}},
  ...['ArgMax', 'ArgMin'].map((op) => ({name: op, nodes: [node(op, ['x', 'ax'], {output_type: attr.type('DT_INT32')})], consts: {ax: i32([3])}})),
  // transformations
  {name: 'Reshape flatten', nodes: [node('Reshape', ['x', 's'])], consts: {s: i32([1, -1])}},
  {name: 'Squeeze', nodes: [node('Squeeze', ['x'], {squeeze_dims: attr.ints([0])})]},
  {name: 'ExpandDims', nodes: [node('ExpandDims', ['x', 'd'])], consts: {d: i32([2], [])}},
  {name: 'Transpose', nodes: [node('Transpose', ['x', 'p'])], consts: {p: i32([0, 3, 1, 2])}},
  {name: 'Pad', nodes: [node('Pad', ['x', 'p'])], consts: {p: i32([0, 0, 1, 2, 2, 1, 0, 0], [4, 2])}},
  {name: 'PadV2', nodes: [node('PadV2', ['x', 'p', 'v'])], consts: {p: i32([0, 0, 1, 1, 0, 2, 1, 0], [4, 2]), v: f([0.25], [])}},
  {name: 'MirrorPad', nodes: [node('MirrorPad', ['x', 'p'], {mode: attr.s('REFLECT')})], consts: {p: i32([0, 0, 2, 1, 1, 2, 0, 0], [4, 2])}},
  {name: 'Tile', nodes: [node('Tile', ['x', 'm'])], consts: {m: i32([1, 2, 1, 3])}},
  {name: 'Shape into Reshape', nodes: [node('Shape', ['x'], {out_type: attr.type('DT_INT32')}, 's'), node('Reshape', ['x', 's'])]},
  // slicing and joining
  {name: 'ConcatV2 channels', nodes: [node('Relu', ['x'], {}, 'r'), node('ConcatV2', ['x', 'r', 'ax'], {N: attr.i(2)})], consts: {ax: i32([3], [])}},
  {name: 'ConcatV2 width', nodes: [node('Relu', ['x'], {}, 'r'), node('ConcatV2', ['x', 'r', 'ax'], {N: attr.i(2)})], consts: {ax: i32([2], [])}},
  {name: 'Concat (axis first)', nodes: [node('Relu', ['x'], {}, 'r'), node('Concat', ['ax', 'x', 'r'], {N: attr.i(2)})], consts: {ax: i32([3], [])}},
  {name: 'Pack', nodes: [node('Relu', ['x'], {}, 'r'), node('Pack', ['x', 'r'], {axis: attr.i(1), N: attr.i(2)})]},
  {name: 'Unpack', nodes: [node('Unpack', ['x'], {axis: attr.i(3), num: attr.i(C)}, 'u'), node('AddN', ['u', 'u:1', 'u:3'])]},
  {name: 'StridedSlice begin/end masks and stride', nodes: [node('StridedSlice', ['x', 'b', 'e', 's'], {begin_mask: attr.i(9), end_mask: attr.i(9), shrink_axis_mask: attr.i(0), new_axis_mask: attr.i(0), ellipsis_mask: attr.i(0)})], consts: {b: i32([0, 1, 0, 0]), e: i32([0, 5, 6, 0]), s: i32([1, 2, 1, 1])}},
  {name: 'StridedSlice shrink and new axis', nodes: [node('StridedSlice', ['x', 'b', 'e', 's'], {begin_mask: attr.i(0), end_mask: attr.i(0), shrink_axis_mask: attr.i(8), new_axis_mask: attr.i(2), ellipsis_mask: attr.i(0)})], consts: {b: i32([0, 0, 1, 2]), e: i32([1, 0, 4, 3]), s: i32([1, 1, 1, 1])}},
  {name: 'StridedSlice ellipsis negative stride', nodes: [node('StridedSlice', ['x', 'b', 'e', 's'], {begin_mask: attr.i(2), end_mask: attr.i(2), shrink_axis_mask: attr.i(0), new_axis_mask: attr.i(0), ellipsis_mask: attr.i(1)})], consts: {b: i32([0, 0]), e: i32([0, 0]), s: i32([1, -1])}},
  {name: 'Slice', nodes: [node('Slice', ['x', 'b', 'z'])], consts: {b: i32([0, 1, 2, 1]), z: i32([-1, 3, 3, 2])}},
  {name: 'GatherV2 channels', nodes: [node('GatherV2', ['x', 'i', 'ax'], {batch_dims: attr.i(0)})], consts: {i: i32([3, 0, 0]), ax: i32([3], [])}},
  {name: 'Gather rows', nodes: [node('Gather', ['x', 'i'])], consts: {i: i32([0, 0])}},
  {name: 'Split', nodes: [node('Split', ['ax', 'x'], {num_split: attr.i(2)}, 's'), node('Sub', ['s', 's:1'])], consts: {ax: i32([3], [])}},
  {name: 'SplitV', nodes: [node('SplitV', ['x', 'z', 'ax'], {num_split: attr.i(2)}, 's'), node('Mean', ['s:1', 'r'], {keep_dims: attr.b(true)}, 'm'), node('Add', ['s', 'm'])], consts: {z: i32([1, -1]), ax: i32([3], []), r: i32([3])}},
  // image
  {name: 'ResizeBilinear', nodes: [node('ResizeBilinear', ['x', 's'], {align_corners: attr.b(false), half_pixel_centers: attr.b(false)})], consts: {s: i32([9, 11])}},
  {name: 'ResizeBilinear half-pixel', nodes: [node('ResizeBilinear', ['x', 's'], {align_corners: attr.b(false), half_pixel_centers: attr.b(true)})], consts: {s: i32([9, 11])}},
  {name: 'ResizeBilinear align corners', nodes: [node('ResizeBilinear', ['x', 's'], {align_corners: attr.b(true), half_pixel_centers: attr.b(false)})], consts: {s: i32([9, 11])}},
  {name: 'ResizeNearestNeighbor', nodes: [node('ResizeNearestNeighbor', ['x', 's'], {align_corners: attr.b(false), half_pixel_centers: attr.b(false)})], consts: {s: i32([12, 12])}},
  {name: 'ResizeNearestNeighbor half-pixel', nodes: [node('ResizeNearestNeighbor', ['x', 's'], {align_corners: attr.b(false), half_pixel_centers: attr.b(true)})], consts: {s: i32([9, 13])}},
  // creation
  {name: 'ZerosLike and OnesLike', nodes: [node('OnesLike', ['x'], {}, 'o'), node('ZerosLike', ['x'], {}, 'z'), node('AddN', ['x', 'o', 'z'])]},
  {name: 'Fill and Range', nodes: [node('Fill', ['d', 'v'], {}, 'fl'), node('Range', ['s0', 'l', 'dl'], {Tidx: attr.type('DT_FLOAT')}, 'rg'), node('Mul', ['fl', 'rg'], {}, 'fr'), node('Add', ['x', 'fr'])], consts: {d: i32([1, 1, 1, C]), v: f([1.5], []), s0: f([0], []), l: f([C], []), dl: f([1], [])}},
  // dynamic shapes
  {name: 'TopKV2', nodes: [node('TopKV2', ['x', 'k'], {sorted: attr.b(true)}, 't'), node('Cast', ['t:1'], {DstT: attr.type('DT_FLOAT')}, 'ti'), node('Add', ['t', 'ti'])], consts: {k: i32([3], [])}},
  {name: 'Where', nodes: [node('Greater', ['x', 'c'], {}, 'g'), node('Where', ['g'], {T: attr.type('DT_BOOL')})], consts: {c: f([0.6], [])}},
  {name: 'NonMaxSuppressionV3', shape: [12], nodes: [node('NonMaxSuppressionV3', ['bx', 'x', 'mx', 'iou', 'st'])], consts: {bx: f(boxes(12), [12, 4]), mx: i32([5], []), iou: f([0.3], []), st: f([0.2], [])}},
  {name: 'NonMaxSuppressionV5', shape: [12], nodes: [node('NonMaxSuppressionV5', ['bx', 'x', 'mx', 'iou', 'st', 'sg'], {}, 'n'), node('Cast', ['n'], {DstT: attr.type('DT_FLOAT')}, 'ni'), node('Add', ['ni', 'n:1'])], consts: {bx: f(boxes(12), [12, 4]), mx: i32([6], []), iou: f([0.4], []), st: f([0.1], []), sg: f([0], [])}},
  // matrices
  {name: 'MatMul transpose_b', shape: [3, 5], nodes: [node('MatMul', ['x', 'w'], {transpose_a: attr.b(false), transpose_b: attr.b(true)})], consts: {w: f(values(20, 4), [4, 5])}},
  {name: '_FusedMatMul BiasAdd+Relu', shape: [3, 5], nodes: [node('_FusedMatMul', ['x', 'w', 'b'], {transpose_a: attr.b(false), transpose_b: attr.b(false), fused_ops: attr.strs(['BiasAdd', 'Relu']), num_args: attr.i(1)})], consts: {w: f(values(20, 4), [5, 4]), b: f(values(4, 6), [4])}},
  ...['BatchMatMul', 'BatchMatMulV2'].map((op) => ({name: `${op} adj_y`, shape: [2, 3, 5], nodes: [node(op, ['x', 'w'], {adj_x: attr.b(false), adj_y: attr.b(true)})], consts: {w: f(values(40, 8), [2, 4, 5])}})),
  {name: 'BatchMatMulV2 adj_x of two inputs', shape: [2, 5, 3], nodes: [node('Relu', ['x'], {}, 'r'), node('BatchMatMulV2', ['x', 'r'], {adj_x: attr.b(true), adj_y: attr.b(false)})]},
]

/** The same case with its input produced by a 1×1 convolution (a channels-first tensor inside). */
function behindConv(c: Case): GraphSpec {
  return {
    inputs: [{name: 'input', shape: X}],
    consts: {...c.consts, kconv: filt(1, 1, C, C, 11)},
    nodes: [node('Conv2D', ['input', 'kconv'], conv, 'x'), ...c.nodes],
  }
}

describe('graph-model ops match TF.js', () => {
  for (const c of CASES) {
    const variants: [string, GraphSpec][] = [['', {inputs: [{name: 'x', shape: c.shape ?? X}], consts: c.consts, nodes: c.nodes}]]
    if (!c.shape) variants.push([' after a convolution', behindConv(c)])
    for (const [suffix, spec] of variants) {
      it(`${c.name}${suffix}`, async () => {
        const dir = await tempDir()
        const file = await writeGraphModel(dir, spec)
        const {metrics} = await convertTfjs(file, path.join(dir, 'm.onnx'), {verify: {samples: 1}})
        const v = metrics.verify as VerifyReport
        expect(v.passed, JSON.stringify(v.outputs)).toBe(true)
      })
    }
  }

  it('every op in the table has a case here', () => {
    const covered = new Set(CASES.flatMap((c) => c.nodes.map((n) => n.op)))
    const structural = new Set(['Const', 'Placeholder', 'PlaceholderWithDefault', 'Identity', 'IdentityN', 'Snapshot', 'StopGradient', 'NoOp'])
    const missing = Object.keys(OP_LIST).filter((op) => !covered.has(op) && !structural.has(op))
    expect(missing).toEqual([])
  })
})
