/**
 * Float graph clean-up before quantization, the same ground onnxruntime's own pre-processing
 * covers: BatchNormalization folded into the Conv/Gemm before it, Identity and inference-time
 * Dropout removed. A quantizer that skips this places Q/DQ around a BatchNormalization that
 * onnxruntime would have folded, and the int8 model ends up slower than fp32.
 */
import {attrFloat, attrInt, walkGraphs} from '../onnx/graph.js'
import type {WeightRef} from '../onnx/graph.js'
import {DataType} from '../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../onnx/proto.js'
import {makeTensor, tensorToFloat32} from '../onnx/tensor.js'
import {NameScope, consumersOf, removeUnusedWeights, weightIndex} from './quant/graph-util.js'

export interface PreprocessReport {
  /** BatchNormalization nodes folded into the preceding Conv/Gemm. */
  foldedBatchNorm: number
  /** Identity/Dropout nodes removed. */
  removedNodes: number
  /** Conv pairs rescaled by cross-layer equalization (static mode). */
  equalizedPairs?: number
}

/** Pre-process a model in place. */
export function preprocessModel(model: ModelProto): PreprocessReport {
  const report: PreprocessReport = {foldedBatchNorm: 0, removedNodes: 0}
  const names = new NameScope(model)
  for (const {graph} of walkGraphs(model)) {
    report.removedNodes += removePassThrough(graph)
    report.foldedBatchNorm += foldBatchNorm(model, graph, names)
  }
  removeUnusedWeights(model)
  return report
}

function graphOutputNames(graph: GraphProto): Set<string> {
  return new Set(graph.output.map((o) => o.name))
}

/** Identity and Dropout (inference: identity on output 0) whose input is not a graph input of a subgraph output boundary. */
function removePassThrough(graph: GraphProto): number {
  const outputs = graphOutputNames(graph)
  let removed = 0
  for (const node of [...graph.node]) {
    const isDropout = node.opType === 'Dropout' && (node.output.length < 2 || !node.output[1])
    if (node.domain !== '' || (node.opType !== 'Identity' && !isDropout)) continue
    const from = node.input[0]
    const to = node.output[0]
    if (!from || !to || outputs.has(to)) continue
    for (const other of graph.node) other.input = other.input.map((i) => (i === to ? from : i))
    // Subgraphs may read `to` implicitly.
    for (const other of graph.node) for (const a of other.attribute) if (a.g) renameInSubgraph(a.g, to, from)
    graph.node.splice(graph.node.indexOf(node), 1)
    removed++
  }
  return removed
}

function renameInSubgraph(g: GraphProto, from: string, to: string): void {
  const local = new Set([...g.node.flatMap((n) => n.output), ...g.input.map((i) => i.name), ...g.initializer.map((t) => t.name)])
  if (local.has(from)) return
  for (const n of g.node) {
    n.input = n.input.map((i) => (i === from ? to : i))
    for (const a of n.attribute) if (a.g) renameInSubgraph(a.g, from, to)
  }
  for (const o of g.output) if (o.name === from) o.name = to
}

/**
 * Conv → BatchNormalization (the Conv output read by nothing else) becomes one Conv with scaled
 * weights and a shifted bias: W' = W·γ/σ per output channel, b' = (b − μ)·γ/σ + β.
 */
function foldBatchNorm(model: ModelProto, graph: GraphProto, names: NameScope): number {
  const consumers = consumersOf(graph)
  const outputs = graphOutputNames(graph)
  const producer = new Map<string, NodeProto>()
  for (const n of graph.node) for (const o of n.output) producer.set(o, n)
  const w = weightIndex(model)
  let folded = 0
  for (const bn of [...graph.node]) {
    if (bn.opType !== 'BatchNormalization' || bn.domain !== '' || bn.output.filter(Boolean).length !== 1) continue
    const conv = producer.get(bn.input[0]!)
    if (!conv || conv.domain !== '' || (conv.opType !== 'Conv' && conv.opType !== 'ConvTranspose')) continue
    const convOut = conv.output[0]!
    if (outputs.has(convOut) || (consumers.get(convOut)?.length ?? 0) !== 1) continue
    const stats = [1, 2, 3, 4].map((i) => w.get(bn.input[i]!))
    const weight = w.get(conv.input[1]!)
    const bias = conv.input[2] ? w.get(conv.input[2]) : undefined
    if (!weight || stats.some((s) => !s) || (conv.input[2] && !bias)) continue
    if (weight.tensor.dataType !== DataType.FLOAT) continue
    const [gamma, beta, mean, variance] = (stats as WeightRef[]).map((s) => tensorToFloat32(s.tensor))
    const eps = attrFloat(bn, 'epsilon', 1e-5)
    const dims = weight.tensor.dims.map(Number)
    const group = attrInt(conv, 'group', 1)
    // Conv weights are [M, C/g, k...]; ConvTranspose weights are [C, M/g, k...].
    const outChannels = conv.opType === 'Conv' ? dims[0]! : dims[1]! * group
    if (gamma!.length !== outChannels) continue
    const factor = new Float32Array(outChannels)
    for (let c = 0; c < outChannels; c++) factor[c] = gamma![c]! / Math.sqrt(variance![c]! + eps)
    const wv = tensorToFloat32(weight.tensor)
    const nw = new Float32Array(wv.length)
    if (conv.opType === 'Conv') {
      const inner = wv.length / dims[0]!
      for (let m = 0; m < dims[0]!; m++) for (let i = 0; i < inner; i++) nw[m * inner + i] = wv[m * inner + i]! * factor[m]!
    } else {
      const per = dims[1]!
      const inner = dims.slice(2).reduce((a, b) => a * b, 1)
      const inPerGroup = dims[0]! / group
      for (let c = 0; c < dims[0]!; c++) {
        const g = Math.floor(c / inPerGroup)
        for (let m = 0; m < per; m++) for (let i = 0; i < inner; i++) {
          const idx = (c * per + m) * inner + i
          nw[idx] = wv[idx]! * factor[g * per + m]!
        }
      }
    }
    const bv = bias ? tensorToFloat32(bias.tensor) : new Float32Array(outChannels)
    const nb = new Float32Array(outChannels)
    for (let c = 0; c < outChannels; c++) nb[c] = (bv[c]! - mean![c]!) * factor[c]! + beta![c]!
    const wName = names.fresh(`${conv.input[1]}_bnfold`)
    const bName = names.fresh(`${conv.input[2] || conv.output[0]}_bias_bnfold`)
    graph.initializer.push(makeTensor(wName, DataType.FLOAT, dims, nw), makeTensor(bName, DataType.FLOAT, [outChannels], nb))
    conv.input[1] = wName
    if (conv.input.length < 3) conv.input.push(bName)
    else conv.input[2] = bName
    conv.output[0] = bn.output[0]!
    graph.node.splice(graph.node.indexOf(bn), 1)
    folded++
  }
  return folded
}

