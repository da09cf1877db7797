import {UsageError} from '../errors.js'
import {seededRandom} from '../data/random.js'
import {makeNode} from '../onnx/build.js'
import type {ModelProto} from '../onnx/proto.js'
import {DataType} from '../onnx/proto.js'
import {makeTensor} from '../onnx/tensor.js'
import type {ArtifactSizes, CompressHooks, ParamCount} from './prune-io.js'
import {throwIfAborted, transformModelFile} from './prune-io.js'
import {dropWeight, prunableWeights, readWeight, takenNames, uniqueName, writeWeight} from './prune-weights.js'

/**
 * How clustered weights are stored:
 * - `codebook`: a uint8 index tensor plus a k-entry codebook, decoded in the graph by Cast + Gather.
 *   The file holds one byte per weight instead of four; onnxruntime folds the decode into a constant
 *   when the session is created, so inference runs at the fp32 speed.
 * - `float`: the weights keep their float type, each replaced by its centroid; only the artifact
 *   compression (zstd) sees the repetition.
 */
export type ClusterStorage = 'codebook' | 'float'

export interface ClusterOptions {
  /** Clusters per layer, 4..256. */
  clusters: number
  /** Default `codebook`. */
  storage?: ClusterStorage
  /** Seed of the k-means++ initialisation (default 0): the same seed gives the same model. */
  seed?: number
  /** Lloyd iterations at most (default 30). */
  iterations?: number
  /** Layer (node) or weight names to leave alone. */
  exclude?: string[]
}

export interface ClusterLayer {
  layer: string
  weight: string
  params: number
  clusters: number
  /** RMS of the clustering error relative to the RMS of the weights. */
  error: number
}

export interface ClusterReport {
  storage: ClusterStorage
  clusters: number
  layers: ClusterLayer[]
}

/** Index of the first sorted value >= x. */
function lowerBound(sorted: Float32Array | Float64Array, x: number, lo = 0, hi = sorted.length): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (sorted[mid]! < x) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * 1-D k-means: k-means++ seeding on a deterministic sample, then Lloyd iterations on the sorted
 * values, where each cluster is a contiguous run and its mean comes from prefix sums (O(k log n)
 * per iteration, whatever the layer size).
 */
export function kmeans1d(values: Float32Array, k: number, seed: number, iterations = 30): Float64Array {
  const sorted = values.slice().sort()
  const n = sorted.length
  const prefix = new Float64Array(n + 1)
  for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i]! + sorted[i]!
  const random = seededRandom(seed)
  const sampleSize = Math.min(n, 8192)
  const sample = Float64Array.from({length: sampleSize}, (_, i) => sorted[Math.floor(((i + random()) * n) / sampleSize)]!)
  const centers: number[] = [sample[Math.floor(random() * sampleSize)]!]
  const dist = sample.map((x) => (x - centers[0]!) ** 2)
  while (centers.length < k) {
    const total = dist.reduce((a, b) => a + b, 0)
    if (total === 0) break
    let r = random() * total
    let pick = sampleSize - 1
    for (let i = 0; i < sampleSize; i++) {
      r -= dist[i]!
      if (r <= 0) {
        pick = i
        break
      }
    }
    const c = sample[pick]!
    centers.push(c)
    for (let i = 0; i < sampleSize; i++) dist[i] = Math.min(dist[i]!, (sample[i]! - c) ** 2)
  }
  let c = Float64Array.from(new Set(centers)).sort()
  for (let it = 0; it < iterations; it++) {
    const next = new Float64Array(c.length)
    let start = 0
    let moved = false
    for (let j = 0; j < c.length; j++) {
      const end = j === c.length - 1 ? n : lowerBound(sorted, (c[j]! + c[j + 1]!) / 2, start)
      next[j] = end > start ? (prefix[end]! - prefix[start]!) / (end - start) : c[j]!
      if (next[j] !== c[j]) moved = true
      start = end
    }
    c = next.sort()
    if (!moved) break
  }
  return c
}

