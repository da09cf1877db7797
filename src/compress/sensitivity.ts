import {KilnError} from '../errors.js'
import {valueInfoShape} from '../onnx/build.js'
import {modelToBytes} from '../onnx/model.js'
import type {ModelProto, TensorProto} from '../onnx/proto.js'
import {readBatches} from '../data/dataset.js'
import type {Batch} from '../data/dataset.js'
import {createSession, toFeeds} from '../runtime/ort.js'
import type {DatasetSpec} from '../stages/types.js'
import type {CompressHooks} from './prune-io.js'
import {throwIfAborted} from './prune-io.js'
import type {LayerWeight} from './prune-weights.js'
import {readWeight, writeWeight} from './prune-weights.js'

export interface SensitivityOptions {
  dataset: DatasetSpec
  /** Global sparsity to reach over all prunable weights. */
  sparsity: number
  /** Largest accepted drop of the metric (a fraction: 0.01 is one point). */
  maxAccuracyDrop: number
  ratios?: number[]
  samples?: number
  protectFirstLast?: boolean
}

export interface SensitivityReport {
  /** `accuracy` when the dataset has labels, else top-1 `agreement` with the unpruned model. */
  metric: 'accuracy' | 'agreement'
  baseline: number
  samples: number
  /** The sparsity–metric curve of each layer pruned on its own. */
  curve: {layer: string; params: number; points: {ratio: number; value: number; drop: number}[]}[]
  /** Chosen ratio per layer, in the order of the model's prunable layers. */
  plan: {layer: string; ratio: number}[]
  /** The whole plan applied at once; `source`: the sensitivity plan, or one global threshold when that measured better. */
  final: {sparsity: number; value: number; drop: number; source: 'sensitivity' | 'global'}
}

/** Scores model bytes on a fixed in-memory sample: accuracy against labels, or top-1 agreement with the reference. */
export interface Evaluator {
  metric: 'accuracy' | 'agreement'
  samples: number
  score(model: Uint8Array): Promise<number>
}

function argmaxRows(data: Float32Array, rows: number): Int32Array {
  const width = data.length / rows
  const out = new Int32Array(rows)
  for (let r = 0; r < rows; r++) {
    let best = 0
    for (let c = 1; c < width; c++) if (data[r * width + c]! > data[r * width + best]!) best = c
    out[r] = best
  }
  return out
}

export async function makeEvaluator(model: ModelProto, spec: DatasetSpec, samples: number, signal?: AbortSignal): Promise<Evaluator> {
  const init = new Set(model.graph!.initializer.map((t) => t.name))
  const inputs = model.graph!.input
    .filter((i) => !init.has(i.name))
    .map((i) => ({name: i.name, type: '', dims: valueInfoShape(i)?.shape ?? []}))
  const batches: Batch[] = []
  for await (const b of readBatches({...spec, limit: Math.min(spec.limit ?? samples, samples)}, {batchSize: 64, inputs, signal})) batches.push(b)
  const feeds = await Promise.all(batches.map((b) => toFeeds(b.inputs)))
  const predict = async (bytes: Uint8Array): Promise<Int32Array[]> => {
    const session = await createSession(bytes, {threads: 2})
    try {
      const out: Int32Array[] = []
      for (const feed of feeds) {
        throwIfAborted(signal)
        const result = await session.run(feed)
        const first = result[session.outputNames[0]!]!
        out.push(argmaxRows(Float32Array.from(first.data as Float32Array), Number(first.dims[0] ?? 1)))
      }
      return out
    } finally {
      await session.release()
    }
  }
  const labels = batches.every((b) => b.labels) ? batches.map((b) => b.labels!) : undefined
  const reference = labels ? undefined : await predict(modelToBytes(model))
  const total = batches.reduce((n, b) => n + b.size, 0)
  return {
    metric: labels ? 'accuracy' : 'agreement',
    samples: total,
    async score(bytes) {
      const pred = await predict(bytes)
      let hit = 0
      pred.forEach((p, bi) => p.forEach((v, i) => (hit += v === (labels ? labels[bi]![i] : reference![bi]![i]) ? 1 : 0)))
      return hit / total
    },
  }
}

const DEFAULT_RATIOS = [0.25, 0.5, 0.7, 0.85, 0.95]

function pruneTo(values: Float32Array, ratio: number): Float32Array {
  const out = values.slice()
  const k = Math.round(ratio * out.length)
  if (k === 0) return out
  const order = Array.from(out.keys()).sort((a, b) => Math.abs(out[a]!) - Math.abs(out[b]!))
  for (let i = 0; i < k; i++) out[order[i]!] = 0
  return out
}

/** Per-layer ratios that one global magnitude threshold gives (fixed layers stay dense); undefined if out of reach. */
function globalRatios(originals: Float32Array[], fixed: boolean[], sparsity: number): number[] | undefined {
  const total = originals.reduce((n, o) => n + o.length, 0)
  const pool = originals.filter((_, i) => !fixed[i])
  const size = pool.reduce((n, o) => n + o.length, 0)
  const k = Math.round(sparsity * total)
  if (k > size || size === 0) return undefined
  if (k === 0) return originals.map(() => 0)
  const all = new Float32Array(size)
  let o = 0
  for (const values of pool) for (let i = 0; i < values.length; i++) all[o++] = Math.abs(values[i]!)
  all.sort()
  const t = all[k - 1]!
  return originals.map((values, i) => {
    if (fixed[i]) return 0
    let below = 0
    for (let j = 0; j < values.length; j++) if (Math.abs(values[j]!) <= t) below++
    return below / values.length
  })
}

