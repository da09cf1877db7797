import {KilnError} from '../../../errors.js'
import {DataType} from '../../../onnx/proto.js'
import type {Weight} from '../manifest.js'
import {GraphBuilder, TF_DTYPES, TO_NCHW} from '../builder.js'
import type {Val} from '../builder.js'
import {Attrs} from './attrs.js'
import type {TfNode} from './attrs.js'
import {OP_LIST} from './op-list.js'
import {converterFor} from './ops.js'
import {unsupportedError} from '../unsupported.js'

export interface InterfaceTensor {
  /** Name in the ONNX model: what TF.js users call it (signature key, else node name). */
  name: string
  /** Name to fetch or feed in the source model with TF.js. */
  source: string
  dtype: number
  /** Source (channels-last) shape, -1 for unknown dims. */
  shape: number[]
  /** Integer inputs take values in [0, intHigh) (Embedding indices). */
  intHigh?: number
}

export interface ConvertedGraph {
  builder: GraphBuilder
  inputs: InterfaceTensor[]
  outputs: InterfaceTensor[]
}

export interface GraphConvertOptions {
  nchw: boolean
  opset: number
  customOpDomain?: string
}

const ref = (s: string): {node: string; index: number} => {
  const m = /^(.*?)(?::(\d+))?$/.exec(s)!
  return {node: m[1]!, index: m[2] ? Number(m[2]) : 0}
}

function weightVal(b: GraphBuilder, name: string, w: Weight): Val {
  const data = w.dtype === 'int32' ? (w.data as Int32Array) : w.data
  return b.constant(name, data, w.shape)
}

/** The source graph's outputs: the signature's when present, else nodes nobody consumes. */
function findOutputs(nodes: TfNode[], signature: any): string[] {
  const sigOut = signature?.outputs ? Object.values(signature.outputs).map((o: any) => ref(o.name).node) : []
  if (sigOut.length) return sigOut
  const consumed = new Set(nodes.flatMap((n) => (n.input ?? []).map((i) => ref(i.replace(/^\^/, '')).node)))
  return nodes.filter((n) => !consumed.has(n.name) && n.op !== 'Const' && n.op !== 'NoOp' && n.op !== 'Placeholder').map((n) => n.name)
}

/** Interface names as TF.js reports them: the signature's keys (without ':0'), else node names. */
function interfaceNames(signature: any): (node: string, side: 'inputs' | 'outputs') => string {
  return (node, side) => {
    const entry = Object.entries(signature?.[side] ?? {}).find(([, v]: [string, any]) => ref(v.name).node === node)
    return entry ? ref(entry[0]).node : node
  }
}

