/**
 * Graph helpers for quantization passes: weights by name (initializers and Constant nodes, any
 * graph), fresh tensor names, dead-weight removal, and onnxruntime sessions on in-memory models.
 */
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import {makeNode} from '../../onnx/build.js'
import {allTensors, attrInt, walkGraphs, weights} from '../../onnx/graph.js'
import type {WeightRef} from '../../onnx/graph.js'
import {modelToBytes, writeModel} from '../../onnx/model.js'
import {DataType, ValueInfoProtoSchema, create} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {dtypeName, makeTensor} from '../../onnx/tensor.js'
import {loadOrt, sessionOptions} from '../../runtime/ort.js'
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

/** Session options for a profile, with `optimization` as the graph optimisation level unless the profile sets one. */
export function ortOptions(profile: Partial<HardwareProfile> | undefined, optimization: 'disabled' | 'basic' | 'extended' | 'all' = 'all'): Ort.InferenceSession.SessionOptions {
  return {...sessionOptions(profile), graphOptimizationLevel: profile?.graphOptimizationLevel ?? optimization}
}

/**
 * Weights above which a model goes to onnxruntime as a file with external data: from bytes, the
 * serialized model and onnxruntime's parse of it come on top of its own tensors (about 2.6× the
 * weights at the peak, measured on a 416 MB model); from a file, onnxruntime reads the weights once.
 */
const SESSION_FROM_FILE_BYTES = 128 * 2 ** 20

/**
 * A session on an in-memory model; a model onnxruntime refuses is a kiln bug here, said plainly.
 * A model with more than `fileAbove` bytes of weights is handed over as a file with external data.
 */
export async function sessionFor(model: ModelProto | Uint8Array, profile?: Partial<HardwareProfile>, optimization?: 'disabled' | 'basic' | 'extended' | 'all', fileAbove = SESSION_FROM_FILE_BYTES): Promise<Ort.InferenceSession> {
  const ort = await loadOrt()
  const options = ortOptions(profile, optimization)
  let dir: string | undefined
  try {
    if (model instanceof Uint8Array) return await ort.InferenceSession.create(model, options)
    let weights = 0
    for (const {tensor} of allTensors(model)) weights += tensor.rawData.length
    if (weights <= fileAbove) return await ort.InferenceSession.create(modelToBytes(model), options)
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-session-'))
    const file = path.join(dir, 'model.onnx')
    await writeModel(model, file, {externalData: 'always'})
    return await ort.InferenceSession.create(file, options)
  } catch (error) {
    throw new KilnError(`onnxruntime cannot load the model: ${(error as Error).message}`, {
      code: 'E_QUANT_INVALID',
      cause: error,
      tryMessage: 'Exclude the node or op type named above (--exclude), or try another mode.',
    })
  } finally {
    // onnxruntime has read the files (a mapping it keeps outlives the name).
    if (dir) await fsp.rm(dir, {recursive: true, force: true})
  }
}

export interface TensorMeta {
  type: string
  shape: (number | string)[]
}

/**
 * Type and shape of every tensor: the main graph's as onnxruntime infers them (every node output
 * handed out as a model output, with no type, which onnxruntime fills in), and the
 * types of tensors inside If/Loop/Scan bodies by each op's type rule (`subgraphTypes`).
 */
export async function inferTypes(model: ModelProto): Promise<Map<string, TensorMeta>> {
  const {session} = await exposedSession(model, model.graph!.node.flatMap((n) => n.output.filter(Boolean)), {threads: 1}, 'disabled')
  const out = new Map<string, TensorMeta>()
  const meta = (session as unknown as {outputMetadata: {name: string; isTensor: boolean; type?: string; shape?: (number | string)[]}[]}).outputMetadata
  const inMeta = (session as unknown as {inputMetadata: {name: string; isTensor: boolean; type?: string; shape?: (number | string)[]}[]}).inputMetadata
  for (const m of [...meta, ...inMeta]) if (m.isTensor && m.type) out.set(m.name, {type: m.type, shape: m.shape ?? []})
  await session.release()
  subgraphTypes(model, out)
  return out
}

