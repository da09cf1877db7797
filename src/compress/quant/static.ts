/**
 * Static QDQ quantization of the main graph. Placement follows what onnxruntime fuses into QLinear
 * kernels: DequantizeLinear on every input of a quantized op, QuantizeLinear on its output, one
 * Q→DQ pair per tensor shared by all consumers; int8 weights (per channel along the output axis)
 * and int32 bias behind a DequantizeLinear. Data-movement ops (MaxPool, Reshape, Transpose…) take
 * their input's parameters so onnxruntime runs them on integers; a ReLU/Clip after a quantized op
 * is folded into the output's range; tensors that only feed the model's outputs stay in float.
 */
import {attrInt, attrFloat, walkGraph, walkGraphs, weights} from '../../onnx/graph.js'
import type {WeightRef} from '../../onnx/graph.js'
import {makeNode} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {makeTensor, setTensorData, tensorData, tensorToFloat32} from '../../onnx/tensor.js'
import type {IntType, QuantParams} from './math.js'
import {paramsForRange, quantizeWeight} from './math.js'
import {NameScope, consumersOf, nodeLabel, producersOf, removeUnusedWeights} from './graph-util.js'
import type {TensorMeta} from './graph-util.js'

/** Ops with weights whose integer kernels make quantization pay. */
export const WEIGHTED_OPS = new Set(['Conv', 'MatMul', 'Gemm'])
/** Ops onnxruntime runs on integers when wrapped in DQ/Q, with their own output range. */
const ARITH_OPS = new Set(['Add', 'Mul', 'Concat', 'AveragePool', 'GlobalAveragePool', 'Sigmoid', 'LeakyRelu'])
/** Ops that move data without changing values: the output reuses the input's parameters. */
const MOVE_OPS = new Set(['MaxPool', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Flatten', 'Resize', 'Slice', 'Split', 'Gather', 'DepthToSpace', 'SpaceToDepth'])
/** Elementwise activations that never decrease: max pooling commutes with them. */
const MONOTONE_OPS = new Set(['Relu', 'LeakyRelu', 'Clip'])
/** Ops onnxruntime's QDQ propagation moves a DequantizeLinear past. */
const DQ_PROPAGATING_OPS = new Set(['MaxPool', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Slice'])
/** Ops between a tensor and a graph output that still count as "the output layer". */
const OUTPUT_PATH_OPS = new Set([...MOVE_OPS, 'Concat', 'Identity', 'Softmax', 'Sigmoid', 'Cast'])

export interface StaticOptions {
  perChannel: boolean
  activations: IntType
  symmetricActivations: boolean
  reduceRange: boolean
  /** Node predicate: true = keep this node in float. */
  excluded: (node: NodeProto) => boolean
  /** Restrict which weighted op types are quantized (hardware-aware mixes). */
  weightedOps?: ReadonlySet<string>
  /** Quantize arithmetic and data-movement ops too (default true). */
  quantizeArith?: boolean
  /** Weighted nodes (by label) to keep in float, each with the reason to report. */
  keepFloat?: ReadonlyMap<string, string>
  /** Tensors the accuracy-aware fallback keeps in float (a weighted node reading one stays float). */
  fallback?: ReadonlySet<string>
}

export interface FloatNode {
  node: string
  opType: string
  reason: string
}

/** What is quantized in one graph (the main graph or an If/Loop body). */
export interface GraphPlan {
  graph: GraphProto
  /** Weights this graph can read: its own and its enclosing graphs'. */
  weights: Map<string, WeightRef>
  nodes: Set<NodeProto>
  /** Tensor → tensor whose parameters it shares. */
  shared: Map<string, string>
  /** ReLU/Clip nodes folded into the range of their output. */
  absorbed: Set<NodeProto>
  /** Quantized tensors in graph order. */
  tensors: string[]
  /** Nodes that keep reading the float tensor rather than its dequantized copy. */
  floatReaders: Set<NodeProto>
  /** Float activation → MaxPool pairs to run as MaxPool → activation (when the pool's output gets its range). */
  swaps: [NodeProto, NodeProto][]
}

export interface StaticPlan {
  graphs: GraphPlan[]
  /** Quantized nodes of every graph. */
  nodes: Set<NodeProto>
  /** Tensors needing a calibrated range. */
  calibrate: string[]
  leftFloat: FloatNode[]
}

/** Each graph's visible weights: its own, and those of the graphs enclosing it (inner names win). */
function scopedWeights(model: ModelProto): {graph: GraphProto; weights: Map<string, WeightRef>}[] {
  const all = [...weights(model)]
  return [...walkGraphs(model)].map(({graph, path}) => {
    const m = new Map<string, WeightRef>()
    const within = (p: string[]) => p.length <= path.length && p.every((x, i) => x === path[i])
    for (const w of all.filter((w) => within(w.path)).sort((x, y) => x.path.length - y.path.length)) m.set(w.name, w)
    return {graph, weights: m}
  })
}

/**
 * Decide what to quantize, in the main graph and in every If/Loop/Scan body. Pure: the model is not
 * changed. Tensor names computed in more than one graph are left alone: their types and ranges
 * could not be told apart.
 */
export function planStatic(model: ModelProto, meta: Map<string, TensorMeta>, opts: StaticOptions): StaticPlan {
  const made = new Map<string, number>()
  for (const {graph} of walkGraphs(model)) for (const n of graph.node) for (const o of n.output) if (o) made.set(o, (made.get(o) ?? 0) + 1)
  const isFloat = (name: string) => meta.get(name)?.type === 'float32' && (made.get(name) ?? 0) <= 1
  const leftFloat: FloatNode[] = []
  const graphs = scopedWeights(model).map(({graph, weights}) => planGraph(graph, weights, isFloat, opts, leftFloat))
  // Shared tensors too: a mix that keeps the op before a pool in float quantizes the pool's output on its own range.
  const calibrate = [...new Set(graphs.flatMap((g) => g.tensors))]
  return {graphs, nodes: new Set(graphs.flatMap((g) => [...g.nodes])), calibrate, leftFloat}
}

function planGraph(graph: GraphProto, w: Map<string, WeightRef>, isFloat: (name: string) => boolean, opts: StaticOptions, leftFloat: FloatNode[]): GraphPlan {
  const consumers = consumersOf(graph)
  const outputs = new Set(graph.output.map((o) => o.name))
  const nearOutput = new Set(outputs)
  for (const node of [...graph.node].reverse()) {
    if (OUTPUT_PATH_OPS.has(node.opType) && node.output.some((o) => nearOutput.has(o))) for (const i of node.input) if (i && !w.has(i)) nearOutput.add(i)
  }
  // Names the bodies of this graph's nodes read from it: they keep reading the float tensor.
  const readInside = new Set<string>()
  for (const {graph: body} of walkGraph(graph)) if (body !== graph) for (const n of body.node) for (const i of n.input) readInside.add(i)
  // onnxruntime moves a DequantizeLinear forward through these ops, onto every edge after them; an
  // edge into a body (an implicit input of If/Loop) makes it abort the process. Such ops stay float
  // and read the float tensor, so no DequantizeLinear ever reaches them.
  const leaks = new Set(readInside)
  const floatReaders = new Set<NodeProto>()
  for (const node of [...graph.node].reverse()) {
    if (node.domain === '' && DQ_PROPAGATING_OPS.has(node.opType) && node.output[0] && leaks.has(node.output[0])) {
      floatReaders.add(node)
      if (node.input[0]) leaks.add(node.input[0])
    }
  }
  const nodes = new Set<NodeProto>()
  const quantized = new Set<string>()
  const tensors: string[] = []
  const shared = new Map<string, string>()
  const absorbed = new Set<NodeProto>()
  const addTensor = (t: string) => {
    if (!quantized.has(t)) (quantized.add(t), tensors.push(t))
  }
  const arith = opts.quantizeArith !== false
  const asymmetric = !opts.symmetricActivations

  for (const node of graph.node) {
    const op = node.opType
    if (node.domain !== '' || !(WEIGHTED_OPS.has(op) || ARITH_OPS.has(op) || MOVE_OPS.has(op)) || floatReaders.has(node)) continue
    const floatOuts = node.output.filter((o) => o && isFloat(o))
    if (floatOuts.length === 0) continue
    if (opts.excluded(node)) {
      if (WEIGHTED_OPS.has(op)) leftFloat.push({node: nodeLabel(node), opType: op, reason: 'excluded'})
      continue
    }
    if (WEIGHTED_OPS.has(op)) {
      const keep = opts.keepFloat?.get(nodeLabel(node))
      if (keep) {
        leftFloat.push({node: nodeLabel(node), opType: op, reason: keep})
        continue
      }
      if (opts.weightedOps && !opts.weightedOps.has(op)) {
        leftFloat.push({node: nodeLabel(node), opType: op, reason: 'op type not quantized in the chosen mix'})
        continue
      }
      const weightIn = op === 'MatMul' ? node.input.find((i) => w.has(i)) : node.input[1]
      if (op !== 'MatMul' && (!weightIn || !w.has(weightIn) || w.get(weightIn)!.tensor.dataType !== DataType.FLOAT)) {
        leftFloat.push({node: nodeLabel(node), opType: op, reason: 'weight is computed at run time'})
        continue
      }
      if (op === 'Gemm' && (attrInt(node, 'transA', 0) !== 0 || attrFloat(node, 'alpha', 1) !== 1 || attrFloat(node, 'beta', 1) !== 1)) {
        leftFloat.push({node: nodeLabel(node), opType: op, reason: 'Gemm with transA/alpha/beta has no integer kernel'})
        continue
      }
      const acts = node.input.slice(0, op === 'Conv' || op === 'Gemm' ? 1 : 2).filter((i) => i && !w.has(i))
      if (acts.some((a) => !isFloat(a))) continue
      nodes.add(node)
      for (const a of acts) addTensor(a)
    } else if (ARITH_OPS.has(op)) {
      if (!arith) continue
      const acts = node.input.filter((i) => i && isFloat(i))
      // Integer Add/Mul/Concat only pay when their inputs already come quantized.
      if (acts.length === 0 || acts.some((a) => w.has(a)) || !acts.some((a) => quantized.has(a))) continue
      nodes.add(node)
      for (const a of acts) addTensor(a)
    } else {
      if (!arith || !quantized.has(node.input[0]!)) continue
      nodes.add(node)
    }
    for (const out of floatOuts) {
      if (nearOutput.has(out)) {
        if (WEIGHTED_OPS.has(op)) leftFloat.push({node: nodeLabel(node), opType: op, reason: 'output layer: its output stays float (inputs and weights quantized)'})
        continue
      }
      const next = consumers.get(out) ?? []
      // A pair no reader would use: every reader keeps the float tensor.
      if (next.length > 0 && next.every((c) => floatReaders.has(c.node))) continue
      const act = next.length === 1 ? next[0]!.node : undefined
      // Folding the activation leaves its name on the raw output: only when every reader gets the dequantized copy
      // (none reads it from a body, or through an op that keeps the float tensor).
      if (asymmetric && act && !MOVE_OPS.has(op) && isAbsorbable(act, w) && !nearOutput.has(act.output[0]!) && !leaks.has(act.output[0]!) && !opts.excluded(act)) {
        absorbed.add(act)
        addTensor(act.output[0]!)
        continue
      }
      if (MOVE_OPS.has(op)) shared.set(out, shared.get(node.input[0]!) ?? node.input[0]!)
      addTensor(out)
    }
  }
  // Float ReLU → MaxPool feeding an int8 op: onnxruntime would move the QuantizeLinear up through
  // the pool and run it on uint8 in NCHW, its slow path. MaxPool then ReLU computes the same (a
  // monotone activation commutes with max), and the QuantizeLinear then stops at the activation.
  const swaps: [NodeProto, NodeProto][] = []
  const producers = new Map(graph.node.flatMap((n) => n.output.map((o) => [o, n] as const)))
  for (const pool of graph.node) {
    if (pool.opType !== 'MaxPool' || pool.domain !== '' || nodes.has(pool) || pool.output.filter(Boolean).length !== 1 || !quantized.has(pool.output[0]!)) continue
    const act = producers.get(pool.input[0]!)
    const mid = act?.output[0]
    if (!act || !mid || act.domain !== '' || !MONOTONE_OPS.has(act.opType) || quantized.has(mid) || outputs.has(mid) || leaks.has(mid)) continue
    if ((consumers.get(mid) ?? []).length !== 1) continue
    swaps.push([act, pool])
  }
  return {graph, weights: w, nodes, shared, absorbed, tensors, floatReaders, swaps}
}

/** ReLU, or Clip with a floor of 0: quantizing to a range that starts at 0 does the same. */
function isAbsorbable(node: NodeProto, w: Map<string, WeightRef>): boolean {
  if (node.domain !== '') return false
  if (node.opType === 'Relu') return true
  if (node.opType !== 'Clip') return false
  const min = node.input[1] ? w.get(node.input[1]) : undefined
  return !!min && tensorToFloat32(min.tensor)[0] === 0
}

export interface ApplyResult {
  quantizedNodes: Record<string, number>
  qdqPairs: number
  /** Weighted nodes planned but left in float: their input has no calibrated range. */
  leftFloat: FloatNode[]
}

/**
 * Rewrite each planned graph with the given activation ranges (tensor → [min, max]). Tensors
 * without a range (outliers kept in float by the caller, an If branch calibration never took) are
 * skipped, and a weighted node whose input has none stays in float.
 */
export function applyStatic(model: ModelProto, plan: StaticPlan, ranges: Map<string, {min: number; max: number}>, opts: StaticOptions): ApplyResult {
  const names = new NameScope(model)
  const result: ApplyResult = {quantizedNodes: {}, qdqPairs: 0, leftFloat: []}
  for (const g of plan.graphs) applyGraph(g, names, ranges, opts, result)
  removeUnusedWeights(model)
  return result
}

function applyGraph(plan: GraphPlan, names: NameScope, ranges: Map<string, {min: number; max: number}>, opts: StaticOptions, result: ApplyResult): void {
  const {graph, weights: w} = plan
  const params = new Map<string, QuantParams>()
  const zpType = opts.activations === 'uint8' ? DataType.UINT8 : DataType.INT8
  for (const t of plan.tensors) {
    const src = plan.shared.get(t) ?? t
    const r = ranges.get(src)
    if (!r) continue
    params.set(t, params.get(src) ?? paramsForRange(r.min, r.max, opts.activations, opts.symmetricActivations))
  }
  const head: NodeProto[] = []
  const after = new Map<string, NodeProto[]>()
  const dqName = new Map<string, string>()
  for (const t of plan.tensors) {
    const p = params.get(t)
    if (!p) continue
    const scale = names.fresh(`${t}_scale`)
    const zp = names.fresh(`${t}_zero_point`)
    graph.initializer.push(makeTensor(scale, DataType.FLOAT, [], Float32Array.of(p.scale)))
    graph.initializer.push(makeTensor(zp, zpType, [], zpType === DataType.UINT8 ? Uint8Array.of(p.zeroPoint) : Int8Array.of(p.zeroPoint)))
    const q = names.fresh(`${t}_QuantizeLinear`)
    const dq = names.fresh(`${t}_DequantizeLinear`)
    const nodes = [makeNode('QuantizeLinear', [t, scale, zp], [q], {}, {name: q}), makeNode('DequantizeLinear', [q, scale, zp], [dq], {}, {name: dq})]
    dqName.set(t, dq)
    result.qdqPairs++
    after.set(t, nodes)
  }
  for (const [act, pool] of plan.swaps) {
    if (!params.has(pool.output[0]!)) continue
    const [x, mid, y] = [act.input[0]!, act.output[0]!, pool.output[0]!]
    pool.input[0] = x
    pool.output[0] = mid
    act.input[0] = mid
    act.output[0] = y
    const [i, j] = [graph.node.indexOf(act), graph.node.indexOf(pool)]
    graph.node[i] = pool
    graph.node[j] = act
  }
  // Folded activations disappear: the producer writes the activation's output name directly.
  for (const act of plan.absorbed) {
    const out = act.output[0]!
    if (!params.has(out)) continue
    const producer = graph.node.find((n) => n.output.includes(act.input[0]!))!
    producer.output[producer.output.indexOf(act.input[0]!)] = out
    graph.node.splice(graph.node.indexOf(act), 1)
  }
  const counts = result.quantizedNodes
  const weightCache = new Map<string, string>()
  for (const node of plan.nodes) {
    if (!graph.node.includes(node)) continue
    if (!WEIGHTED_OPS.has(node.opType)) {
      counts[node.opType] = (counts[node.opType] ?? 0) + 1
      continue
    }
    const slots = node.opType === 'MatMul' ? node.input.map((i, s) => (w.has(i) ? s : -1)).filter((s) => s >= 0) : [1]
    const acts = node.input.slice(0, node.opType === 'MatMul' ? 2 : 1).filter((i) => i && !w.has(i))
    if (acts.some((a) => !params.has(a))) {
      const reason = acts.some((a) => opts.fallback?.has(a)) ? 'accuracy-aware fallback: its input stays float' : 'no calibrated range for its input (the calibration data never ran this part of the graph)'
      result.leftFloat.push({node: nodeLabel(node), opType: node.opType, reason})
      continue
    }
    counts[node.opType] = (counts[node.opType] ?? 0) + 1
    for (const slot of slots) {
      const ref = w.get(node.input[slot]!)!
      const dims = ref.tensor.dims.map(Number)
      const axis = !opts.perChannel || dims.length < 2 ? undefined : node.opType === 'Conv' ? 0 : node.opType === 'Gemm' ? (attrInt(node, 'transB', 0) ? 0 : 1) : slot === 1 ? dims.length - 1 : dims.length - 2
      const key = `${ref.name}|${axis}`
      let dq = weightCache.get(key)
      const qw = quantizeWeight(tensorToFloat32(ref.tensor), dims, axis, opts.reduceRange)
      if (!dq) {
        dq = names.fresh(`${ref.name}_DequantizeLinear`)
        const qn = names.fresh(`${ref.name}_quantized`)
        const sn = names.fresh(`${ref.name}_scale`)
        const zn = names.fresh(`${ref.name}_zero_point`)
        const sdims = axis === undefined ? [] : [dims[axis]!]
        graph.initializer.push(makeTensor(qn, DataType.INT8, dims, qw.data), makeTensor(sn, DataType.FLOAT, sdims, qw.scales), makeTensor(zn, DataType.INT8, sdims, qw.zeroPoints))
        head.push(makeNode('DequantizeLinear', [qn, sn, zn], [dq], axis === undefined ? {} : {axis}, {name: dq}))
        weightCache.set(key, dq)
      }
      node.input[slot] = dq
      if ((node.opType === 'Conv' || node.opType === 'Gemm') && node.input[2] && w.has(node.input[2])) {
        const xp = params.get(node.input[0]!)
        if (xp) quantizeBias(graph, node, w.get(node.input[2])!, xp.scale, qw.scales, names, head)
      }
    }
  }
  // Every reader of a quantized tensor in this graph now reads its dequantized copy. Pairs for
  // tensors this graph does not compute (its inputs, an enclosing graph's tensors) come first.
  for (const node of graph.node) if (!plan.floatReaders.has(node)) node.input = node.input.map((i) => dqName.get(i) ?? i)
  for (const [t, [q]] of after) q!.input[0] = t
  const produced = new Set(graph.node.flatMap((n) => n.output))
  const rebuilt: NodeProto[] = [...head]
  for (const [t, pair] of after) if (!produced.has(t)) rebuilt.push(...pair)
  for (const node of graph.node) {
    rebuilt.push(node)
    for (const o of node.output) if (after.has(o)) rebuilt.push(...after.get(o)!)
  }
  graph.node = rebuilt
  graph.valueInfo = []
}

function quantizeBias(graph: GraphProto, node: NodeProto, ref: WeightRef, xScale: number, wScales: Float32Array, names: NameScope, head: NodeProto[]): void {
  const b = tensorToFloat32(ref.tensor)
  const n = b.length
  const scales = new Float32Array(n)
  const q = new Int32Array(n)
  for (let c = 0; c < n; c++) {
    const s = xScale * (wScales.length === 1 ? wScales[0]! : wScales[c]!)
    scales[c] = s
    const v = Math.round(b[c]! / s)
    if (!Number.isFinite(v) || Math.abs(v) > 2 ** 31 - 1) return
    q[c] = v
  }
  const base = ref.name
  const qn = names.fresh(`${base}_quantized`)
  const sn = names.fresh(`${base}_scale`)
  const zn = names.fresh(`${base}_zero_point`)
  const dq = names.fresh(`${base}_DequantizeLinear`)
  graph.initializer.push(makeTensor(qn, DataType.INT32, [n], q), makeTensor(sn, DataType.FLOAT, [n], scales), makeTensor(zn, DataType.INT32, [n], new Int32Array(n)))
  head.push(makeNode('DequantizeLinear', [qn, sn, zn], [dq], {axis: 0}, {name: dq}))
  node.input[2] = dq
}

/** Ops between an int8 convolution and a Flatten that keep onnxruntime's channels-last layout going. */
const CHANNELS_LAST_PATH = new Set(['DequantizeLinear', 'QuantizeLinear', 'Relu', 'Clip', 'MaxPool'])

/**
 * Conv → … → Flatten → Gemm/MatMul with the convolution in int8: onnxruntime runs QLinearConv
 * channels-last (NHWC) and transposes back to NCHW for the Flatten. With two inference threads that
 * one transpose costs about as much as a convolution. Flattening the NHWC tensor instead, with the
 * weight's rows permuted to match, computes exactly the same products, and the Transpose inserted
 * before the Flatten cancels against onnxruntime's. Main graph; returns the Flattens rewritten.
 */
export function flattenChannelsLast(model: ModelProto, meta: Map<string, TensorMeta>): number {
  const graph = model.graph!
  const producers = producersOf(graph)
  const consumers = consumersOf(graph)
  const inits = new Map(graph.initializer.map((t) => [t.name, t]))
  const uses = (name: string) => consumers.get(name)?.length ?? 0
  const names = new NameScope(model)
  let rewritten = 0
  for (const flat of [...graph.node]) {
    if (flat.opType !== 'Flatten' || flat.domain !== '' || attrInt(flat, 'axis', 1) !== 1) continue
    // Back to an int8 Conv (its input dequantized), through QDQ pairs and layout-neutral ops. The
    // Flatten's input shape is that of the first original tensor on the way (Q/DQ keep shapes).
    let t = flat.input[0]!
    let shape: (number | string)[] | undefined
    let conv: NodeProto | undefined
    for (let hops = 0; hops < 8 && !conv; hops++) {
      shape ??= meta.get(t)?.shape
      const p = producers.get(t)
      if (!p || p.domain !== '') break
      if (p.opType === 'Conv') conv = p
      else if (CHANNELS_LAST_PATH.has(p.opType) && uses(p.output[0]!) === 1) t = p.input[0]!
      else break
    }
    if (!conv || producers.get(conv.input[0]!)?.opType !== 'DequantizeLinear' || shape?.length !== 4) continue
    const [, c, h, w] = shape as number[]
    if (![c, h, w].every((d) => typeof d === 'number' && d > 0) || h! * w! === 1) continue
    // Forward: the Flatten's only reader, through its own Q/DQ pair, is a Gemm or MatMul's first input.
    let out = flat.output[0]!
    let reader: {node: NodeProto; slot: number} | undefined
    for (let hops = 0; hops < 3; hops++) {
      const next = consumers.get(out)
      if (next?.length !== 1) break
      const r = next[0]!
      if ((r.node.opType === 'QuantizeLinear' || r.node.opType === 'DequantizeLinear') && r.slot === 0) out = r.node.output[0]!
      else {
        reader = r
        break
      }
    }
    if (!reader || reader.slot !== 0 || reader.node.domain !== '') continue
    const dense = reader.node
    const transB = dense.opType === 'Gemm' ? attrInt(dense, 'transB', 0) : dense.opType === 'MatMul' ? 0 : -1
    if (transB < 0 || (dense.opType === 'Gemm' && attrInt(dense, 'transA', 0) !== 0)) continue
    // The weight: an initializer read by this op alone, or through a DequantizeLinear whose scales
    // run along the output axis (or are one scale), which a permutation of the rows leaves alone.
    const bName = dense.input[1]!
    const dq = producers.get(bName)
    const weightName = dq?.opType === 'DequantizeLinear' ? dq.input[0]! : bName
    const weight = inits.get(weightName)
    if (!weight || uses(weightName) !== 1 || (dq && dq.opType !== 'DequantizeLinear') || (dq && uses(bName) !== 1)) continue
    const dims = weight.dims.map(Number)
    const kAxis = transB ? 1 : 0
    if (dims.length !== 2 || dims[kAxis] !== c! * h! * w!) continue
    if (dq) {
      const scale = inits.get(dq.input[1]!)
      const perTensor = scale !== undefined && scale.dims.map(Number).reduce((a, b) => a * b, 1) === 1
      if (!perTensor && attrInt(dq, 'axis', 1) !== 1 - kAxis) continue
    }
    const stored = tensorData(weight)
    if (stored instanceof BigInt64Array || stored instanceof BigUint64Array) continue
    const data = stored as Float32Array
    const permuted = new (data.constructor as new (n: number) => Float32Array)(data.length)
    const n = dims[1 - kAxis]!
    const hw = h! * w!
    // Row (c, y, x) of the NCHW flattening becomes row (y, x, c) of the NHWC one.
    for (let ch = 0; ch < c!; ch++) {
      for (let p = 0; p < hw; p++) {
        const from = ch * hw + p
        const to = p * c! + ch
        if (kAxis === 0) permuted.set(data.subarray(from * n, (from + 1) * n), to * n)
        else for (let j = 0; j < n; j++) permuted[j * dims[1]! + to] = data[j * dims[1]! + from]!
      }
    }
    setTensorData(weight, permuted)
    const nhwc = names.fresh(`${flat.input[0]!}_nhwc`)
    graph.node.splice(graph.node.indexOf(flat), 0, makeNode('Transpose', [flat.input[0]!], [nhwc], {perm: [0, 2, 3, 1]}, {name: names.fresh(`${flat.name || 'Flatten'}_channels_last`)}))
    flat.input[0] = nhwc
    rewritten++
  }
  return rewritten
}
