import {KilnError, UsageError} from '../errors.js'
import {getAttribute} from '../onnx/graph.js'
import type {WeightRef} from '../onnx/graph.js'
import type {ModelProto} from '../onnx/proto.js'
import {setTensorData, tensorData, tensorDims, tensorToFloat32} from '../onnx/tensor.js'
import type {TypedArray} from '../onnx/tensor.js'
import {analyzeChannels} from './channel-graph.js'
import type {ChannelAnalysis, Producer} from './channel-graph.js'

export interface ChannelPruneOptions {
  /** Fraction of each group's channels to remove, in [0, 1). */
  ratio: number
  /** Filter importance: L1 or L2 norm of the producer's weights per output channel. */
  criterion: 'l1' | 'l2'
  /** `layer`: every group loses `ratio` of its channels; `global`: one threshold on mean-normalised importance. */
  scope: 'global' | 'layer'
  /** Per-group ratio by producer node or weight name. */
  overrides?: Record<string, number>
  /** Leave the groups of the first and last producing layers whole. */
  protectFirstLast?: boolean
  /** Round each group's kept channel count to a multiple of this (1: no rounding). */
  multiple?: number
}

export interface ChannelGroupReport {
  /** Producing layers pruned together (they meet in an Add/Mul/Concat). */
  layers: string[]
  channels: number
  kept: number
}

export interface ChannelPruneReport {
  groups: ChannelGroupReport[]
  /** Producers left whole because a consumer could not be proven safe. */
  skipped: {layer: string; blockedBy: string; reason: string}[]
  /** Removed channels over all channels of the prunable groups. */
  channelSparsity: number
}

function producerNames(p: Producer): string[] {
  return [p.node.name || p.node.opType, p.weight.name]
}

function importance(p: Producer, criterion: 'l1' | 'l2'): Float64Array {
  const values = tensorToFloat32(p.weight.tensor)
  const dims = tensorDims(p.weight.tensor)
  const out = new Float64Array(p.channels)
  const axis = p.channelAxis
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1)
  const len = dims[axis]!
  for (let k = 0; k < values.length; k++) {
    const c = Math.floor(k / inner) % len
    const v = values[k]!
    out[c]! += criterion === 'l1' ? Math.abs(v) : v * v
  }
  if (criterion === 'l2') for (let c = 0; c < out.length; c++) out[c] = Math.sqrt(out[c]!)
  return out
}

/** Slice a tensor along `axis`, keeping `keep` indices (ascending). Works on any numeric dtype. */
function sliceTensor(ref: WeightRef, axis: number, keep: number[]): void {
  const t = ref.tensor
  const dims = tensorDims(t)
  const data = tensorData(t)
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1)
  const len = dims[axis]!
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1)
  const Ctor = data.constructor as new (n: number) => TypedArray
  const out = new Ctor(outer * keep.length * inner)
  let o = 0
  for (let a = 0; a < outer; a++) {
    for (const k of keep) {
      const start = (a * len + k) * inner
      ;(out as Float32Array).set((data as Float32Array).subarray(start, start + inner), o)
      o += inner
    }
  }
  const next = dims.slice()
  next[axis] = keep.length
  setTensorData(t, out, next)
}

/** Decide which channels each group keeps. */
function chooseChannels(analysis: ChannelAnalysis, options: ChannelPruneOptions): Map<number, Set<number>> {
  const ratios = new Map<number, number>()
  const producers = analysis.producers
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    const p = producers.find((x) => producerNames(x).includes(key))
    if (!p) throw new UsageError(`override names no prunable channel layer: '${key}'`, {code: 'E_PRUNE_LAYER', tryMessage: `Producing layers: ${producers.map((x) => producerNames(x)[0]).join(', ')}`})
    ratios.set(analysis.root(p.id), value)
  }
  if (options.protectFirstLast && producers.length > 0) {
    ratios.set(analysis.root(producers[0]!.id), 0)
    ratios.set(analysis.root(producers.at(-1)!.id), 0)
  }
  const scores = new Map<number, Float64Array>()
  for (const p of producers) {
    const g = analysis.root(p.id)
    if (analysis.blocked.has(g)) continue
    const imp = importance(p, options.criterion)
    const acc = scores.get(g)
    if (acc) for (let c = 0; c < acc.length; c++) acc[c]! += imp[c]!
    else scores.set(g, imp)
  }
  const keep = new Map<number, Set<number>>()
  const topK = (s: Float64Array, k: number): Set<number> =>
    new Set(
      [...s.keys()]
        .sort((a, b) => s[b]! - s[a]! || a - b)
        .slice(0, Math.max(1, k)),
    )
  // Kernels block channels (onnxruntime's NCHWc layout uses 8 or 16): an odd count can run slower
  // than the unpruned layer, so counts round to the nearest multiple, never below one block.
  const m = options.multiple ?? 1
  const rounded = (count: number, total: number): number => (count >= total || total <= m || m <= 1 ? count : Math.min(total, Math.max(m, Math.round(count / m) * m)))
  const counts = new Map<number, number>()
  const pooled: {g: number; c: number; score: number}[] = []
  for (const [g, s] of scores) {
    const explicit = ratios.get(g)
    if (explicit !== undefined || options.scope === 'layer') counts.set(g, s.length - Math.round((explicit ?? options.ratio) * s.length))
    else {
      const mean = s.reduce((a, b) => a + b, 0) / s.length || 1
      s.forEach((v, c) => pooled.push({g, c, score: v / mean}))
    }
  }
  if (pooled.length > 0) {
    pooled.sort((a, b) => a.score - b.score)
    const dropped = new Map<number, number>()
    for (const x of pooled.slice(0, Math.round(options.ratio * pooled.length))) dropped.set(x.g, (dropped.get(x.g) ?? 0) + 1)
    for (const [g, s] of scores) if (!counts.has(g)) counts.set(g, s.length - (dropped.get(g) ?? 0))
  }
  for (const [g, s] of scores) keep.set(g, topK(s, rounded(counts.get(g)!, s.length)))
  return keep
}