/** Ops whose first output has the element type of their first input. */
const SAME_TYPE_OPS = new Set([
  'Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Relu', 'LeakyRelu', 'PRelu', 'Sigmoid', 'Tanh', 'Softmax', 'LogSoftmax', 'Clip', 'Abs', 'Neg', 'Exp', 'Log',
  'Sqrt', 'Pow', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Add', 'Sub', 'Mul', 'Div', 'Max', 'Min', 'Mean', 'Sum', 'Erf', 'HardSigmoid', 'HardSwish', 'Elu',
  'Selu', 'Softplus', 'Softsign', 'Sin', 'Cos', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'GlobalMaxPool', 'LpPool', 'ReduceMean', 'ReduceSum', 'ReduceMax',
  'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSumExp', 'ReduceSumSquare', 'BatchNormalization', 'InstanceNormalization', 'LayerNormalization',
  'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Concat', 'Slice', 'Gather', 'GatherElements', 'GatherND', 'Expand', 'Tile', 'Pad', 'Resize',
  'Upsample', 'DepthToSpace', 'SpaceToDepth', 'Identity', 'Dropout', 'CumSum', 'Range', 'TopK', 'ReverseSequence', 'ScatterElements', 'ScatterND',
])
/** Ops whose inputs all share one element type (the first that is known gives it). */
const SHARED_TYPE_OPS = new Set(['Add', 'Sub', 'Mul', 'Div', 'Max', 'Min', 'Mean', 'Sum', 'Concat', 'MatMul', 'Gemm', 'Conv', 'ConvTranspose'])
/** Ops whose every output has the element type of their first input. */
const ALL_SAME_TYPE_OPS = new Set(['Split', 'LSTM', 'GRU', 'RNN'])
const INT64_OPS = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin'])
const BOOL_OPS = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf'])

/**
 * Element types of the tensors inside subgraphs, which onnxruntime does not report: forward from
 * what the enclosing graphs know, by each op's type rule. A tensor no rule covers stays unknown,
 * and unknown is never taken for float.
 */
export function subgraphTypes(model: ModelProto, types: Map<string, TensorMeta>): void {
  const set = (name: string | undefined, type: string | undefined) => {
    if (name && type && !types.has(name)) types.set(name, {type, shape: []})
  }
  const visit = (graph: GraphProto, isMain: boolean) => {
    if (!isMain) for (const i of graph.input) set(i.name, i.type?.value.case === 'tensorType' ? dtypeName(i.type.value.value.elemType) : undefined)
    for (const node of graph.node) {
      for (const attr of node.attribute) {
        if (attr.g) visit(attr.g, false)
        for (const g of attr.graphs) visit(g, false)
      }
      if (isMain || node.domain !== '') continue
      const op = node.opType
      const first = SHARED_TYPE_OPS.has(node.opType) ? node.input.map((i) => types.get(i)?.type).find(Boolean) : types.get(node.input[0] ?? '')?.type
      if (op === 'Constant') set(node.output[0], constantType(node))
      else if (op === 'Cast') set(node.output[0], dtypeName(attrInt(node, 'to', 0)))
      else if (op === 'CastLike') set(node.output[0], types.get(node.input[1] ?? '')?.type)
      else if (op === 'Where') set(node.output[0], types.get(node.input[1] ?? '')?.type)
      else if (op === 'ConstantOfShape') set(node.output[0], dtypeName(node.attribute.find((a) => a.name === 'value')?.t?.dataType ?? DataType.FLOAT))
      else if (INT64_OPS.has(op)) set(node.output[0], 'int64')
      else if (BOOL_OPS.has(op)) set(node.output[0], 'bool')
      else if (ALL_SAME_TYPE_OPS.has(op)) for (const o of node.output) set(o, first)
      else if (SAME_TYPE_OPS.has(op)) set(node.output[0], first)
      else if (op === 'If') {
        const then = node.attribute.find((a) => a.name === 'then_branch')?.g
        node.output.forEach((o, i) => set(o, types.get(then?.output[i]?.name ?? '')?.type))
      }
    }
  }
  if (model.graph) visit(model.graph, true)
}

/** A Constant node's element type, whichever of its value attributes it uses. */
function constantType(node: NodeProto): string | undefined {
  const a = node.attribute[0]
  if (!a) return undefined
  if (a.t) return dtypeName(a.t.dataType)
  if (a.name === 'value_float' || a.name === 'value_floats') return 'float32'
  if (a.name === 'value_int' || a.name === 'value_ints') return 'int64'
  return undefined
}

/** Ops whose bodies can hand a tensor out: If (either branch), Loop and Scan (as an extra scan output). */
const EXPOSING_OPS = new Set(['If', 'Loop', 'Scan'])

/**
 * Edits the model in place so that each named tensor is a model output (see {@link exposedSession});
 * `undo` puts it back as it was.
 */
