/**
 * The TF ops the graph-model converter knows, as plain data: one entry per op names its category
 * (which selects the converter in `ops.ts`) and the parameters that converter needs. Adding an op
 * that fits a category is one line here.
 */
export type OpCategory =
  | 'graph'
  | 'unary'
  | 'binary'
  | 'convolution'
  | 'pooling'
  | 'normalization'
  | 'matrices'
  | 'reduction'
  | 'arg_reduction'
  | 'transformation'
  | 'slice_join'
  | 'image'
  | 'creation'
  | 'dynamic'

export interface OpDef {
  category: OpCategory
  /** ONNX op (or activation kind for `unary`). */
  onnx?: string
  /** The converter within the category, when it has several. */
  kind?: string
  /** For binary ops: a follow-up ONNX op (FloorDiv = Div then Floor on floats). */
  then?: string
  /** The op yields bool. */
  bool?: boolean
  /** x - floor(x / y) * y on floats (ONNX Mod follows the dividend's sign). */
  floorMod?: boolean
  /** (x - y)^2. */
  square?: boolean
  /** Fold at conversion time when both operands are constants. */
  fold?: (x: number, y: number) => number
  alpha?: number
  alphaAttr?: string
  depthwise?: boolean
  fused?: boolean
  batch?: boolean
  mirror?: boolean
  nearest?: boolean
  axisFirst?: boolean
  splitV?: boolean
  fill?: number
  v5?: boolean
}

const u = (onnx: string, extra: Partial<OpDef> = {}): OpDef => ({category: 'unary', onnx, ...extra})
const bin = (onnx: string, extra: Partial<OpDef> = {}): OpDef => ({category: 'binary', onnx, ...extra})
const red = (onnx: string): OpDef => ({category: 'reduction', onnx})
const t = (kind: string, extra: Partial<OpDef> = {}): OpDef => ({category: 'transformation', kind, ...extra})
const sj = (kind: string, extra: Partial<OpDef> = {}): OpDef => ({category: 'slice_join', kind, ...extra})

