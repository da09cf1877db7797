import {UsageError} from '../errors.js'
import type {ModelProto} from '../onnx/proto.js'
import type {DatasetSpec} from '../stages/types.js'
import {pruneChannels} from './channel.js'
import type {ChannelPruneReport} from './channel.js'
import {nmPrune, parsePattern} from './nm.js'
import {countFlops} from './prune-flops.js'
import type {ArtifactSizes, CompressHooks, ParamCount} from './prune-io.js'
import {throwIfAborted, transformModelFile} from './prune-io.js'
import {countZeros, matchLayer, prunableWeights, readWeight, writeWeight} from './prune-weights.js'
import type {LayerWeight} from './prune-weights.js'
import {planSensitivity} from './sensitivity.js'
import type {SensitivityReport} from './sensitivity.js'

export type PruneMethod = 'magnitude' | 'nm' | 'channel'

export interface PruneOptions {
  /** Fraction of weights (or channels, for `channel`) to remove, in [0, 1). Implied by `pattern` for `nm`. */
  sparsity?: number
  /** `magnitude` (unstructured, default), `nm` (N:M semi-structured) or `channel` (structured filters). */
  method?: PruneMethod
  /** `global`: one magnitude threshold across all layers (default); `layer`: every layer to the same sparsity. */
  scope?: 'global' | 'layer'
  /** N:M pattern for `nm`, e.g. `2:4` (keep 2 of every 4 along the reduction axis). Default 2:4. */
  pattern?: string
  /** Channel importance for `channel`: L1 (default) or L2 norm of each filter. */
  criterion?: 'l1' | 'l2'
  /**
   * `channel`: round kept channel counts to a multiple of this. Default 16: onnxruntime's CPU conv
   * kernels block channels by 16 on AVX-512 (8 on AVX2); on the example CNN, 11/22/45 kept channels
   * ran 1.5× slower than unpruned, 11/16/48 ran 0.79×. 1 keeps the exact ratio.
   */
  channelMultiple?: number
  /** Leave the first and last prunable layers dense (they cost little and matter most). */
  protectFirstLast?: boolean
  /** Per-layer sparsity by layer (node) or weight name; 0 leaves a layer dense. Overrides `scope`. */
  overrides?: Record<string, number>
  /** Sensitivity-guided planning (magnitude only): per-layer ratios that keep the accuracy drop within budget. */
  eval?: {
    dataset: DatasetSpec
    /** Largest accepted drop in accuracy (labels) or top-1 agreement with the original (no labels). */
    maxAccuracyDrop: number
    /** Ratios probed per layer. Default 0.25, 0.5, 0.7, 0.85, 0.95. */
    ratios?: number[]
    /** Samples evaluated per probe. Default 256. */
    samples?: number
  }
}

export interface LayerSparsity {
  layer: string
  weight: string
  op: string
  params: number
  sparsity: number
}

export interface PruneReport {
  method: PruneMethod
  target: number
  /** Achieved sparsity over the prunable weights. */
  sparsity: number
  layers: LayerSparsity[]
  channel?: ChannelPruneReport
  sensitivity?: SensitivityReport
  /** Structured pruning only: FLOPs of one run before and after, at the given input shapes. */
  flops?: {before: number; after: number; inputShapes: Record<string, number[]>}
}

export interface PruneFileResult extends PruneReport {
  params: {before: ParamCount; after: ParamCount}
  sizes: {before: ArtifactSizes; after: ArtifactSizes}
}

export function checkSparsity(value: number, what = 'sparsity'): void {
  if (!Number.isFinite(value) || value < 0 || value >= 1) {
    throw new UsageError(`${what} must be in [0, 1), got ${value}`, {
      code: 'E_PRUNE_SPARSITY',
      tryMessage: 'Give the fraction of weights to remove, e.g. 0.5 for half; 1 would remove every weight.',
    })
  }
}

