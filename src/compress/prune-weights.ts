import {ModelError} from '../errors.js'
import {toFloat16Array} from '../onnx/float16.js'
import {attrInt, weights} from '../onnx/graph.js'
import type {WeightRef} from '../onnx/graph.js'
import {DataType} from '../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto, TensorProto} from '../onnx/proto.js'
import {setTensorData, tensorDims, tensorToFloat32} from '../onnx/tensor.js'

/**
 * Which inputs of which ops are real weights. Only these are ever pruned or clustered: shape
 * tensors, biases, BatchNormalization statistics and anything else stay exact.
 */
const WEIGHT_INPUTS: Record<string, number[]> = {
  MatMul: [0, 1],
  Gemm: [0, 1],
  Conv: [1],
  ConvTranspose: [1],
  LSTM: [1, 2],
  GRU: [1, 2],
  RNN: [1, 2],
}

const RECURRENT = new Set(['LSTM', 'GRU', 'RNN'])
const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE])

/** One prunable weight tensor and the layer that uses it. */
export interface LayerWeight {
  /** Layer name: the consuming node's name, or `<op>_<index>` when the node has none. */
  layer: string
  /** The weight tensor's name. */
  name: string
  opType: string
  node: NodeProto
  /** Which input of `node` it feeds. */
  inputIndex: number
  tensor: TensorProto
  ref: WeightRef
  dims: number[]
  /** Axis that the layer reduces over (used by N:M): the K of a matmul, input channels of a conv. */
  reductionAxis: number
  /** Position in execution order (subgraph nodes ordered where their owner runs). */
  order: number
  /** Graph nesting path, `[]` for the main graph. */
  path: string[]
  /** The graph holding the consuming node. */
  graph: GraphProto
}

interface Scope {
  graph: GraphProto
  parent?: Scope
  weights: Map<string, WeightRef>
  producers: Map<string, NodeProto>
}

function makeScope(graph: GraphProto, byGraph: Map<GraphProto, WeightRef[]>, parent?: Scope): Scope {
  const w = new Map<string, WeightRef>()
  for (const ref of byGraph.get(graph) ?? []) w.set(ref.name, ref)
  const producers = new Map<string, NodeProto>()
  for (const n of graph.node) for (const o of n.output) if (o) producers.set(o, n)
  return {graph, parent, weights: w, producers}
}

/**
 * Ops that only move constant data. Exporters rebuild recurrent weights with them (Silero slices
 * `weight_ih` into gates and concatenates them back in ONNX order), so the real tensor sits behind.
 */
const MOVES: Record<string, (n: NodeProto) => string[]> = {
  Identity: (n) => [n.input[0]!],
  Slice: (n) => [n.input[0]!],
  Unsqueeze: (n) => [n.input[0]!],
  Squeeze: (n) => [n.input[0]!],
  Concat: (n) => n.input.filter(Boolean),
}

/**
 * The constant tensors a node input is made of: the weight itself, or (`followMoves`) the sources
 * behind Slice/Concat/Unsqueeze/Squeeze. Identity is always followed. Empty when any part is computed.
 */
function resolveWeights(scope: Scope, name: string, followMoves: boolean, depth = 0): WeightRef[] {
  if (depth > 32) return []
  for (let s: Scope | undefined = scope; s; s = s.parent) {
    const w = s.weights.get(name)
    if (w) return [w]
    const node = s.producers.get(name)
    if (!node) continue
    const move = MOVES[node.opType]
    if (!move || (!followMoves && node.opType !== 'Identity')) return []
    const parts = move(node).map((i) => resolveWeights(s, i, followMoves, depth + 1))
    return parts.some((p) => p.length === 0) ? [] : parts.flat()
  }
  return []
}

function reductionAxisOf(node: NodeProto, inputIndex: number, rank: number): number {
  switch (node.opType) {
    case 'MatMul':
      return inputIndex === 1 ? rank - 2 : rank - 1
    case 'Gemm': {
      const trans = attrInt(node, inputIndex === 1 ? 'transB' : 'transA', 0)
      return inputIndex === 1 ? (trans ? 1 : 0) : trans ? 0 : 1
    }
    case 'Conv':
      return 1
    case 'ConvTranspose':
      return 0
    default:
      // LSTM/GRU/RNN W [dirs, gates*H, input] and R [dirs, gates*H, H]: reduce over the last axis.
      return rank - 1
  }
}

/**
 * Every prunable weight in the model, in execution order: float tensors that feed the weight input
 * of MatMul, Gemm, Conv, ConvTranspose, LSTM, GRU or RNN, wherever they live (initializers, Constant
 * nodes, If/Loop bodies, reached directly or through Identity; recurrent weights also through the
 * Slice/Concat/Unsqueeze that re-order gates). A tensor shared by several layers is
 * listed once, under its first user.
 */
