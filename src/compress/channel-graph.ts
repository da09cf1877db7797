import {attrInt, attrInts, walkGraphs, weights} from '../onnx/graph.js'
import type {WeightRef} from '../onnx/graph.js'
import type {ModelProto, NodeProto} from '../onnx/proto.js'
import {elementCount, tensorData, tensorDims} from '../onnx/tensor.js'

/** Channel `j` of producer `g` (before groups are merged). */
export interface Chan {
  g: number
  j: number
}

/** A Conv/Gemm/MatMul whose output channels can be removed. */
export interface Producer {
  id: number
  node: NodeProto
  weight: WeightRef
  /** Axis of `weight` that indexes output channels. */
  channelAxis: number
  channels: number
}

/** Remove entries of a constant along `axis`: index k belongs to channel `chans[floor(k / spread)]`. */
export interface SliceOp {
  ref: WeightRef
  axis: number
  chans: (Chan | null)[]
  spread?: number
}

export interface ChannelAnalysis {
  producers: Producer[]
  /** Group of a producer: producers whose outputs must agree share a root. */
  root(id: number): number
  /** Groups (by root) that must stay whole, with the node that blocks them. */
  blocked: Map<number, {node: string; reason: string}>
  slices: SliceOp[]
  /** Depthwise convolutions whose `group` follows the kept channel count. */
  groupUpdates: {node: NodeProto; chans: (Chan | null)[]}[]
  /** Every tensor whose channels are tracked (their value_info shapes go stale). */
  tracked: string[]
}

/** How a tensor's channel axis maps to producers' channels. `null`: a channel from elsewhere, always kept. */
interface Origin {
  chans: (Chan | null)[]
  /** Number of axes after the channel axis (2 for NCHW). */
  tail: number
  /** Known rank, when it is. */
  rank?: number
  /** After Flatten of an N,C,... tensor: each channel spans a block of features. */
  flat?: boolean
}

const UNARY = new Set([
  'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'HardSigmoid', 'HardSwish', 'Elu', 'Selu', 'Celu', 'Softplus', 'Softsign', 'Gelu', 'Erf', 'Mish',
  'Abs', 'Neg', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Sign', 'Identity', 'Cast', 'ThresholdedRelu', 'Clip', 'Dropout',
])
const POOL = new Set(['MaxPool', 'AveragePool', 'LpPool', 'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool'])
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'PRelu'])

/**
 * Follow every Conv/Gemm/MatMul output through the main graph and record what removing its
 * channels would change. Nothing is modified here, so a graph that cannot be proven safe stays as it was.
 */