/**
 * Cross-layer equalization (data-free): for Conv → [ReLU] → Conv, scale output channel c of the
 * first by 1/s and input channel c of the second by s, with s = √(r1/r2) from the two weights'
 * per-channel ranges. The float function is unchanged (ReLU is positively homogeneous) but channels
 * whose filters dwarf the others no longer stretch one per-tensor activation range — the typical
 * int8 failure of depthwise-separable nets.
 */
export function equalizeCrossLayer(model: ModelProto): number {
  const graph = model.graph!
  const consumers = consumersOf(graph)
  const outputs = graphOutputNames(graph)
  const w = weightIndex(model)
  const uses = (name: string) => consumers.get(name)?.length ?? 0
  const names = new NameScope(model)
  let pairs = 0
  for (const first of graph.node) {
    if (first.opType !== 'Conv' || first.domain !== '') continue
    let out = first.output[0]!
    if (outputs.has(out) || uses(out) !== 1) continue
    let next = consumers.get(out)![0]!.node
    if (next.opType === 'Relu' && next.domain === '') {
      out = next.output[0]!
      if (outputs.has(out) || uses(out) !== 1) continue
      next = consumers.get(out)![0]!.node
    }
    if (next.opType !== 'Conv' || next.domain !== '' || next.input[0] !== out || attrInt(next, 'group', 1) !== 1) continue
    const w1 = w.get(first.input[1]!)
    const w2 = w.get(next.input[1]!)
    const b1 = first.input[2] ? w.get(first.input[2]) : undefined
    if (!w1 || !w2 || (first.input[2] && !b1) || w1.tensor.dataType !== DataType.FLOAT || w2.tensor.dataType !== DataType.FLOAT) continue
    if (uses(first.input[1]!) !== 1 || uses(next.input[1]!) !== 1 || (first.input[2] && uses(first.input[2]) !== 1)) continue
    const d1 = w1.tensor.dims.map(Number)
    const d2 = w2.tensor.dims.map(Number)
    const m = d1[0]!
    if (d2[1] !== m) continue
    const v1 = Float32Array.from(tensorToFloat32(w1.tensor))
    const v2 = Float32Array.from(tensorToFloat32(w2.tensor))
    const inner1 = v1.length / m
    const inner2 = d2.slice(2).reduce((a, b) => a * b, 1)
    const scale = new Float32Array(m)
    for (let c = 0; c < m; c++) {
      let r1 = 0
      for (let i = 0; i < inner1; i++) r1 = Math.max(r1, Math.abs(v1[c * inner1 + i]!))
      let r2 = 0
      for (let o = 0; o < d2[0]!; o++) for (let i = 0; i < inner2; i++) r2 = Math.max(r2, Math.abs(v2[(o * m + c) * inner2 + i]!))
      scale[c] = r1 > 0 && r2 > 0 ? Math.sqrt(r1 / r2) : 1
    }
    for (let c = 0; c < m; c++) for (let i = 0; i < inner1; i++) v1[c * inner1 + i] = v1[c * inner1 + i]! / scale[c]!
    for (let o = 0; o < d2[0]!; o++) for (let c = 0; c < m; c++) for (let i = 0; i < inner2; i++) v2[(o * m + c) * inner2 + i] = v2[(o * m + c) * inner2 + i]! * scale[c]!
    const put = (ref: WeightRef, data: Float32Array, dims: number[]): string => {
      const name = names.fresh(`${ref.name}_equalized`)
      graph.initializer.push(makeTensor(name, DataType.FLOAT, dims, data))
      return name
    }
    first.input[1] = put(w1, v1, d1)
    next.input[1] = put(w2, v2, d2)
    if (b1) {
      const bv = Float32Array.from(tensorToFloat32(b1.tensor))
      for (let c = 0; c < m; c++) bv[c] = bv[c]! / scale[c]!
      first.input[2] = put(b1, bv, [m])
    }
    pairs++
  }
  removeUnusedWeights(model)
  return pairs
}