/** Options that only mean something for some methods are rejected elsewhere rather than ignored. */
function checkCombination(method: PruneMethod, options: PruneOptions): void {
  const fail = (message: string, tryMessage: string): never => {
    throw new UsageError(message, {code: 'E_PRUNE_OPTIONS', tryMessage})
  }
  if (options.eval && method !== 'magnitude') fail(`sensitivity-guided pruning (--eval) supports method 'magnitude', not '${method}'`, 'Drop --eval, or use --method magnitude.')
  if (options.eval && (options.overrides || options.scope === 'layer')) fail('with --eval the sensitivity planner picks every layer\'s ratio: per-layer overrides and --scope layer do not apply', 'Drop --override/--scope, or drop --eval.')
  if (options.pattern !== undefined && method !== 'nm') fail(`--pattern applies to --method nm, not '${method}'`, 'Drop --pattern, or use --method nm.')
  if (options.channelMultiple !== undefined && (method !== 'channel' || !Number.isInteger(options.channelMultiple) || options.channelMultiple < 1)) {
    fail(`--channel-multiple must be a positive integer and applies to --method channel`, 'e.g. --method channel --channel-multiple 8')
  }
  if (options.criterion !== undefined && method !== 'channel') fail(`--criterion applies to --method channel, not '${method}'`, 'Drop --criterion, or use --method channel.')
  if (method === 'nm' && options.scope !== undefined) fail('N:M pruning has no scope: every group of M keeps N', 'Drop --scope.')
  if (method === 'nm') {
    for (const [layer, value] of Object.entries(options.overrides ?? {})) {
      if (value !== 0) fail(`N:M override for '${layer}' must be 0 (leave dense), got ${value}`, `Use --override ${layer}=0 to keep that layer dense.`)
    }
  }
}

/** Per-layer target sparsities after protection and overrides; `undefined` = in the global pool. */
export function layerTargets(layers: LayerWeight[], options: PruneOptions, sparsity: number): (number | undefined)[] {
  const targets: (number | undefined)[] = layers.map(() => (options.scope === 'layer' ? sparsity : undefined))
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    checkSparsity(value, `override for '${key}'`)
    const layer = matchLayer(layers, key)
    if (!layer) {
      throw new UsageError(`override names no prunable layer: '${key}'`, {
        code: 'E_PRUNE_LAYER',
        tryMessage: `Use a layer or weight name; prunable layers: ${layers
          .slice(0, 8)
          .map((l) => l.layer)
          .join(', ')}${layers.length > 8 ? ', …' : ''}`,
      })
    }
    targets[layers.indexOf(layer)] = value
  }
  if (options.protectFirstLast && layers.length > 0) {
    targets[0] = 0
    targets[layers.length - 1] = 0
  }
  return targets
}

/** Zero the `k` smallest-magnitude entries of `values` in place. */
function zeroSmallest(values: Float32Array, k: number): void {
  if (k <= 0) return
  const abs = new Float32Array(values.length)
  for (let i = 0; i < values.length; i++) abs[i] = Math.abs(values[i]!)
  const sorted = abs.slice().sort()
  const t = sorted[Math.min(k, sorted.length) - 1]!
  let left = k
  for (let i = 0; i < values.length; i++) if (abs[i]! < t) (values[i] = 0), left--
  for (let i = 0; i < values.length && left > 0; i++) if (abs[i] === t) (values[i] = 0), left--
}

/**
 * Unstructured magnitude pruning in place. Layers with an explicit target are pruned to it on
 * their own; the rest share one global magnitude threshold so that together they reach `sparsity`.
 */
export function magnitudePrune(layers: LayerWeight[], targets: (number | undefined)[], sparsity: number, hooks: CompressHooks = {}): void {
  const pool: {layer: LayerWeight; values: Float32Array}[] = []
  layers.forEach((layer, i) => {
    throwIfAborted(hooks.signal)
    const values = readWeight(layer.tensor)
    const target = targets[i]
    if (target === undefined) {
      pool.push({layer, values})
      return
    }
    zeroSmallest(values, Math.round(target * values.length))
    writeWeight(layer.tensor, values)
  })
  if (pool.length === 0) return
  const total = pool.reduce((n, p) => n + p.values.length, 0)
  const k = Math.round(sparsity * total)
  if (k === 0) return
  const all = new Float32Array(total)
  let o = 0
  for (const {values} of pool) for (let i = 0; i < values.length; i++) all[o++] = Math.abs(values[i]!)
  all.sort()
  const t = all[k - 1]!
  let below = 0
  for (let i = 0; i < k; i++) if (all[i]! < t) below++
  let ties = k - below
  for (const {layer, values} of pool) {
    for (let i = 0; i < values.length; i++) {
      const a = Math.abs(values[i]!)
      if (a < t) values[i] = 0
      else if (a === t && ties > 0) (values[i] = 0), ties--
    }
    writeWeight(layer.tensor, values)
  }
}