/**
 * Structured channel (filter) pruning with graph surgery. Channels are removed from each producing
 * Conv/Gemm/MatMul and from everything downstream that indexes them: BatchNormalization and other
 * per-channel constants, depthwise convolutions (weights, bias, `group`), and the next Conv's,
 * Gemm's or MatMul's input channels (through Flatten). Producers whose outputs meet in Add/Mul/Concat
 * are pruned as one group. A producer whose channels reach a node that cannot be proven safe is left
 * whole; when no group can be pruned the model is left unchanged and the error names the blocking node.
 */
export function pruneChannels(model: ModelProto, options: ChannelPruneOptions): ChannelPruneReport {
  const analysis = analyzeChannels(model)
  const skipped = analysis.producers
    .filter((p) => analysis.blocked.has(analysis.root(p.id)))
    .map((p) => {
      const b = analysis.blocked.get(analysis.root(p.id))!
      return {layer: producerNames(p)[0]!, blockedBy: b.node, reason: b.reason}
    })
  const prunable = analysis.producers.filter((p) => !analysis.blocked.has(analysis.root(p.id)))
  if (prunable.length === 0) {
    const first = skipped[0]
    throw new KilnError(
      first
        ? `channel pruning cannot prove the graph safe: node '${first.blockedBy}' ${first.reason} (channels of '${first.layer}'); the model is unchanged`
        : 'channel pruning found no Conv, Gemm or MatMul with constant weights to prune; the model is unchanged',
      {
        code: 'E_PRUNE_UNSAFE',
        tryMessage: first ? 'Use --method magnitude or nm for this model, or export it without that node.' : 'Use --method magnitude instead.',
      },
    )
  }
  const keep = chooseChannels(analysis, options)
  for (const op of analysis.slices) {
    const len = tensorDims(op.ref.tensor)[op.axis]!
    const spread = op.spread ?? 1
    const kept: number[] = []
    for (let k = 0; k < len; k++) {
      const ch = op.chans[Math.floor(k / spread)]
      if (!ch || !keep.has(analysis.root(ch.g)) || keep.get(analysis.root(ch.g))!.has(ch.j)) kept.push(k)
    }
    if (kept.length !== len) sliceTensor(op.ref, op.axis, kept)
  }
  for (const {node, chans} of analysis.groupUpdates) {
    const n = chans.filter((ch) => !ch || !keep.has(analysis.root(ch.g)) || keep.get(analysis.root(ch.g))!.has(ch.j)).length
    const attr = getAttribute(node, 'group')!
    attr.i = BigInt(n)
  }
  const touched = new Set(analysis.tracked)
  model.graph!.valueInfo = model.graph!.valueInfo.filter((v) => !touched.has(v.name))
  const groups = new Map<number, ChannelGroupReport>()
  for (const p of prunable) {
    const g = analysis.root(p.id)
    const entry = groups.get(g) ?? {layers: [], channels: p.channels, kept: keep.get(g)?.size ?? p.channels}
    entry.layers.push(producerNames(p)[0]!)
    groups.set(g, entry)
  }
  const list = [...groups.values()]
  const total = list.reduce((n, g) => n + g.channels, 0)
  const kept = list.reduce((n, g) => n + g.kept, 0)
  return {groups: list, skipped, channelSparsity: total ? (total - kept) / total : 0}
}
