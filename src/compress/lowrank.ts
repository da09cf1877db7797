import {UsageError} from '../errors.js'
import {makeNode} from '../onnx/build.js'
import {attrInt} from '../onnx/graph.js'
import type {ModelProto} from '../onnx/proto.js'
import {makeTensor} from '../onnx/tensor.js'
import {decompose, relativeError} from './lowrank-svd.js'
import type {ArtifactSizes, CompressHooks, ParamCount} from './prune-io.js'
import {throwIfAborted, transformModelFile} from './prune-io.js'
import {dropWeight, prunableWeights, readWeight, takenNames, uniqueName, useCounts, writeWeight} from './prune-weights.js'

export interface LowrankOptions {
  /** Keep exactly this many singular values per layer (capped by the layer's size). */
  rank?: number
  /** Keep the fewest singular values whose energy (sum of σ²) reaches this fraction, in (0, 1]. */
  energy?: number
  /** Per-layer budget on the relative Frobenius error ‖W − AB‖/‖W‖, in (0, 1). */
  maxError?: number
  /** Layer (node) or weight names to leave alone. */
  exclude?: string[]
}

export interface LowrankLayer {
  layer: string
  weight: string
  /** Weight as used: [K, N] (input features × output features). */
  shape: [number, number]
  rank?: number
  paramsBefore: number
  paramsAfter: number
  /** Multiply-accumulates per input row, before and after (2× for FLOPs). */
  macsBefore: number
  macsAfter: number
  /** Relative Frobenius error of the stored factors. */
  error?: number
  /** Fraction of σ² kept. */
  energy?: number
  /** Why a layer was left as it was. */
  skipped?: string
}

export interface LowrankReport {
  layers: LowrankLayer[]
  factorised: number
  params: {before: number; after: number}
  /** FLOPs per input row of the factorisable layers, before and after. */
  flopsPerRow: {before: number; after: number}
}

function checkOptions(o: LowrankOptions): void {
  const given = [o.rank, o.energy, o.maxError].filter((x) => x !== undefined).length
  if (given !== 1) {
    throw new UsageError(given === 0 ? 'low-rank needs one of rank, energy or maxError' : 'give only one of rank, energy or maxError', {
      code: 'E_LOWRANK_OPTIONS',
      tryMessage: 'e.g. --rank 32, --energy 0.95 or --max-error 0.1',
    })
  }
  if (o.rank !== undefined && (!Number.isInteger(o.rank) || o.rank < 1)) throw new UsageError(`rank must be a positive integer, got ${o.rank}`, {code: 'E_LOWRANK_OPTIONS'})
  if (o.energy !== undefined && !(o.energy > 0 && o.energy <= 1)) throw new UsageError(`energy must be in (0, 1], got ${o.energy}`, {code: 'E_LOWRANK_OPTIONS'})
  if (o.maxError !== undefined && !(o.maxError > 0 && o.maxError < 1)) throw new UsageError(`maxError must be in (0, 1), got ${o.maxError}`, {code: 'E_LOWRANK_OPTIONS'})
}

function chooseRank(energy: Float64Array, o: LowrankOptions): number {
  const total = energy.reduce((a, b) => a + b, 0)
  if (o.rank !== undefined) return Math.min(o.rank, energy.length)
  let kept = 0
  for (let r = 1; r <= energy.length; r++) {
    kept += energy[r - 1]!
    if (o.energy !== undefined && kept >= o.energy * total - 1e-12 * total) return r
    if (o.maxError !== undefined && Math.sqrt(Math.max(0, total - kept) / (total || 1)) <= o.maxError) return r
  }
  return energy.length
}

/**
 * Factorise MatMul/Gemm weights W [K, N] into A [K, r] · B [r, N] by truncated SVD, replacing
 * `X·W` with `(X·A)·B`. A layer is factorised only when both its parameters and its FLOPs drop,
 * i.e. r·(K + N) < K·N; the others are reported with the reason.
 */