/** Convert a TF.js graph model (`modelTopology.node`) to ONNX nodes. */
export function convertGraphModel(topology: any, signature: any, weights: Map<string, Weight>, options: GraphConvertOptions): ConvertedGraph {
  const nodes: TfNode[] = topology.node
  const byName = new Map(nodes.map((n) => [n.name, n]))
  const outputNames = findOutputs(nodes, signature)
  const publicName = interfaceNames(signature)

  // Order the nodes the outputs depend on (the JSON's order is not guaranteed topological).
  const order: TfNode[] = []
  const state = new Map<string, 1 | 2>()
  const visit = (name: string): void => {
    const n = byName.get(name)
    if (!n) throw new KilnError(`graph model refers to node '${name}', which it does not define`, {code: 'E_TFJS_GRAPH', tryMessage: 'The model.json is damaged; re-export it.'})
    if (state.get(name) === 2) return
    if (state.get(name) === 1) throw new KilnError(`graph model has a cycle through '${name}' (control flow is not supported)`, {code: 'E_TFJS_UNSUPPORTED'})
    state.set(name, 1)
    const stack = (n.input ?? []).filter((i) => !i.startsWith('^')).map((i) => ref(i).node)
    for (const i of stack) visit(i)
    state.set(name, 2)
    order.push(n)
  }
  for (const o of outputNames) visit(o)

  const unknown = new Map<string, number>()
  for (const n of order) if (!OP_LIST[n.op]) unknown.set(n.op, (unknown.get(n.op) ?? 0) + 1)
  if (unknown.size && !options.customOpDomain) throw unsupportedError('op', unknown)

  const b = new GraphBuilder(options.opset)
  const inputs: InterfaceTensor[] = []
  const placeholders = order.filter((n) => n.op === 'Placeholder')
  for (const p of placeholders) b.reserve(publicName(p.name, 'inputs'))
  for (const o of outputNames) b.reserve(publicName(o, 'outputs'))

  const values = new Map<string, Val>()
  const get = (r: string): Val => {
    const {node, index} = ref(r)
    const v = values.get(`${node}:${index}`)
    if (!v) throw new KilnError(`node output '${r}' was not produced`, {code: 'E_TFJS_GRAPH'})
    return v
  }
  for (const n of order) {
    const attrs = new Attrs(n)
    const hint = outputNames.includes(n.name) ? `${n.name}_out` : n.name
    let outs: Val[]
    if (n.op === 'Const') {
      const w = weights.get(n.name)
      if (!w) throw new KilnError(`constant '${n.name}' has no entry in the weights manifest`, {code: 'E_TFJS_MANIFEST', tryMessage: 'The model.json and its shards do not match; re-export the model.'})
      outs = [weightVal(b, n.name, w)]
    } else if (n.op === 'Placeholder') {
      const dtype = attrs.dtype('dtype') ?? DataType.FLOAT
      const sigShape = signature?.inputs ? (Object.values(signature.inputs).find((s: any) => ref(s.name).node === n.name) as any)?.tensorShape?.dim?.map((d: any) => Number(d.size ?? -1)) : undefined
      const shape: number[] | undefined = attrs.shape('shape') ?? sigShape
      const nchw = options.nchw && shape?.length === 4
      const name = publicName(n.name, 'inputs')
      b.addInput(name, dtype, shape && (nchw ? TO_NCHW.map((p) => shape[p]!) : shape).map((d, i) => (d < 0 ? (i === 0 ? 'batch' : -1) : d)))
      inputs.push({name, source: n.name, dtype, shape: shape ?? []})
      outs = [{name, dtype, shape, nchw}]
    } else if (n.op === 'NoOp') {
      outs = []
    } else {
      const ins = (n.input ?? []).filter((i) => !i.startsWith('^')).map(get)
      const def = OP_LIST[n.op]
      if (!def) outs = [customOp(b, n, ins, options.customOpDomain!, hint)]
      else outs = converterFor(n.op, def)({node: n, attrs, inputs: ins, b, def, hint})
    }
    outs.forEach((v, i) => values.set(`${n.name}:${i}`, v))
  }

  const outputs: InterfaceTensor[] = []
  for (const o of outputNames) {
    const v = get(o)
    const node = byName.get(o)!
    const declared = new Attrs(node).dtype('T') ?? new Attrs(node).dtype('dtype') ?? v.dtype
    const dtype = declared === DataType.INT32 && v.dtype === DataType.INT64 ? DataType.INT32 : v.dtype === DataType.INT64 ? DataType.INT64 : declared
    const name = publicName(o, 'outputs')
    b.addOutput(name, v, dtype, options.nchw)
    outputs.push({name, source: o, dtype, shape: v.shape ?? []})
  }
  return {builder: b, inputs, outputs}
}

/** An op kept as-is in an external custom-op domain, for runtimes that implement it. */
function customOp(b: GraphBuilder, n: TfNode, ins: Val[], domain: string, hint: string): Val {
  b.customOps.set(n.op, (b.customOps.get(n.op) ?? 0) + 1)
  const attrs: Record<string, number | string | number[]> = {}
  for (const [k, a] of Object.entries(n.attr ?? {})) {
    if (a.i !== undefined) attrs[k] = Number(a.i)
    else if (a.f !== undefined) attrs[k] = {float: Number(a.f)} as never
    else if (a.b !== undefined) attrs[k] = a.b ? 1 : 0
    else if (a.s !== undefined) attrs[k] = Buffer.from(a.s, 'base64').toString('utf8')
    else if (a.type !== undefined) attrs[k] = TF_DTYPES[a.type] ?? 0
    else if (a.list?.i) attrs[k] = a.list.i.map(Number)
  }
  return b.op(n.op, ins.map((v) => b.logicalName(v)), attrs, {hint, dtype: ins[0]?.dtype ?? DataType.FLOAT}, domain)
}