export function analyzeChannels(model: ModelProto): ChannelAnalysis {
  const graph = model.graph!
  const consts = new Map<string, WeightRef>()
  for (const ref of weights(model)) if (ref.graph === graph) consts.set(ref.name, ref)
  const uses = new Map<string, number>()
  const inSubgraph = new Set<string>()
  for (const {graph: g} of walkGraphs(model)) {
    for (const n of g.node) for (const i of n.input) if (i) uses.set(i, (uses.get(i) ?? 0) + 1)
    if (g !== graph) for (const n of g.node) for (const i of n.input) inSubgraph.add(i)
  }
  for (const o of graph.output) uses.set(o.name, (uses.get(o.name) ?? 0) + 1)
  /** A constant this analysis may rewrite: nothing else reads it. */
  const own = (name: string | undefined): WeightRef | undefined => (name && uses.get(name) === 1 ? consts.get(name) : undefined)

  const producers: Producer[] = []
  const parent: number[] = []
  const root = (id: number): number => {
    while (parent[id] !== id) id = parent[id] = parent[parent[id]!]!
    return id
  }
  const blockedById = new Map<number, {node: string; reason: string}>()
  const slices: SliceOp[] = []
  const groupUpdates: ChannelAnalysis['groupUpdates'] = []
  const origins = new Map<string, Origin>()

  const label = (n: NodeProto): string => n.name || n.opType
  const block = (o: Origin | undefined, node: string, reason: string): void => {
    for (const ch of o?.chans ?? []) if (ch && !blockedById.has(ch.g)) blockedById.set(ch.g, {node, reason})
  }
  /** Per-channel constant of an elementwise op: slice it, let it broadcast, or give up. */
  const broadcastConst = (node: NodeProto, name: string, o: Origin): boolean => {
    const ref = consts.get(name)
    if (!ref) return false
    const dims = tensorDims(ref.tensor)
    const axis = dims.length - 1 - o.tail
    if (elementCount(ref.tensor) === 1 || axis < 0 || dims[axis] === 1) return true
    if (o.flat || dims[axis] !== o.chans.length) return false
    const mine = own(name)
    if (!mine) return false
    slices.push({ref: mine, axis, chans: o.chans})
    return true
  }

  for (const node of graph.node) {
    const tracked = node.input.map((n) => (n ? origins.get(n) : undefined))
    const any = tracked.findIndex((t) => t !== undefined)
    let producedByConsumer = false
    if (any >= 0) {
      const out = consume(node, tracked)
      if (typeof out === 'string') for (const o of tracked) block(o, label(node), out)
      else if (out) {
        origins.set(node.output[0]!, out)
        producedByConsumer = true
      }
    }
    if (!producedByConsumer) detectProducer(node)
  }

  function detectProducer(node: NodeProto): void {
    if (node.domain !== '' && node.domain !== 'ai.onnx') return
    const w = own(node.input[1])
    if (!w || !node.output[0]) return
    const dims = tensorDims(w.tensor)
    const bias = node.input[2] ? own(node.input[2]) : undefined
    if (node.input[2] && !bias) return
    let axis: number
    let tail: number
    if (node.opType === 'Conv' && dims.length >= 3 && attrInt(node, 'group', 1) === 1) {
      axis = 0
      tail = dims.length - 2
    } else if (node.opType === 'Gemm' && dims.length === 2) {
      axis = attrInt(node, 'transB', 0) ? 0 : 1
      tail = 0
    } else if (node.opType === 'MatMul' && dims.length === 2 && !node.input[2]) {
      axis = 1
      tail = 0
    } else return
    const channels = dims[axis]!
    if (bias) {
      const b = tensorDims(bias.tensor)
      if (elementCount(bias.tensor) !== 1 && b.at(-1) !== channels) return
      if (node.opType === 'Gemm' && b.length === 2 && b[0] !== 1) return
    }
    const id = producers.length
    producers.push({id, node, weight: w, channelAxis: axis, channels})
    parent.push(id)
    const chans = Array.from({length: channels}, (_, j) => ({g: id, j}))
    slices.push({ref: w, axis, chans})
    if (bias && elementCount(bias.tensor) !== 1) slices.push({ref: bias, axis: tensorDims(bias.tensor).length - 1, chans})
    origins.set(node.output[0], {chans, tail, rank: node.opType === 'Conv' ? dims.length : node.opType === 'Gemm' ? 2 : undefined})
  }

  /** What a node does with tracked channels: the output's origin, undefined (terminal), or why it blocks. */
  function consume(node: NodeProto, tracked: (Origin | undefined)[]): Origin | undefined | string {
    const op = node.domain === '' || node.domain === 'ai.onnx' ? node.opType : `${node.domain}.${node.opType}`
    const o = tracked.find((t) => t !== undefined)!
    const first = tracked[0]
    const extraOutputs = node.output.slice(1).some((x) => x && (uses.get(x) ?? 0) > 0)
    if (UNARY.has(op) || POOL.has(op)) {
      if (!first || tracked.slice(1).some((t) => t)) return `(${op}) mixes the channels with another input`
      if (POOL.has(op) && (first.flat || first.tail === 0)) return `(${op}) pools a tensor with no spatial axes`
      if (extraOutputs && op !== 'Dropout') return `(${op}) has a second output`
      return first
    }
    if (op === 'BatchNormalization' || op === 'InstanceNormalization') {
      if (!first || first.flat || tracked.slice(1).some((t) => t) || extraOutputs) return `(${op}) is not in inference form`
      const params = node.input.slice(1, op === 'BatchNormalization' ? 5 : 3)
      const refs = params.map((p) => own(p))
      if (refs.some((r) => !r || tensorDims(r.tensor)[0] !== first.chans.length)) return `(${op}) has shared or non-constant parameters`
      for (const r of refs) slices.push({ref: r!, axis: 0, chans: first.chans})
      return first
    }
    if (ELEMENTWISE.has(op)) {
      const live = tracked.filter((t): t is Origin => t !== undefined)
      const base = live[0]!
      for (const t of live.slice(1)) {
        if (t.tail !== base.tail || !!t.flat !== !!base.flat || t.chans.length !== base.chans.length) return `(${op}) combines tensors whose channels do not line up`
        base.chans.forEach((a, c) => {
          const b = t.chans[c]
          if (!a && !b) return
          if (!a || !b || a.j !== b.j) {
            block({chans: [a, b], tail: 0}, label(node), `(${op}) adds channels that must stay aligned with another branch`)
            return
          }
          const ra = root(a.g)
          const rb = root(b.g)
          if (ra !== rb) parent[Math.max(ra, rb)] = Math.min(ra, rb)
        })
      }
      for (let i = 0; i < node.input.length; i++) {
        if (tracked[i] || !node.input[i]) continue
        if (!broadcastConst(node, node.input[i]!, base)) return `(${op}) applies an input kiln cannot slice per channel ('${node.input[i]}')`
      }
      const merged = base.chans.map((a, c) => a ?? live.map((t) => t.chans[c]).find((x) => x) ?? null)
      return {...base, chans: merged}
    }
    if (op === 'Concat') {
      if (tracked.some((t) => !t)) return '(Concat) joins channels from a tensor kiln does not track'
      const list = tracked as Origin[]
      const axis = attrInt(node, 'axis', 1)
      const fromEnd = axis < 0 ? -axis - 1 : list[0]!.rank !== undefined ? list[0]!.rank - 1 - axis : -1
      if (list.some((t) => t.tail !== fromEnd || t.flat)) return '(Concat) joins along an axis other than channels'
      return {chans: list.flatMap((t) => t.chans), tail: fromEnd, rank: list[0]!.rank}
    }
    if (op === 'Conv' || op === 'ConvTranspose') {
      if (!first || tracked.slice(1).some((t) => t) || first.flat) return `(${op}) reads the channels as weights`
      const w = own(node.input[1])
      if (!w) return `(${op}) has shared or non-constant weights`
      const dims = tensorDims(w.tensor)
      if (first.tail !== dims.length - 2) return `(${op}) input layout does not match`
      const group = attrInt(node, 'group', 1)
      if (group === 1) {
        slices.push({ref: w, axis: op === 'Conv' ? 1 : 0, chans: first.chans})
        return undefined
      }
      const bias = node.input[2] ? own(node.input[2]) : undefined
      if (op === 'Conv' && group === first.chans.length && dims[0] === group && dims[1] === 1 && (!node.input[2] || bias)) {
        slices.push({ref: w, axis: 0, chans: first.chans})
        if (bias) slices.push({ref: bias, axis: 0, chans: first.chans})
        groupUpdates.push({node, chans: first.chans})
        return first
      }
      return `(${op}) is a grouped convolution with ${group} groups`
    }
    if (op === 'Gemm' || op === 'MatMul') {
      if (!first || tracked[1] || (op === 'Gemm' && attrInt(node, 'transA', 0))) return `(${op}) reads the channels as weights`
      const w = own(node.input[1])
      if (!w || tensorDims(w.tensor).length !== 2) return `(${op}) has shared or non-constant weights`
      const axis = op === 'Gemm' && attrInt(node, 'transB', 0) ? 1 : 0
      if (first.flat) {
        const k = tensorDims(w.tensor)[axis]!
        if (k % first.chans.length !== 0) return `(${op}) input features are not a whole number per channel`
        slices.push({ref: w, axis, chans: first.chans, spread: k / first.chans.length})
        return undefined
      }
      if (first.tail !== 0) return `(${op}) contracts an axis other than channels`
      slices.push({ref: w, axis, chans: first.chans})
      return undefined
    }
    if (op === 'Flatten' || op === 'Reshape') {
      if (!first || tracked.slice(1).some((t) => t)) return `(${op}) has a tracked shape input`
      if (op === 'Flatten' && attrInt(node, 'axis', 1) !== 1) return '(Flatten) flattens at an axis other than 1'
      if (op === 'Reshape') {
        const shape = consts.get(node.input[1] ?? '')
        const s = shape ? Array.from(tensorData(shape.tensor) as BigInt64Array, Number) : []
        if (s.length !== 2 || s[1] !== -1 || s[0]! < 0) return '(Reshape) has a shape kiln cannot follow'
      }
      return {chans: first.chans, tail: 0, rank: 2, flat: first.flat || first.tail > 0}
    }
    if (op === 'Squeeze' || op === 'Unsqueeze') {
      if (!first || first.rank === undefined || first.flat) return `(${op}) changes the rank of a tensor of unknown rank`
      const axes = attrInts(node, 'axes') ?? (consts.get(node.input[1] ?? '') ? Array.from(tensorData(consts.get(node.input[1]!)!.tensor) as BigInt64Array, Number) : undefined)
      if (!axes) return `(${op}) has dynamic axes`
      const chanAxis = first.rank - 1 - first.tail
      if (op === 'Squeeze') {
        const norm = axes.map((a) => (a < 0 ? a + first.rank! : a))
        if (norm.some((a) => a <= chanAxis)) return '(Squeeze) removes an axis at or before channels'
        return {chans: first.chans, tail: first.tail - norm.length, rank: first.rank - norm.length}
      }
      const rank = first.rank + axes.length
      const norm = axes.map((a) => (a < 0 ? a + rank : a))
      if (norm.some((a) => a <= chanAxis)) return '(Unsqueeze) inserts an axis at or before channels'
      return {chans: first.chans, tail: rank - 1 - chanAxis, rank}
    }
    return `(${op}) consumes the channels and is not known to keep them aligned`
  }

  for (const [name, o] of origins) {
    if (graph.output.some((x) => x.name === name)) block(o, name, 'is a graph output whose shape would change')
    else if (inSubgraph.has(name)) block(o, name, 'is read inside a subgraph')
  }
  const blocked = new Map<number, {node: string; reason: string}>()
  for (const [id, info] of blockedById) if (!blocked.has(root(id))) blocked.set(root(id), info)
  return {producers, root, blocked, slices, groupUpdates, tracked: [...origins.keys()]}
}