/** Nearest centre of each value (centres sorted ascending). */
export function assign(values: Float32Array, centers: Float64Array): Uint8Array {
  const out = new Uint8Array(values.length)
  const bounds = new Float64Array(centers.length - 1)
  for (let j = 0; j < bounds.length; j++) bounds[j] = (centers[j]! + centers[j + 1]!) / 2
  for (let i = 0; i < values.length; i++) out[i] = lowerBound(bounds, values[i]!)
  return out
}

export function checkClusters(k: number): void {
  if (!Number.isInteger(k) || k < 4 || k > 256) {
    throw new UsageError(`clusters must be an integer from 4 to 256, got ${k}`, {
      code: 'E_CLUSTER_K',
      tryMessage: '16 (4-bit) is a good start; indices are stored as one byte, so 256 is the most.',
    })
  }
}

/** Cluster every real weight tensor of the model in place. */
export function clusterModel(model: ModelProto, options: ClusterOptions, hooks: CompressHooks = {}): ClusterReport {
  checkClusters(options.clusters)
  const storage = options.storage ?? 'codebook'
  const exclude = new Set(options.exclude ?? [])
  const taken = takenNames(model)
  const layers: ClusterLayer[] = []
  for (const l of prunableWeights(model)) {
    if (exclude.has(l.layer) || exclude.has(l.name) || l.dims.reduce((a, b) => a * b, 1) <= options.clusters) continue
    throwIfAborted(hooks.signal)
    hooks.progress?.(`k-means ${l.layer}`)
    const values = readWeight(l.tensor)
    const centers = kmeans1d(values, options.clusters, options.seed ?? 0, options.iterations)
    const index = assign(values, centers)
    let err = 0
    let norm = 0
    const clustered = new Float32Array(values.length)
    for (let i = 0; i < values.length; i++) {
      clustered[i] = centers[index[i]!]!
      err += (values[i]! - clustered[i]!) ** 2
      norm += values[i]! ** 2
    }
    layers.push({layer: l.layer, weight: l.name, params: values.length, clusters: centers.length, error: norm ? Math.sqrt(err / norm) : 0})
    if (storage === 'float') {
      writeWeight(l.tensor, clustered)
      continue
    }
    // The decoded tensor takes the weight's name, so every reader (Identity chains, subgraphs) is unchanged.
    const graph = l.ref.graph
    const book = makeTensor(uniqueName(taken, `${l.name}_codebook`), l.tensor.dataType, [centers.length], new Float32Array(0))
    writeWeight(book, Float32Array.from(centers), [centers.length])
    const idx = makeTensor(uniqueName(taken, `${l.name}_indices`), DataType.UINT8, l.dims, index)
    const wide = uniqueName(taken, `${l.name}_indices_i32`)
    dropWeight(l.ref)
    graph.initializer.push(book, idx)
    graph.node.unshift(
      makeNode('Cast', [idx.name], [wide], {to: DataType.INT32}, {name: uniqueName(taken, `${l.name}_cast`)}),
      makeNode('Gather', [book.name, wide], [l.name], {axis: 0}, {name: uniqueName(taken, `${l.name}_decode`)}),
    )
  }
  if (layers.length === 0) {
    throw new UsageError(`the model has no weight tensor larger than ${options.clusters} values to cluster`, {code: 'E_CLUSTER_NOTHING'})
  }
  return {storage, clusters: options.clusters, layers}
}

export interface ClusterFileResult extends ClusterReport {
  params: {before: ParamCount; after: ParamCount}
  sizes: {before: ArtifactSizes; after: ArtifactSizes}
}

/** Cluster a model file into `output` (atomic) and measure it. */
export async function clusterFile(input: string, output: string, options: ClusterOptions, hooks: CompressHooks = {}): Promise<ClusterFileResult> {
  checkClusters(options.clusters)
  const r = await transformModelFile(input, output, (model) => clusterModel(model, options, hooks))
  return {...r.result, params: {before: r.paramsBefore, after: r.paramsAfter}, sizes: {before: r.before, after: r.after}}
}
