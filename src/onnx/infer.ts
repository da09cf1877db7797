import {valueInfoShape} from './build.js'
import {attrInt, getAttribute} from './graph.js'
import {DataType} from './proto.js'
import type {GraphProto, TensorProto} from './proto.js'

/** What kiln knows statically about one value: its element type and, when declared, its shape. */
export interface ValueFacts {
  elemType?: number
  shape?: (number | string)[]
}

/**
 * Element types and declared shapes of the values visible in a graph (outer scopes included). Types
 * are propagated forward through the ops whose output type follows from their inputs, which is what
 * rewrites need to build constants of the right dtype when an exporter left out value_info.
 */
export class ScopeFacts {
  private readonly facts = new Map<string, ValueFacts>()
  readonly constants = new Map<string, TensorProto>()

  constructor(
    readonly graph: GraphProto,
    readonly parent?: ScopeFacts,
  ) {
    for (const vi of [...graph.input, ...graph.output, ...graph.valueInfo]) {
      const s = valueInfoShape(vi)
      if (s) this.facts.set(vi.name, {elemType: s.elemType || undefined, shape: s.shape})
    }
    for (const t of graph.initializer) {
      this.constants.set(t.name, t)
      this.facts.set(t.name, {elemType: t.dataType, shape: t.dims.map(Number)})
    }
    for (const node of graph.node) {
      if (node.opType === 'Constant' && node.domain === '') {
        const t = getAttribute(node, 'value')?.t
        if (t && node.output[0]) {
          this.constants.set(node.output[0], t)
          this.facts.set(node.output[0], {elemType: t.dataType, shape: t.dims.map(Number)})
        }
        continue
      }
      this.propagate(node.opType, node.input, node.output, node)
    }
  }

  private propagate(op: string, inputs: string[], outputs: string[], node: Parameters<typeof attrInt>[0]): void {
    const set = (name: string | undefined, elemType: number | undefined) => {
      if (!name || elemType === undefined) return
      const f = this.facts.get(name)
      if (f?.elemType) return
      this.facts.set(name, {...f, elemType})
    }
    const first = this.get(inputs[0] ?? '')?.elemType
    if (INT64_OUT.has(op)) return outputs.forEach((o) => set(o, DataType.INT64))
    if (BOOL_OUT.has(op)) return set(outputs[0], DataType.BOOL)
    if (op === 'Cast') return set(outputs[0], attrInt(node, 'to', 0) || undefined)
    if (op === 'CastLike') return set(outputs[0], this.get(inputs[1] ?? '')?.elemType)
    if (op === 'TopK') {
      set(outputs[0], first)
      return set(outputs[1], DataType.INT64)
    }
    if (op === 'MaxPool') {
      set(outputs[0], first)
      return set(outputs[1], DataType.INT64)
    }
    if (op === 'ConstantOfShape') return set(outputs[0], getAttribute(node, 'value')?.t?.dataType ?? DataType.FLOAT)
    if (op === 'Where') return set(outputs[0], this.get(inputs[1] ?? '')?.elemType)
    if (op === 'Split') return outputs.forEach((o) => set(o, first))
    if (SAME_AS_FIRST.has(op)) set(outputs[0], first)
  }

  get(name: string): ValueFacts | undefined {
    return this.facts.get(name) ?? this.parent?.get(name)
  }

  constant(name: string): TensorProto | undefined {
    return this.constants.get(name) ?? this.parent?.constant(name)
  }

  /** Rank when a shape is declared, else undefined. */
  rank(name: string): number | undefined {
    return this.get(name)?.shape?.length
  }
}

const INT64_OUT = new Set(['Shape', 'Size', 'ArgMax', 'ArgMin', 'NonZero', 'NonMaxSuppression'])
const BOOL_OUT = new Set(['Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf'])
/** Ops whose (first) output has the element type of their first input. */
const SAME_AS_FIRST = new Set(
  (
    'Abs Add AveragePool BatchNormalization Ceil Clip Concat Conv ConvTranspose Cos CumSum DepthToSpace Div Dropout Elu Erf Exp ' +
    'Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool HardSigmoid HardSwish Hardmax ' +
    'Identity InstanceNormalization LRN LayerNormalization LeakyRelu Log LogSoftmax MatMul Max Mean Min Mish Mod Mul Neg PRelu ' +
    'Pad Pow Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ' +
    'ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND Selu Sigmoid Sign Sin Slice Softmax Softplus Softsign ' +
    'SpaceToDepth Sqrt Squeeze Sub Sum Tanh Tile Transpose Unsqueeze Upsample'
  ).split(' '),
)
