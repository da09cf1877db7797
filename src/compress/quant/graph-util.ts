/**
 * Graph helpers for quantization passes: weights by name (initializers and Constant nodes, any
 * graph), fresh tensor names, dead-weight removal, and onnxruntime sessions on in-memory models.
 */
import {KilnError} from '../../errors.js'
import {walkGraphs, weights} from '../../onnx/graph.js'
import type {WeightRef} from '../../onnx/graph.js'
import {modelToBytes} from '../../onnx/model.js'
import {ValueInfoProtoSchema, create} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {loadOrt} from '../../runtime/ort.js'
import type {Ort} from '../../runtime/ort.js'
import type {HardwareProfile} from '../../stages/types.js'

/** Weights by tensor name. A name defined twice (two subgraphs) keeps the first; lookups stay scoped by callers. */
export function weightIndex(model: ModelProto): Map<string, WeightRef> {
  const map = new Map<string, WeightRef>()
  for (const w of weights(model)) if (!map.has(w.name)) map.set(w.name, w)
  return map
}

/** Every tensor name used anywhere (node inputs/outputs, graph I/O, initializers), for fresh names. */
export class NameScope {
  private readonly used = new Set<string>()
  constructor(model: ModelProto) {
    for (const {graph} of walkGraphs(model)) {
      for (const n of graph.node) {
        for (const x of [...n.input, ...n.output]) this.used.add(x)
        if (n.name) this.used.add(n.name)
      }
      for (const t of graph.initializer) this.used.add(t.name)
      for (const v of [...graph.input, ...graph.output]) this.used.add(v.name)
    }
  }
  fresh(base: string): string {
    let name = base
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`
    this.used.add(name)
    return name
  }
}

/**
 * Remove initializers and Constant nodes nothing reads any more (a replaced float weight), in every
 * graph. A subgraph may read an outer name implicitly, so uses are counted over the whole model.
 */
export function removeUnusedWeights(model: ModelProto): number {
  const used = new Set<string>()
  for (const {graph} of walkGraphs(model)) {
    for (const n of graph.node) for (const i of n.input) used.add(i)
    for (const o of graph.output) used.add(o.name)
  }
  let removed = 0
  for (const {graph} of walkGraphs(model)) {
    const inputs = new Set(graph.input.map((i) => i.name))
    const keep = graph.initializer.filter((t) => used.has(t.name) || inputs.has(t.name))
    removed += graph.initializer.length - keep.length
    graph.initializer = keep
    const nodes = graph.node.filter((n) => n.opType !== 'Constant' || n.output.some((o) => used.has(o)))
    removed += graph.node.length - nodes.length
    graph.node = nodes
  }
  return removed
}

/** Raise (never lower) the default-domain opset import; adds a domain import when missing. */
export function ensureOpsetImport(model: ModelProto, domain: string, version: number): void {
  const entry = model.opsetImport.find((o) => (o.domain === 'ai.onnx' ? '' : o.domain) === domain)
  if (entry) {
    if (Number(entry.version) < version) entry.version = BigInt(version)
  } else {
    model.opsetImport.push({...model.opsetImport[0]!, domain, version: BigInt(version)})
  }
}

/** Session options for a profile with no undefined fields (onnxruntime-node rejects them). */
export function ortOptions(profile: Partial<HardwareProfile> | undefined, optimization: 'disabled' | 'basic' | 'extended' | 'all' = 'all'): Ort.InferenceSession.SessionOptions {
  const o: Ort.InferenceSession.SessionOptions = {
    logSeverityLevel: 3,
    executionProviders: profile?.providers ?? ['cpu'],
    graphOptimizationLevel: profile?.graphOptimizationLevel ?? optimization,
  }
  if (profile?.threads !== undefined) o.intraOpNumThreads = profile.threads
  if (profile?.interOpThreads !== undefined) o.interOpNumThreads = profile.interOpThreads
  if (profile?.executionMode) o.executionMode = profile.executionMode
  return o
}

/** A session on an in-memory model; a model onnxruntime refuses is a kiln bug here, said plainly. */
export async function sessionFor(model: ModelProto | Uint8Array, profile?: Partial<HardwareProfile>, optimization?: 'disabled' | 'basic' | 'extended' | 'all'): Promise<Ort.InferenceSession> {
  const ort = await loadOrt()
  const bytes = model instanceof Uint8Array ? model : modelToBytes(model)
  try {
    return await ort.InferenceSession.create(bytes, ortOptions(profile, optimization))
  } catch (error) {
    throw new KilnError(`onnxruntime cannot load the model: ${(error as Error).message}`, {
      code: 'E_QUANT_INVALID',
      cause: error,
      tryMessage: 'Exclude the node or op type named above (--exclude), or try another mode.',
    })
  }
}

export interface TensorMeta {
  type: string
  shape: (number | string)[]
}

/**
 * Type and shape of every tensor of the main graph, as onnxruntime infers them: a copy of the
 * model lists every node output as a graph output (with no type, which onnxruntime fills in).
 */
export async function inferMainGraphTypes(model: ModelProto): Promise<Map<string, TensorMeta>> {
  const copy = {...model, graph: {...model.graph!, output: [...model.graph!.output]}} as ModelProto
  const graph = copy.graph as GraphProto
  const seen = new Set(graph.output.map((o) => o.name))
  for (const n of graph.node) for (const o of n.output) if (o && !seen.has(o)) (seen.add(o), graph.output.push(create(ValueInfoProtoSchema, {name: o})))
  const session = await sessionFor(copy, {threads: 1}, 'disabled')
  const out = new Map<string, TensorMeta>()
  const meta = (session as unknown as {outputMetadata: {name: string; isTensor: boolean; type?: string; shape?: (number | string)[]}[]}).outputMetadata
  const inMeta = (session as unknown as {inputMetadata: {name: string; isTensor: boolean; type?: string; shape?: (number | string)[]}[]}).inputMetadata
  for (const m of [...meta, ...inMeta]) if (m.isTensor && m.type) out.set(m.name, {type: m.type, shape: m.shape ?? []})
  await session.release()
  return out
}

/** Consumers of each tensor name in one graph, with the input slot. */
export function consumersOf(graph: GraphProto): Map<string, {node: NodeProto; slot: number}[]> {
  const map = new Map<string, {node: NodeProto; slot: number}[]>()
  for (const node of graph.node) {
    node.input.forEach((name, slot) => {
      if (!name) return
      const list = map.get(name)
      if (list) list.push({node, slot})
      else map.set(name, [{node, slot}])
    })
  }
  return map
}

export function producersOf(graph: GraphProto): Map<string, NodeProto> {
  const map = new Map<string, NodeProto>()
  for (const node of graph.node) for (const o of node.output) if (o) map.set(o, node)
  return map
}

/** Node label for reports: its name, else op type and first output. */
export function nodeLabel(node: NodeProto): string {
  return node.name || `${node.opType}(${node.output[0] ?? ''})`
}