export function layerSparsity(layers: LayerWeight[]): {layers: LayerSparsity[]; sparsity: number} {
  let zeros = 0
  let total = 0
  const stats = layers.map((l) => {
    const values = readWeight(l.tensor)
    const z = countZeros(values)
    zeros += z
    total += values.length
    return {layer: l.layer, weight: l.name, op: l.opType, params: values.length, sparsity: values.length ? z / values.length : 0}
  })
  return {layers: stats, sparsity: total ? zeros / total : 0}
}

/** Prune a model in memory with any method. */
export async function pruneModel(model: ModelProto, options: PruneOptions, hooks: CompressHooks = {}): Promise<PruneReport> {
  const method = options.method ?? 'magnitude'
  checkCombination(method, options)
  if (method === 'nm') {
    const pattern = parsePattern(options.pattern ?? '2:4')
    const implied = 1 - pattern.n / pattern.m
    if (options.sparsity !== undefined && Math.abs(options.sparsity - implied) > 1e-9) {
      throw new UsageError(`pattern ${pattern.n}:${pattern.m} gives sparsity ${implied}, but sparsity ${options.sparsity} was asked`, {
        code: 'E_PRUNE_OPTIONS',
        tryMessage: 'Omit --sparsity with --method nm, or pick a pattern that matches it.',
      })
    }
    const layers = prunableWeights(model)
    const targets = layerTargets(layers, options, implied)
    const active = layers.filter((_, i) => targets[i] !== 0)
    nmPrune(active, pattern, hooks)
    return {method, target: implied, ...layerSparsity(layers)}
  }
  if (options.sparsity === undefined) {
    throw new UsageError(`method '${method}' needs a sparsity`, {code: 'E_PRUNE_OPTIONS', tryMessage: 'Pass --sparsity, e.g. --sparsity 0.5.'})
  }
  checkSparsity(options.sparsity)
  if (method === 'channel') {
    const channel = pruneChannels(model, {
      ratio: options.sparsity,
      criterion: options.criterion ?? 'l1',
      scope: options.scope ?? 'layer',
      overrides: options.overrides,
      protectFirstLast: options.protectFirstLast,
      multiple: options.channelMultiple ?? 16,
    })
    return {method, target: options.sparsity, ...layerSparsity(prunableWeights(model)), sparsity: channel.channelSparsity, channel}
  }
  const layers = prunableWeights(model)
  if (layers.length === 0) {
    throw new UsageError('the model has no prunable weights (float MatMul/Gemm/Conv/ConvTranspose/LSTM/GRU/RNN weights)', {
      code: 'E_PRUNE_NOTHING',
      tryMessage: 'Check that the model has float weights; an already-quantized model cannot be magnitude-pruned.',
    })
  }
  if (options.eval) {
    const sensitivity = await planSensitivity(model, layers, {...options.eval, sparsity: options.sparsity, protectFirstLast: options.protectFirstLast}, hooks)
    magnitudePrune(layers, sensitivity.plan.map((p) => p.ratio), options.sparsity, hooks)
    return {method, target: options.sparsity, ...layerSparsity(layers), sensitivity}
  }
  magnitudePrune(layers, layerTargets(layers, options, options.sparsity), options.sparsity, hooks)
  return {method, target: options.sparsity, ...layerSparsity(layers)}
}

/** Prune a model file into `output` (atomic) and measure params and sizes before and after. */
export async function pruneFile(input: string, output: string, options: PruneOptions, hooks: CompressHooks = {}): Promise<PruneFileResult> {
  if (options.sparsity !== undefined) checkSparsity(options.sparsity)
  const structured = options.method === 'channel'
  const r = await transformModelFile(input, output, async (model) => {
    const before = structured ? await countFlops(model) : undefined
    const report = await pruneModel(model, options, hooks)
    const after = before ? await countFlops(model) : undefined
    if (before && after) report.flops = {before: before.flops, after: after.flops, inputShapes: before.inputShapes}
    else if (structured) hooks.log?.('could not count FLOPs: the model does not run on zero inputs')
    return report
  })
  return {...r.result, params: {before: r.paramsBefore, after: r.paramsAfter}, sizes: {before: r.before, after: r.after}}
}