/** Per-layer caps for a tolerance, water-filled so that together they remove `target` of the weights. */
function fill(caps: number[], sizes: number[], target: number): number[] {
  const total = sizes.reduce((a, b) => a + b, 0)
  const at = (x: number): number => caps.reduce((n, c, i) => n + Math.min(c, x) * sizes[i]!, 0) / total
  if (at(1) < target) return caps
  let lo = 0
  let hi = 1
  for (let it = 0; it < 50; it++) {
    const mid = (lo + hi) / 2
    if (at(mid) < target) lo = mid
    else hi = mid
  }
  return caps.map((c) => Math.min(c, hi))
}

/**
 * Sensitivity analysis and planning: prune each layer alone at several ratios, measure the metric,
 * then pick per-layer ratios that reach the global sparsity while every layer stays within the
 * smallest tolerance that allows it, and check the combined plan against the budget.
 */
export async function planSensitivity(model: ModelProto, layers: LayerWeight[], options: SensitivityOptions, hooks: CompressHooks = {}): Promise<SensitivityReport> {
  const ratios = [...new Set(options.ratios ?? DEFAULT_RATIOS)].sort((a, b) => a - b)
  const evaluator = await makeEvaluator(model, options.dataset, options.samples ?? 256, hooks.signal)
  const baseline = await evaluator.score(modelToBytes(model))
  const originals = layers.map((l) => readWeight(l.tensor))
  const fixed = layers.map((_, i) => !!options.protectFirstLast && (i === 0 || i === layers.length - 1))
  const restore = (t: TensorProto, v: Float32Array): void => writeWeight(t, v)
  const curve: SensitivityReport['curve'] = []
  for (const [i, layer] of layers.entries()) {
    const points: {ratio: number; value: number; drop: number}[] = []
    if (!fixed[i]) {
      for (const ratio of ratios) {
        throwIfAborted(hooks.signal)
        hooks.progress?.(`sensitivity ${layer.layer} @ ${ratio}`)
        writeWeight(layer.tensor, pruneTo(originals[i]!, ratio))
        const value = await evaluator.score(modelToBytes(model))
        points.push({ratio, value, drop: baseline - value})
      }
      restore(layer.tensor, originals[i]!)
    }
    curve.push({layer: layer.layer, params: originals[i]!.length, points})
  }
  const sizes = originals.map((o) => o.length)
  const capsFor = (tol: number): number[] =>
    curve.map((c, i) => {
      if (fixed[i]) return 0
      let cap = 0
      for (const p of c.points) {
        if (p.drop > tol) break
        cap = p.ratio
      }
      return cap
    })
  const total = sizes.reduce((a, b) => a + b, 0)
  const sparsityOf = (r: number[]): number => r.reduce((n, x, i) => n + x * sizes[i]!, 0) / total
  const tolerances = [...new Set(curve.flatMap((c) => c.points.map((p) => Math.max(0, p.drop))))].sort((a, b) => a - b)
  let plan: number[] | undefined
  for (const tol of [0, ...tolerances]) {
    const caps = capsFor(tol)
    if (sparsityOf(caps) + 1e-9 >= options.sparsity) {
      plan = fill(caps, sizes, options.sparsity)
      break
    }
  }
  if (!plan) {
    const best = sparsityOf(capsFor(Number.POSITIVE_INFINITY))
    throw new KilnError(`sensitivity planning cannot reach sparsity ${options.sparsity}: the probed ratios allow at most ${best.toFixed(3)}`, {
      code: 'E_PRUNE_PLAN',
      tryMessage: 'Probe higher ratios, lower --sparsity, or drop --protect-first-last.',
    })
  }
  // The one global magnitude threshold is a strong plan too; keep whichever measures better.
  const candidates: {source: 'sensitivity' | 'global'; ratios: number[]}[] = [{source: 'sensitivity', ratios: plan}]
  const global = globalRatios(originals, fixed, options.sparsity)
  if (global) candidates.push({source: 'global', ratios: global})
  let best: {source: 'sensitivity' | 'global'; ratios: number[]; value: number} | undefined
  for (const c of candidates) {
    throwIfAborted(hooks.signal)
    layers.forEach((l, i) => writeWeight(l.tensor, pruneTo(originals[i]!, c.ratios[i]!)))
    const value = await evaluator.score(modelToBytes(model))
    layers.forEach((l, i) => restore(l.tensor, originals[i]!))
    if (!best || value > best.value) best = {...c, value}
  }
  plan = best!.ratios
  const value = best!.value
  const final = {sparsity: sparsityOf(plan), value, drop: baseline - value, source: best!.source}
  if (final.drop > options.maxAccuracyDrop) {
    throw new KilnError(
      `no pruning plan reaches sparsity ${options.sparsity} within a ${evaluator.metric} drop of ${options.maxAccuracyDrop}: the best plan drops ${final.drop.toFixed(4)} (${evaluator.metric} ${value.toFixed(4)} vs ${baseline.toFixed(4)}, ${evaluator.samples} samples)`,
      {code: 'E_PRUNE_PLAN', tryMessage: 'Lower --sparsity, raise --max-accuracy-drop, or fine-tune after pruning.'},
    )
  }
  return {
    metric: evaluator.metric,
    baseline,
    samples: evaluator.samples,
    curve,
    plan: layers.map((l, i) => ({layer: l.layer, ratio: plan![i]!})),
    final,
  }
}

