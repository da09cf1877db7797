import {makeGraph, makeModel} from '../../onnx/build.js'
import type {ModelProto, NodeProto, TensorProto} from '../../onnx/proto.js'
import {minIrVersion} from '../../onnx/opset.js'
import type {GraphBuilder} from './builder.js'

/**
 * Keep only what the outputs depend on (constants folded away and unused layout helpers go), in
 * topological order, and wrap it in a model.
 */
export function assembleModel(b: GraphBuilder, name: string, opset: number, customOpDomain?: string): ModelProto {
  const producer = new Map<string, NodeProto>()
  for (const n of b.nodes) for (const o of n.output) producer.set(o, n)
  const inits = new Map<string, TensorProto>(b.initializers.map((t) => [t.name, t]))
  const keptNodes = new Set<NodeProto>()
  const keptInits = new Set<string>()
  const ordered: NodeProto[] = []
  const visit = (tensor: string): void => {
    if (!tensor) return
    if (inits.has(tensor)) {
      keptInits.add(tensor)
      return
    }
    const n = producer.get(tensor)
    if (!n || keptNodes.has(n)) return
    keptNodes.add(n)
    for (const i of n.input) visit(i)
    ordered.push(n)
  }
  for (const o of b.outputs) visit(o.name)
  const graph = makeGraph({
    name,
    node: ordered,
    input: b.inputs,
    output: b.outputs,
    initializer: b.initializers.filter((t) => keptInits.has(t.name)),
  })
  const opsets: Record<string, number> = {'': opset}
  if (customOpDomain && b.customOps.size) opsets[customOpDomain] = 1
  return makeModel(graph, opsets, minIrVersion(opset))
}