export function lowrankModel(model: ModelProto, options: LowrankOptions, hooks: CompressHooks = {}): LowrankReport {
  checkOptions(options)
  const exclude = new Set(options.exclude ?? [])
  const uses = useCounts(model)
  const taken = takenNames(model)
  const layers: LowrankLayer[] = []
  for (const l of prunableWeights(model)) {
    if ((l.opType !== 'MatMul' && l.opType !== 'Gemm') || l.inputIndex !== 1 || l.dims.length !== 2) continue
    throwIfAborted(hooks.signal)
    const transB = l.opType === 'Gemm' && attrInt(l.node, 'transB', 0) === 1
    const [k, n] = transB ? [l.dims[1]!, l.dims[0]!] : [l.dims[0]!, l.dims[1]!]
    const entry: LowrankLayer = {layer: l.layer, weight: l.name, shape: [k, n], paramsBefore: k * n, paramsAfter: k * n, macsBefore: k * n, macsAfter: k * n}
    layers.push(entry)
    if (exclude.has(l.layer) || exclude.has(l.name)) {
      entry.skipped = 'excluded'
      continue
    }
    if (l.opType === 'Gemm' && attrInt(l.node, 'transA', 0) === 1) {
      entry.skipped = 'Gemm with transA'
      continue
    }
    if (l.node.input[1] !== l.name || (uses.get(l.name) ?? 0) !== 1) {
      entry.skipped = 'weight is shared or reached through another node'
      continue
    }
    hooks.progress?.(`low-rank ${l.layer}`)
    const raw = readWeight(l.tensor)
    const w = transB ? transpose(raw, n, k) : raw
    const svd = decompose(w, k, n, hooks.signal)
    const rank = chooseRank(svd.energy, options)
    if (rank * (k + n) >= k * n) {
      entry.skipped = `rank ${rank} would not reduce parameters or FLOPs (break-even ${Math.floor((k * n) / (k + n))})`
      continue
    }
    const {a, b} = svd.factor(rank)
    const total = svd.energy.reduce((x, y) => x + y, 0)
    Object.assign(entry, {
      rank,
      paramsAfter: rank * (k + n),
      macsAfter: rank * (k + n),
      error: relativeError(w, a, b, k, n, rank),
      energy: total ? svd.energy.subarray(0, rank).reduce((x, y) => x + y, 0) / total : 1,
    })
    const aName = uniqueName(taken, `${l.name}_lowrank_a`)
    const bName = uniqueName(taken, `${l.name}_lowrank_b`)
    const mid = uniqueName(taken, `${l.node.output[0] || l.layer}_lowrank`)
    const ta = makeTensor(aName, l.tensor.dataType, [k, rank], new Float32Array(0))
    const tb = makeTensor(bName, l.tensor.dataType, [rank, n], new Float32Array(0))
    writeWeight(ta, a, [k, rank])
    writeWeight(tb, b, [rank, n])
    l.graph.initializer.push(ta, tb)
    const first = makeNode('MatMul', [l.node.input[0]!, aName], [mid], {}, {name: uniqueName(taken, `${l.layer}_lowrank`)})
    l.graph.node.splice(l.graph.node.indexOf(l.node), 0, first)
    l.node.input[0] = mid
    l.node.input[1] = bName
    if (transB) l.node.attribute = l.node.attribute.filter((x) => x.name !== 'transB')
    dropWeight(l.ref)
  }
  const done = layers.filter((x) => x.rank !== undefined)
  if (layers.length === 0) {
    throw new UsageError('the model has no MatMul or Gemm with a constant 2-D weight to factorise', {
      code: 'E_LOWRANK_NOTHING',
      tryMessage: 'Low-rank factorisation applies to fully-connected layers; try prune or cluster for convolutions.',
    })
  }
  return {
    layers,
    factorised: done.length,
    params: {before: layers.reduce((s, x) => s + x.paramsBefore, 0), after: layers.reduce((s, x) => s + x.paramsAfter, 0)},
    flopsPerRow: {before: 2 * layers.reduce((s, x) => s + x.macsBefore, 0), after: 2 * layers.reduce((s, x) => s + x.macsAfter, 0)},
  }
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length)
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c]!
  return out
}

export interface LowrankFileResult extends LowrankReport {
  paramsTotal: {before: ParamCount; after: ParamCount}
  sizes: {before: ArtifactSizes; after: ArtifactSizes}
}

/** Factorise a model file into `output` (atomic) and measure it. */
export async function lowrankFile(input: string, output: string, options: LowrankOptions, hooks: CompressHooks = {}): Promise<LowrankFileResult> {
  checkOptions(options)
  const r = await transformModelFile(input, output, (model) => lowrankModel(model, options, hooks))
  return {...r.result, paramsTotal: {before: r.paramsBefore, after: r.paramsAfter}, sizes: {before: r.before, after: r.after}}
}
