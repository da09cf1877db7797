/**
 * Candidate builds: one quantized model per op mix, for the hardware-aware choice. A mix narrows
 * which weighted ops are quantized (e.g. only MatMul/Gemm when ConvInteger is slower than float
 * convolution on this CPU) and whether integer Add/Concat/pooling are used.
 */
import {allNodes} from '../../onnx/graph.js'
import type {ModelProto, NodeProto} from '../../onnx/proto.js'
import {convertFp16, DEFAULT_FP16_BLOCK_LIST} from './fp16.js'
import {quantizeDynamic} from './dynamic.js'
import {makeExcluder} from './exclude.js'
import type {TensorMeta} from './graph-util.js'
import {nodeLabel} from './graph-util.js'
import {quantizeInt4} from './int4.js'
import type {Int4Algorithm, Packed} from './int4.js'
import type {IntType} from './math.js'
import {applyStatic, flattenChannelsLast, planStatic} from './static.js'
import type {FloatNode} from './static.js'

export interface ModeContext {
  mode: 'dynamic' | 'static' | 'fp16' | 'int4'
  exclude: string[]
  perChannel: boolean
  activations: IntType
  /** Symmetric activations (static) or symmetric weights (int4), resolved: int4 defaults to true, static to false. */
  symmetric: boolean
  reduceRange: boolean
  blockSize: number
  algorithm: Int4Algorithm
  accuracyLevel: number
  keepIOTypes: boolean
  blockList?: string[]
  /** fp16: tensors kept float32 (values beyond float16's range on the calibration data), with why. */
  fp16KeepTensors?: Map<string, string>
  /** Static: tensor types and calibrated ranges. */
  meta?: Map<string, TensorMeta>
  ranges?: Map<string, {min: number; max: number}>
  /** int4 GPTQ: each MatMul's blocks, by node label, from calibration data. */
  int4Packed?: Map<string, Packed>
}

export interface Mix {
  name: string
  /** Weighted op types quantized; undefined = all the mode handles. */
  ops?: string[]
  /** Static: integer Add/Mul/Concat/pooling too. */
  arith?: boolean
  /** Static: weighted nodes (by label) kept in float, with the reason reported for each. */
  keepFloat?: Map<string, string>
}

export interface BuildConfig {
  mix: Mix
  /** Units kept in float (accuracy-aware fallback): tensor names (static) or node labels. */
  extraExcluded: Set<string>
}

export interface Built {
  model: ModelProto
  quantizedNodes: Record<string, number>
  leftFloat: FloatNode[]
  /** What accuracy-aware fallback can return to float, with the tensors that show its error. */
  units: FallbackUnit[]
}

export interface FallbackUnit {
  /** Tensor name (static: one Q/DQ pair) or node label (dynamic, int4). */
  key: string
  /** Node shown in reports. */
  node: string
  opType: string
  /** Tensor in the fp32 model, and the tensor in the quantized model carrying the same values. */
  ref: string
  test: string
}

/** The mixes worth trying for this model and mode, most complete first. */
export function candidateMixes(model: ModelProto, mode: ModeContext['mode']): Mix[] {
  if (mode === 'fp16' || mode === 'int4') return [{name: mode === 'fp16' ? 'all float ops' : 'all MatMul and Gemm'}]
  const ops = new Set<string>()
  for (const {node} of allNodes(model)) ops.add(node.opType)
  const hasConv = ops.has('Conv')
  const hasMatMul = ops.has('MatMul') || ops.has('Gemm')
  const mixes: Mix[] = [{name: 'all', arith: true}]
  if (mode === 'static') mixes.push({name: 'weighted ops only', arith: false})
  if (hasConv && hasMatMul) {
    mixes.push({name: 'MatMul/Gemm only', ops: ['MatMul', 'Gemm'], arith: mode === 'static'})
    if (mode === 'static') mixes.push({name: 'Conv only', ops: ['Conv'], arith: true})
  }
  return mixes
}

