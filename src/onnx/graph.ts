import {AttributeType} from './proto.js'
import type {AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto} from './proto.js'

/** A graph and where it sits: the main graph has path `[]`; a subgraph's path names node/attribute. */
export interface GraphRef {
  graph: GraphProto
  /** e.g. `['If_0.then_branch']`, outermost first. */
  path: string[]
  /** The node owning this subgraph (undefined for the main graph). */
  owner?: NodeProto
}

/** The main graph and every nested subgraph (If/Loop/Scan bodies, any GRAPH/GRAPHS attribute). */
export function* walkGraphs(model: ModelProto): Generator<GraphRef> {
  if (!model.graph) return
  yield* walkGraph(model.graph, [])
}

/** A graph and every subgraph nested in it, the graph itself first. */
export function* walkGraph(graph: GraphProto, path: string[] = [], owner?: NodeProto): Generator<GraphRef> {
  yield {graph, path, owner}
  for (const node of graph.node) {
    for (const attr of node.attribute) {
      const label = `${node.name || node.opType}.${attr.name}`
      if (attr.g) yield* walkGraph(attr.g, [...path, label], node)
      for (let i = 0; i < attr.graphs.length; i++) yield* walkGraph(attr.graphs[i]!, [...path, `${label}[${i}]`], node)
    }
  }
}

export interface NodeRef {
  node: NodeProto
  graph: GraphProto
  path: string[]
}

export function* allNodes(model: ModelProto): Generator<NodeRef> {
  for (const {graph, path} of walkGraphs(model)) for (const node of graph.node) yield {node, graph, path}
}

/** Where a weight tensor lives. */
export interface WeightRef {
  /** Tensor name: the initializer name, or the Constant node's output. */
  name: string
  tensor: TensorProto
  kind: 'initializer' | 'constant'
  graph: GraphProto
  path: string[]
  /** The Constant node, for `kind: 'constant'`. */
  node?: NodeProto
}

/**
 * Every weight tensor wherever it lives: initializers and Constant nodes (`value` attribute), in the
 * main graph and in every subgraph. Real exporters (Paddle2ONNX, Silero) keep all weights in Constant
 * nodes, often inside If/Loop bodies; code that only reads `graph.initializer` silently misses them.
 */
export function* weights(model: ModelProto): Generator<WeightRef> {
  for (const {graph, path} of walkGraphs(model)) {
    for (const tensor of graph.initializer) yield {name: tensor.name, tensor, kind: 'initializer', graph, path}
    for (const node of graph.node) {
      if (node.opType !== 'Constant' || (node.domain !== '' && node.domain !== 'ai.onnx')) continue
      const value = node.attribute.find((a) => a.name === 'value' && a.t)
      if (value?.t) yield {name: node.output[0] ?? value.t.name, tensor: value.t, kind: 'constant', graph, path, node}
    }
  }
}

/** Every TensorProto in the model: weights plus tensors in any other attribute. */
export function* allTensors(model: ModelProto): Generator<{tensor: TensorProto; path: string[]}> {
  for (const {graph, path} of walkGraphs(model)) {
    for (const tensor of graph.initializer) yield {tensor, path}
    for (const node of graph.node) {
      for (const attr of node.attribute) {
        if (attr.t) yield {tensor: attr.t, path}
        for (const t of attr.tensors) yield {tensor: t, path}
      }
    }
  }
  for (const info of model.trainingInfo ?? []) {
    for (const g of [info.initialization, info.algorithm]) if (g) for (const tensor of g.initializer) yield {tensor, path: ['training']}
  }
}

export function getAttribute(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name)
}

export function attrInt(node: NodeProto, name: string, fallback: number): number {
  const a = getAttribute(node, name)
  return a && a.type === AttributeType.INT ? Number(a.i) : fallback
}

export function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = getAttribute(node, name)
  return a && a.type === AttributeType.INTS ? a.ints.map(Number) : undefined
}

export function attrFloat(node: NodeProto, name: string, fallback: number): number {
  const a = getAttribute(node, name)
  return a && a.type === AttributeType.FLOAT ? a.f : fallback
}

export function attrString(node: NodeProto, name: string): string | undefined {
  const a = getAttribute(node, name)
  return a && a.type === AttributeType.STRING ? new TextDecoder().decode(a.s) : undefined
}

/** Producer (node by output name) and consumers (nodes by input name) of one graph. */
export function graphIndex(graph: GraphProto): {producer: Map<string, NodeProto>; consumers: Map<string, NodeProto[]>} {
  const producer = new Map<string, NodeProto>()
  const consumers = new Map<string, NodeProto[]>()
  for (const node of graph.node) {
    for (const o of node.output) if (o) producer.set(o, node)
    for (const i of node.input) {
      if (!i) continue
      const list = consumers.get(i)
      if (list) list.push(node)
      else consumers.set(i, [node])
    }
  }
  return {producer, consumers}
}