function expose(model: ModelProto, tensors: readonly string[]): {outputs: Map<string, string>; undo: () => void} {
  // Where each tensor is computed, and which node (in which graph) owns each body.
  const home = new Map<string, GraphProto>()
  const owner = new Map<GraphProto, {node: NodeProto; attr: string; parent: GraphProto}>()
  const walk = (graph: GraphProto) => {
    for (const i of graph.input) home.set(i.name, graph)
    for (const node of graph.node) {
      for (const o of node.output) if (o) home.set(o, graph)
      for (const attr of node.attribute) if (attr.g) (owner.set(attr.g, {node, attr: attr.name, parent: graph}), walk(attr.g))
    }
  }
  walk(model.graph!)
  const names = new NameScope(model)
  // Lists are replaced by edited copies; the originals go back in place when done.
  const undo: (() => void)[] = []
  const copied = new Set<object>()
  const list = <T extends object, K extends keyof T>(obj: T, key: K): T[K] => {
    if (!copied.has(obj[key] as object)) {
      const old = obj[key]
      undo.push(() => (obj[key] = old))
      obj[key] = [...(old as unknown[])] as T[K]
      copied.add(obj[key] as object)
    }
    return obj[key]
  }
  // Each graph's output names, kept as outputs are added: thousands of tensors may be handed out.
  const listed = new Map<GraphProto, Set<string>>()
  const isOutput = (graph: GraphProto, name: string) => {
    let names = listed.get(graph)
    if (!names) listed.set(graph, (names = new Set(graph.output.map((o) => o.name))))
    return names.has(name)
  }
  const addOutput = (graph: GraphProto, name: string) => {
    isOutput(graph, name)
    listed.get(graph)!.add(name)
    ;(list(graph, 'output') as GraphProto['output']).push(create(ValueInfoProtoSchema, {name}))
  }
  const reach = (name: string, graph: GraphProto): string | undefined => {
    const up = owner.get(graph)
    if (!up) {
      if (!isOutput(graph, name)) addOutput(graph, name)
      return name
    }
    const {node, attr, parent} = up
    if (!EXPOSING_OPS.has(node.opType) || node.domain !== '' || isOutput(graph, name)) return undefined
    const out = names.fresh(`${name}_exposed`)
    let inner = name
    if (graph.input.some((i) => i.name === name)) {
      // A body's own input (a Loop's carried value) goes out through a copy.
      inner = names.fresh(`${name}_copy`)
      ;(list(graph, 'node') as NodeProto[]).push(makeNode('Identity', [name], [inner], {}, {name: inner}))
    }
    addOutput(graph, inner)
    ;(list(node, 'output') as string[]).push(out)
    for (const other of node.attribute) {
      if (node.opType !== 'If' || other.name === attr || !other.g) continue
      const empty = names.fresh(`${name}_not_taken`)
      ;(list(other.g, 'node') as NodeProto[]).push(makeNode('Constant', [], [empty], {value: makeTensor(empty, DataType.FLOAT, [0], new Float32Array(0))}, {name: empty}))
      addOutput(other.g, empty)
    }
    return reach(out, parent)
  }
  const restore = () => {
    for (const u of undo.reverse()) u()
  }
  const outputs = new Map<string, string>()
  try {
    for (const t of tensors) {
      const graph = home.get(t)
      const name = graph && reach(t, graph)
      if (name) outputs.set(t, name)
    }
  } catch (error) {
    restore()
    throw error
  }
  return {outputs, undo: restore}
}

/**
 * A session on the model with each named float tensor readable as a model output, wherever it is
 * computed. A tensor inside an If branch, a Loop or a Scan body is threaded out through its owner
 * node, level by level: an extra output of the body and of the node (the other If branch hands out
 * an empty tensor, so a branch that did not run yields no values; a Loop or Scan stacks its
 * iterations). Returns the session and, for each tensor, the output name to ask onnxruntime for;
 * tensors that cannot be reached are left out. No serialised copy is kept (a large model reaches
 * onnxruntime as a file, see {@link sessionFor}). The model is left as it was; nothing else may use
 * it until this returns.
 */
export async function exposedSession(model: ModelProto, tensors: readonly string[], profile?: Partial<HardwareProfile>, optimization?: 'disabled' | 'basic' | 'extended' | 'all'): Promise<{session: Ort.InferenceSession; outputs: Map<string, string>}> {
  const {outputs, undo} = expose(model, tensors)
  try {
    return {session: await sessionFor(model, profile, optimization), outputs}
  } finally {
    undo()
  }
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