export function prunableWeights(model: ModelProto): LayerWeight[] {
  if (!model.graph) return []
  const byGraph = new Map<GraphProto, WeightRef[]>()
  for (const ref of weights(model)) {
    const list = byGraph.get(ref.graph)
    if (list) list.push(ref)
    else byGraph.set(ref.graph, [ref])
  }
  const out: LayerWeight[] = []
  const seen = new Set<TensorProto>()
  const counts = new Map<string, number>()
  let order = 0
  const visit = (graph: GraphProto, parent: Scope | undefined, path: string[]): void => {
    const scope = makeScope(graph, byGraph, parent)
    for (const node of graph.node) {
      const idx = counts.get(node.opType) ?? 0
      counts.set(node.opType, idx + 1)
      const inputs = WEIGHT_INPUTS[node.opType]
      if (inputs && (node.domain === '' || node.domain === 'ai.onnx')) {
        for (const i of inputs) {
          const name = node.input[i]
          if (!name) continue
          const recurrent = RECURRENT.has(node.opType)
          for (const ref of resolveWeights(scope, name, recurrent)) {
            if (seen.has(ref.tensor) || !FLOAT_TYPES.has(ref.tensor.dataType)) continue
            const dims = tensorDims(ref.tensor)
            if (dims.length < 2) continue
            seen.add(ref.tensor)
            out.push({
              layer: node.name || `${node.opType}_${idx}`,
              name: ref.name,
              opType: node.opType,
              node,
              inputIndex: i,
              tensor: ref.tensor,
              ref,
              dims,
              // A recurrent weight reached through gate slicing still reduces over its last axis.
              reductionAxis: recurrent ? dims.length - 1 : reductionAxisOf(node, i, dims.length),
              order: order++,
              path,
              graph,
            })
          }
        }
      }
      for (const attr of node.attribute) {
        const label = `${node.name || node.opType}.${attr.name}`
        if (attr.g) visit(attr.g, scope, [...path, label])
        attr.graphs.forEach((g, k) => visit(g, scope, [...path, `${label}[${k}]`]))
      }
    }
  }
  visit(model.graph, undefined, [])
  return out
}

/** A weight's values as a fresh float32 copy (never a view into the model's file buffer). */
export function readWeight(t: TensorProto): Float32Array {
  const data = tensorToFloat32(t)
  // float32 comes back as a view of the tensor's bytes; other types are already converted copies.
  return t.dataType === DataType.FLOAT ? data.slice() : data
}

/** Store float32 values back in the tensor's own data type. */
export function writeWeight(t: TensorProto, values: Float32Array, dims?: readonly number[]): void {
  if (t.dataType === DataType.FLOAT) setTensorData(t, values, dims)
  else if (t.dataType === DataType.FLOAT16) setTensorData(t, toFloat16Array(values), dims)
  else if (t.dataType === DataType.DOUBLE) setTensorData(t, Float64Array.from(values), dims)
  else throw new ModelError(`tensor '${t.name}': cannot store weights of this data type`)
}

/** Number of exact zeros. */
export function countZeros(values: ArrayLike<number>): number {
  let n = 0
  for (let i = 0; i < values.length; i++) if (values[i] === 0) n++
  return n
}

/**
 * Find layers by the names users give: the layer (node) name or the weight tensor name. Unknown
 * names are an error, so a typo never silently prunes everything.
 */
export function matchLayer(layers: LayerWeight[], key: string): LayerWeight | undefined {
  return layers.find((l) => l.layer === key || l.name === key)
}

/** How many node inputs (in any graph) and graph outputs read each tensor name. */
export function useCounts(model: ModelProto): Map<string, number> {
  const uses = new Map<string, number>()
  const visit = (graph: GraphProto): void => {
    for (const n of graph.node) {
      for (const i of n.input) if (i) uses.set(i, (uses.get(i) ?? 0) + 1)
      for (const a of n.attribute) {
        if (a.g) visit(a.g)
        for (const g of a.graphs) visit(g)
      }
    }
    for (const o of graph.output) uses.set(o.name, (uses.get(o.name) ?? 0) + 1)
  }
  if (model.graph) visit(model.graph)
  return uses
}

/** Remove a weight that nothing reads any more (its initializer, or its Constant node). */
export function dropWeight(ref: WeightRef): void {
  if (ref.kind === 'initializer') {
    ref.graph.initializer = ref.graph.initializer.filter((t) => t !== ref.tensor)
    ref.graph.input = ref.graph.input.filter((i) => i.name !== ref.name)
  } else ref.graph.node = ref.graph.node.filter((n) => n !== ref.node)
}

/** A name not yet used in the model, built from `base`. */
export function uniqueName(taken: Set<string>, base: string): string {
  let name = base
  for (let i = 1; taken.has(name); i++) name = `${base}_${i}`
  taken.add(name)
  return name
}

/** Every tensor and node name in the model, to pick new names from. */
export function takenNames(model: ModelProto): Set<string> {
  const names = new Set<string>()
  const visit = (graph: GraphProto): void => {
    for (const t of graph.initializer) names.add(t.name)
    for (const v of [...graph.input, ...graph.output, ...graph.valueInfo]) names.add(v.name)
    for (const n of graph.node) {
      names.add(n.name)
      for (const o of n.output) names.add(o)
      for (const a of n.attribute) {
        if (a.g) visit(a.g)
        for (const g of a.graphs) visit(g)
      }
    }
  }
  if (model.graph) visit(model.graph)
  return names
}