export const OP_LIST: Record<string, OpDef> = {
  // graph
  Const: {category: 'graph', kind: 'const'},
  Placeholder: {category: 'graph', kind: 'placeholder'},
  PlaceholderWithDefault: t('identity'),
  Identity: t('identity'),
  IdentityN: t('identity'),
  Snapshot: t('identity'),
  StopGradient: t('identity'),
  NoOp: {category: 'graph', kind: 'noop'},

  // unary element-wise and activations
  Relu: u('Relu'),
  Relu6: u('Relu6'),
  Elu: u('Elu', {alpha: 1}),
  Selu: u('Selu'),
  LeakyRelu: u('LeakyRelu', {alphaAttr: 'alpha', alpha: 0.2}),
  Sigmoid: u('Sigmoid'),
  Tanh: u('Tanh'),
  Softplus: u('Softplus'),
  Exp: u('Exp'),
  Log: u('Log'),
  Sqrt: u('Sqrt'),
  Rsqrt: u('Rsqrt'),
  Square: u('Square'),
  Neg: u('Neg'),
  Abs: u('Abs'),
  Floor: u('Floor'),
  Ceil: u('Ceil'),
  Round: u('Round'),
  Sign: u('Sign'),
  Reciprocal: u('Reciprocal'),
  Sin: u('Sin'),
  Cos: u('Cos'),
  Tan: u('Tan'),
  Asin: u('Asin'),
  Acos: u('Acos'),
  Atan: u('Atan'),
  Sinh: u('Sinh'),
  Cosh: u('Cosh'),
  Erf: u('Erf'),
  LogicalNot: u('Not'),
  IsNan: u('IsNaN', {bool: true}),
  Prelu: {category: 'unary', onnx: 'PRelu', kind: 'prelu'},
  Cast: {category: 'unary', kind: 'cast'},
  ClipByValue: {category: 'unary', kind: 'clip'},

  // binary element-wise (numpy broadcasting, like ONNX)
  Add: bin('Add', {fold: (x, y) => x + y}),
  AddV2: bin('Add', {fold: (x, y) => x + y}),
  BiasAdd: bin('Add'),
  Sub: bin('Sub', {fold: (x, y) => x - y}),
  Mul: bin('Mul', {fold: (x, y) => x * y}),
  RealDiv: bin('Div'),
  Div: bin('Div'),
  FloorDiv: bin('Div', {then: 'Floor', fold: (x, y) => Math.floor(x / y)}),
  FloorMod: bin('Mod', {floorMod: true}),
  Maximum: bin('Max', {fold: Math.max}),
  Minimum: bin('Min', {fold: Math.min}),
  Pow: bin('Pow'),
  SquaredDifference: bin('Sub', {square: true}),
  Greater: bin('Greater', {bool: true}),
  GreaterEqual: bin('GreaterOrEqual', {bool: true}),
  Less: bin('Less', {bool: true}),
  LessEqual: bin('LessOrEqual', {bool: true}),
  Equal: bin('Equal', {bool: true}),
  LogicalAnd: bin('And', {bool: true}),
  LogicalOr: bin('Or', {bool: true}),
  AddN: {category: 'binary', kind: 'addn'},

  // convolution and pooling (NHWC in the source, NCHW inside ONNX)
  Conv2D: {category: 'convolution'},
  _FusedConv2D: {category: 'convolution', fused: true},
  DepthwiseConv2dNative: {category: 'convolution', depthwise: true},
  FusedDepthwiseConv2dNative: {category: 'convolution', depthwise: true, fused: true},
  MaxPool: {category: 'pooling', onnx: 'MaxPool'},
  AvgPool: {category: 'pooling', onnx: 'AveragePool'},

  // normalization
  FusedBatchNorm: {category: 'normalization', kind: 'batchnorm'},
  FusedBatchNormV2: {category: 'normalization', kind: 'batchnorm'},
  FusedBatchNormV3: {category: 'normalization', kind: 'batchnorm'},
  Softmax: {category: 'normalization', kind: 'softmax', onnx: 'Softmax'},
  LogSoftmax: {category: 'normalization', kind: 'softmax', onnx: 'LogSoftmax'},

  // matrices
  MatMul: {category: 'matrices'},
  _FusedMatMul: {category: 'matrices', fused: true},
  BatchMatMul: {category: 'matrices', batch: true},
  BatchMatMulV2: {category: 'matrices', batch: true},

  // reductions
  Mean: red('ReduceMean'),
  Sum: red('ReduceSum'),
  Max: red('ReduceMax'),
  Min: red('ReduceMin'),
  Prod: red('ReduceProd'),
  All: red('ReduceMin'),
  Any: red('ReduceMax'),
  ArgMax: {category: 'arg_reduction', onnx: 'ArgMax'},
  ArgMin: {category: 'arg_reduction', onnx: 'ArgMin'},

  // transformations
  Reshape: t('reshape'),
  Squeeze: t('squeeze'),
  ExpandDims: t('expandDims'),
  Transpose: t('transpose'),
  Pad: t('pad'),
  PadV2: t('pad'),
  MirrorPad: t('pad', {mirror: true}),
  Shape: t('shape'),
  Tile: t('tile'),

  // slicing and joining
  ConcatV2: sj('concat'),
  Concat: sj('concat', {axisFirst: true}),
  Pack: sj('pack'),
  Unpack: sj('unpack'),
  StridedSlice: sj('stridedSlice'),
  Slice: sj('slice'),
  GatherV2: sj('gather'),
  Gather: sj('gather'),
  Split: sj('split'),
  SplitV: sj('split', {splitV: true}),

  // image
  ResizeBilinear: {category: 'image'},
  ResizeNearestNeighbor: {category: 'image', nearest: true},

  // creation
  Fill: {category: 'creation', kind: 'fill'},
  ZerosLike: {category: 'creation', kind: 'like', fill: 0},
  OnesLike: {category: 'creation', kind: 'like', fill: 1},
  Range: {category: 'creation', kind: 'range'},

  // dynamic shapes (TF.js runs these with executeAsync)
  TopKV2: {category: 'dynamic', kind: 'topk'},
  Where: {category: 'dynamic', kind: 'where'},
  NonMaxSuppressionV3: {category: 'dynamic', kind: 'nms'},
  NonMaxSuppressionV5: {category: 'dynamic', kind: 'nms', v5: true},
}