export function buildCandidate(model: ModelProto, ctx: ModeContext, cfg: BuildConfig): Built {
  const base = makeExcluder(ctx.exclude)
  const excluded = (n: NodeProto) => base(n) || (ctx.mode !== 'static' && cfg.extraExcluded.has(nodeLabel(n)))
  const units: FallbackUnit[] = []
  const record = (n: NodeProto) => units.push({key: nodeLabel(n), node: nodeLabel(n), opType: n.opType, ref: n.output[0]!, test: n.output[0]!})
  if (ctx.mode === 'static') {
    const opts = {
      perChannel: ctx.perChannel, activations: ctx.activations, symmetricActivations: ctx.symmetric, reduceRange: ctx.reduceRange, excluded,
      weightedOps: cfg.mix.ops ? new Set(cfg.mix.ops) : undefined, quantizeArith: cfg.mix.arith !== false, keepFloat: cfg.mix.keepFloat, fallback: cfg.extraExcluded,
    }
    const plan = planStatic(model, ctx.meta!, opts)
    const producer = new Map<string, NodeProto>()
    for (const {node: n} of allNodes(model)) for (const o of n.output) producer.set(o, n)
    for (const g of plan.graphs) for (const act of g.absorbed) producer.set(act.output[0]!, producer.get(act.input[0]!) ?? act)
    const ranges = new Map([...ctx.ranges!].filter(([t]) => !cfg.extraExcluded.has(t)))
    const r = applyStatic(model, plan, ranges, opts)
    flattenChannelsLast(model, ctx.meta!)
    const produced = new Set([...allNodes(model)].flatMap(({node: n}) => n.output))
    for (const t of new Set(plan.graphs.flatMap((g) => g.tensors))) {
      const dq = `${t}_DequantizeLinear`
      if (!produced.has(dq)) continue
      const p = producer.get(t)
      units.push({key: t, node: p ? nodeLabel(p) : t, opType: p?.opType ?? 'input', ref: t, test: dq})
    }
    return {model, quantizedNodes: r.quantizedNodes, leftFloat: [...plan.leftFloat, ...r.leftFloat], units}
  }
  if (ctx.mode === 'dynamic') {
    const targets: NodeProto[] = []
    for (const {node} of allNodes(model)) if (['MatMul', 'Gemm', 'Conv'].includes(node.opType) && node.domain === '') targets.push(node)
    const outputs = new Map(targets.map((n) => [nodeLabel(n), n]))
    const r = quantizeDynamic(model, {perChannel: ctx.perChannel, reduceRange: ctx.reduceRange, excluded, ops: new Set(cfg.mix.ops ?? ['MatMul', 'Gemm', 'Conv'])})
    const left = new Set(r.leftFloat.map((f) => f.node))
    for (const [label, n] of outputs) if (!left.has(label)) record(n)
    return {model, quantizedNodes: r.quantizedNodes, leftFloat: r.leftFloat, units}
  }
  if (ctx.mode === 'int4') {
    const targets: NodeProto[] = []
    for (const {node} of allNodes(model)) if ((node.opType === 'MatMul' || node.opType === 'Gemm') && node.domain === '') targets.push(node)
    const r = quantizeInt4(model, {blockSize: ctx.blockSize, symmetric: ctx.symmetric, algorithm: ctx.algorithm, accuracyLevel: ctx.accuracyLevel, excluded, packed: ctx.int4Packed})
    const left = new Set(r.leftFloat.map((f) => f.node))
    for (const n of targets) if (!left.has(nodeLabel(n))) record(n)
    return {model, quantizedNodes: r.quantizedNodes, leftFloat: r.leftFloat, units}
  }
  const r = convertFp16(model, {keepIO: ctx.keepIOTypes, blockList: ctx.blockList ?? DEFAULT_FP16_BLOCK_LIST, excluded, keepTensors: ctx.fp16KeepTensors})
  return {
    model,
    quantizedNodes: r.convertedWeights ? {weights: r.convertedWeights} : {},
    leftFloat: r.keptFloat32.map((k) => ({node: k.node, opType: k.opType, reason: k.reason})),
    units,
  }
}
