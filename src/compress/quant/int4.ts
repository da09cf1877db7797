/**
 * Weight-only 4-bit blockwise quantization of MatMul weights into onnxruntime's MatMulNBits
 * (com.microsoft): each output column is cut into blocks of `blockSize` values along K, each block
 * with its own scale (and zero point).
 * - RTN rounds each weight to the nearest code.
 * - HQQ (half-quadratic) refines the zero point per block to minimise an Lp (p < 1) error, with no
 *   data needed.
 * - GPTQ uses calibration data: it quantizes the rows of W one input dimension at a time and moves
 *   each row's rounding error onto the rows not yet quantized, weighted by the inverse Hessian of the
 *   layer's inputs (H = XᵀX), so that the layer's output on such inputs moves least.
 */
import {KilnError} from '../../errors.js'
import type {Batch} from '../../data/dataset.js'
import {attrFloat, attrInt, walkGraphs} from '../../onnx/graph.js'
import type {WeightRef} from '../../onnx/graph.js'
import {makeNode} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {makeTensor, tensorToFloat32} from '../../onnx/tensor.js'
import {CalibrationRun} from './calibrate.js'
import type {Accumulator} from './calibrate.js'
import {Gemm, cholesky} from './linalg.js'
import {NameScope, ensureOpsetImport, nodeLabel, removeUnusedWeights, weightIndex} from './graph-util.js'
import type {FloatNode} from './static.js'

export type Int4Algorithm = 'rtn' | 'hqq' | 'gptq'

export interface Int4Options {
  blockSize: 32 | 64 | 128 | number
  symmetric: boolean
  algorithm: Int4Algorithm
  /** MatMulNBits accuracy_level: 4 lets onnxruntime compute with int8 activations (fastest on CPU); 0 keeps float compute. */
  accuracyLevel: number
  excluded: (node: NodeProto) => boolean
  /** GPTQ: each MatMul's blocks (by node label), worked out from calibration data by {@link gptqBlocks}. */
  packed?: Map<string, Packed>
}

export interface Int4Result {
  quantizedNodes: Record<string, number>
  leftFloat: FloatNode[]
}

interface Target {
  node: NodeProto
  graph: GraphProto
  k: number
  n: number
  /** Gemm with transB: the weight is stored [N, K]. */
  transposed: boolean
}

/** Why a Gemm cannot become MatMulNBits (+ Add for its bias), or undefined when it can. */
function gemmBlocker(node: NodeProto): string | undefined {
  if (attrInt(node, 'transA', 0) !== 0) return 'Gemm with transA'
  if (attrFloat(node, 'alpha', 1) !== 1) return 'Gemm with alpha ≠ 1'
  if (node.input[2] && attrFloat(node, 'beta', 1) !== 1) return 'Gemm with beta ≠ 1'
  return undefined
}

/** The weight of a target as W[K, N], row-major. */
function weightMatrix(weights: Map<string, WeightRef>, t: Target): Float32Array {
  const w = weights.get(t.node.input[1]!)!
  const data = tensorToFloat32(w.tensor)
  if (!t.transposed) return data
  const {k, n} = t
  const out = new Float32Array(k * n)
  for (let col = 0; col < n; col++) for (let i = 0; i < k; i++) out[i * n + col] = data[col * k + i]!
  return out
}

/** The MatMuls and Gemms int4 quantizes, and those it leaves in float with the reason. Refuses block sizes that do not fit. */
function int4Targets(model: ModelProto, opts: Pick<Int4Options, 'blockSize' | 'symmetric' | 'algorithm' | 'excluded'>): {todo: Target[]; leftFloat: FloatNode[]} {
  const bs = opts.blockSize
  if (![16, 32, 64, 128, 256].includes(bs)) {
    throw new KilnError(`block size ${bs} is not supported: use 32, 64 or 128`, {code: 'E_QUANT_BLOCK', exitCode: 2, tryMessage: '--block-size 32 (most accurate), 64 or 128 (smallest)'})
  }
  if (opts.symmetric && opts.algorithm === 'hqq') {
    throw new KilnError('HQQ optimises a zero point: it needs asymmetric int4', {code: 'E_QUANT_OPTIONS', exitCode: 2, tryMessage: 'Drop the symmetric option, or use --algorithm rtn.'})
  }
  const w = weightIndex(model)
  const leftFloat: FloatNode[] = []
  const todo: Target[] = []
  const indivisible: {node: string; k: number}[] = []
  for (const {graph} of walkGraphs(model)) {
    for (const node of graph.node) {
      if ((node.opType !== 'MatMul' && node.opType !== 'Gemm') || node.domain !== '') continue
      const ref = w.get(node.input[1]!)
      const left = (reason: string) => leftFloat.push({node: nodeLabel(node), opType: node.opType, reason})
      const blocker = node.opType === 'Gemm' ? gemmBlocker(node) : undefined
      if (opts.excluded(node)) left('excluded')
      else if (!ref || ref.tensor.dataType !== DataType.FLOAT) left('weight is computed at run time')
      else if (ref.tensor.dims.length !== 2) left('weight is not a 2-D matrix')
      else if (blocker) left(`${blocker}: no MatMulNBits form`)
      else {
        const transposed = node.opType === 'Gemm' && attrInt(node, 'transB', 0) !== 0
        const [r0, r1] = ref.tensor.dims.map(Number) as [number, number]
        const [k, n] = transposed ? [r1, r0] : [r0, r1]
        if (k % bs !== 0) indivisible.push({node: nodeLabel(node), k})
        else todo.push({node, graph, k, n, transposed})
      }
    }
  }
  if (indivisible.length > 0) {
    // A block size the interface offers that fits every K, else the nodes to leave out.
    const ks = [...todo.map((t) => t.k), ...indivisible.map((d) => d.k)]
    const fits = [32, 64, 128].filter((b) => b !== bs && ks.every((k) => k % b === 0)).pop()
    const names = indivisible.map((d) => d.node)
    throw new KilnError(`block size ${bs} does not divide the inner dimension K of ${indivisible.length} weight(s): ${indivisible.slice(0, 5).map((d) => `${d.node} (K=${d.k})`).join(', ')}${indivisible.length > 5 ? ', …' : ''}`, {
      code: 'E_QUANT_BLOCK',
      exitCode: 2,
      tryMessage: fits ? `Use --block-size ${fits}, which divides every K, or leave them in float: ${names.map((n) => `--exclude ${n}`).join(' ')}` : `Leave them in float: ${names.map((n) => `--exclude ${n}`).join(' ')}`,
    })
  }
  return {todo, leftFloat}
}

export function quantizeInt4(model: ModelProto, opts: Int4Options): Int4Result {
  const bs = opts.blockSize
  const {todo, leftFloat} = int4Targets(model, opts)
  const w = weightIndex(model)
  const names = new NameScope(model)
  const counts: Record<string, number> = {}
  for (const t of todo) {
    const {node, graph, k, n} = t
    const packed = opts.packed?.get(nodeLabel(node)) ?? packBlocks(weightMatrix(w, t), k, n, {...opts, algorithm: opts.algorithm === 'gptq' ? 'rtn' : opts.algorithm})
    const base = node.input[1]!
    const inputs = [node.input[0]!]
    const bName = names.fresh(`${base}_Q4`)
    const sName = names.fresh(`${base}_scales`)
    graph.initializer.push(makeTensor(bName, DataType.UINT8, [n, k / bs, bs / 2], packed.blob), makeTensor(sName, DataType.FLOAT, [n * (k / bs)], packed.scales))
    inputs.push(bName, sName)
    if (packed.zeroPoints) {
      const zName = names.fresh(`${base}_zero_points`)
      const zp = packed.zeroPoints
      graph.initializer.push(zp instanceof Float32Array ? makeTensor(zName, DataType.FLOAT, [n * (k / bs)], zp) : makeTensor(zName, DataType.UINT8, [zp.length], zp))
      inputs.push(zName)
    }
    // A Gemm's bias follows as an Add.
    const bias = node.opType === 'Gemm' ? node.input[2] : undefined
    const out = node.output[0]!
    const product = bias ? names.fresh(`${out}_product`) : out
    const q = makeNode('MatMulNBits', inputs, [product], {K: k, N: n, bits: 4, block_size: bs, accuracy_level: opts.accuracyLevel}, {name: names.fresh(`${node.name || base}_Q4`), domain: 'com.microsoft'})
    const at = graph.node.indexOf(node)
    graph.node.splice(at, 1, q, ...(bias ? [makeNode('Add', [product, bias], [out], {}, {name: names.fresh(`${node.name || base}_bias`)})] : []))
    counts[node.opType] = (counts[node.opType] ?? 0) + 1
  }
  if (todo.length > 0) ensureOpsetImport(model, 'com.microsoft', 1)
  removeUnusedWeights(model)
  return {quantizedNodes: counts, leftFloat}
}

export interface Packed {
  blob: Uint8Array
  scales: Float32Array
  /** uint8 codes, two blocks a byte (RTN, GPTQ asymmetric); float (HQQ); none when symmetric (8). */
  zeroPoints?: Uint8Array | Float32Array
}

/**
 * MatMulNBits' layout of codes (`codes[col * k + i]`, 0–15), one scale per block and, when
 * asymmetric, one zero point per block (`zeros[col * nb + b]`): codes two a byte, low nibble first;
 * uint8 zero points two a byte per column; float zero points as they are.
 */
function packCodes(codes: Uint8Array, scales: Float32Array, zeros: Uint8Array | Float32Array | undefined, k: number, n: number, bs: number): Packed {
  const nb = k / bs
  const blob = new Uint8Array((n * k) / 2)
  for (let i = 0; i < n * k; i += 2) blob[i >> 1] = codes[i]! | (codes[i + 1]! << 4)
  if (!(zeros instanceof Uint8Array)) return {blob, scales, zeroPoints: zeros}
  const zpBytes = Math.ceil(nb / 2)
  const zp = new Uint8Array(n * zpBytes)
  for (let col = 0; col < n; col++) for (let b = 0; b < nb; b++) zp[col * zpBytes + (b >> 1)]! |= b & 1 ? zeros[col * nb + b]! << 4 : zeros[col * nb + b]!
  return {blob, scales, zeroPoints: zp}
}

/**
 * Round-to-nearest scale and zero point of one block, read through `at(j)`: symmetric maps the
 * value of largest magnitude to -8 exactly (zero point 8); asymmetric spans [min(0, lo), max(0, hi)].
 */
function blockParams(at: (j: number) => number, len: number, symmetric: boolean): {scale: number; zero: number; exactZero: number} {
  if (symmetric) {
    let m = 0
    for (let j = 0; j < len; j++) if (Math.abs(at(j)) > Math.abs(m)) m = at(j)
    return {scale: m === 0 ? 1 : m / -8, zero: 8, exactZero: 8}
  }
  let lo = 0
  let hi = 0
  for (let j = 0; j < len; j++) {
    lo = Math.min(lo, at(j))
    hi = Math.max(hi, at(j))
  }
  const scale = hi > lo ? (hi - lo) / 15 : 1
  return {scale, zero: clamp(Math.round(-lo / scale), 0, 15), exactZero: -lo / scale}
}

/** Quantize W[K, N] column by column in blocks along K (RTN or HQQ). */
export function packBlocks(w: Float32Array, k: number, n: number, opts: Pick<Int4Options, 'blockSize' | 'symmetric' | 'algorithm'>): Packed {
  const bs = opts.blockSize
  const nb = k / bs
  const codes = new Uint8Array(n * k)
  const scales = new Float32Array(n * nb)
  const hqq = opts.algorithm === 'hqq'
  const zeros = opts.symmetric ? undefined : hqq ? new Float32Array(n * nb) : new Uint8Array(n * nb)
  const block = new Float32Array(bs)
  const q = new Uint8Array(bs)
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < nb; b++) {
      for (let j = 0; j < bs; j++) block[j] = w[(b * bs + j) * n + col]!
      const idx = col * nb + b
      let {scale, zero, exactZero} = blockParams((j) => block[j]!, bs, opts.symmetric)
      // HQQ starts from the unrounded zero point: it keeps a float one.
      if (hqq) ({scale, zero} = hqqRefine(block, scale, exactZero, q))
      else for (let j = 0; j < bs; j++) q[j] = clamp(Math.round(block[j]! / scale) + zero, 0, 15)
      scales[idx] = scale
      if (zeros) zeros[idx] = zero
      codes.set(q, col * k + b * bs)
    }
  }
  return packCodes(codes, scales, zeros, k, n, bs)
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x
}

/**
 * Half-quadratic optimisation of the zero point (HQQ): alternate a sparsity-promoting shrinkage of
 * the quantization error (Lp, p = 0.7) with a closed-form zero-point update. Writes the codes to `q`.
 */
function hqqRefine(w: Float32Array, scale: number, zero: number, q: Uint8Array, iters = 20): {scale: number; zero: number} {
  const n = w.length
  let beta = 10
  const p = 0.7
  let best = Number.POSITIVE_INFINITY
  let bestZero = zero
  for (let it = 0; it < iters; it++) {
    let err = 0
    let acc = 0
    for (let j = 0; j < n; j++) {
      const code = clamp(Math.round(w[j]! / scale + zero), 0, 15)
      const e = w[j]! - (code - zero) * scale
      err += Math.abs(e)
      const a = Math.abs(e)
      const shrunk = a > 0 ? Math.sign(e) * Math.max(0, a - Math.pow(a, p - 1) / beta) : 0
      acc += code - (w[j]! - shrunk) / scale
    }
    if (err < best) {
      best = err
      bestZero = zero
    } else break
    zero = acc / n
    beta *= 1.01
  }
  for (let j = 0; j < n; j++) q[j] = clamp(Math.round(w[j]! / scale + bestZero), 0, 15)
  return {scale, zero: bestZero}
}

/** Σ xxᵀ over every row of a MatMul's input (its last axis is K): the Hessian GPTQ weighs errors by. */
export class Gram implements Accumulator {
  k = 0
  rows = 0
  sum?: Float64Array

  constructor(private readonly gemm: Gemm) {}

  async add(data: Float32Array, dims: readonly number[]): Promise<void> {
    const k = Number(dims.at(-1))
    if (!(k > 0) || data.length === 0) return
    if (!this.sum) {
      this.k = k
      this.sum = new Float64Array(k * k)
    }
    const rows = data.length / k
    // XᵀX on onnxruntime's GEMM, from Xᵀ ([K, rows]) times itself.
    const xt = new Float32Array(data.length)
    for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) xt[i * rows + r] = data[r * k + i]!
    const y = await this.gemm.abt(xt, k, rows, xt, k)
    const sum = this.sum
    for (let i = 0; i < k * k; i++) sum[i]! += y[i]!
    this.rows += rows
  }

  /** The mean over rows. */
  mean(): Float64Array {
    const h = this.sum!
    for (let i = 0; i < h.length; i++) h[i]! /= this.rows
    return h
  }
}

/** Rows of W quantized together before their error reaches the rows below in one GEMM (GPTQ's lazy batch). */
const GPTQ_BATCH = 128
/** Dampening added to H's diagonal, as a fraction of its mean: keeps H invertible where inputs are rare. */
const GPTQ_DAMP = 0.01

export interface GptqFactor {
  /** c_ij = R_ij / R_jj in the upper triangle (K×K, row-major), in act-order. */
  coef: Float64Array
  /** Row i of the act-order is row order[i] of W. */
  order: Int32Array
}

/** P·H·Pᵀ in place for the permutation `order` (row i of the result is row order[i]), with one row of extra memory. */
function permuteSymmetric(h: Float64Array, k: number, order: Int32Array): void {
  const tmp = new Float64Array(k)
  // Rows, cycle by cycle.
  const done = new Uint8Array(k)
  for (let start = 0; start < k; start++) {
    if (done[start]) continue
    tmp.set(h.subarray(start * k, (start + 1) * k))
    let i = start
    for (;;) {
      done[i] = 1
      const j = order[i]!
      if (j === start) {
        h.set(tmp, i * k)
        break
      }
      h.copyWithin(i * k, j * k, (j + 1) * k)
      i = j
    }
  }
  // Then the columns of each row.
  for (let r = 0; r < k; r++) {
    const row = r * k
    for (let j = 0; j < k; j++) tmp[j] = h[row + order[j]!]!
    h.set(tmp, row)
  }
}

/**
 * GPTQ's coefficients for one layer input, from `h` = E[xxᵀ] (K×K, row-major), in place. The inputs
 * are put in act-order (decreasing E[x²]); with H in that order = RRᵀ (R upper triangular, from the
 * Cholesky factor of H in reversed order), the upper triangle of `h` becomes R_ij / R_jj (i < j).
 * Undefined when the inputs were always zero, or H stays singular however much it is damped. One
 * factor serves every MatMul that reads the same input.
 */
export async function gptqFactor(h: Float64Array, k: number, gemm: Gemm): Promise<GptqFactor | undefined> {
  // Act-order: the inputs that carry the most energy are quantized first, while the most rows remain
  // to take up their error. H is permuted to that order.
  const energy = Array.from({length: k}, (_, i) => h[i * k + i]!)
  const order = Int32Array.from([...Array(k).keys()].sort((a, b) => energy[b]! - energy[a]! || a - b))
  permuteSymmetric(h, k, order)
  const diag = new Float64Array(k)
  let mean = 0
  for (let i = 0; i < k; i++) mean += diag[i] = h[i * k + i]!
  mean /= k
  if (!(mean > 0)) return undefined
  // The factorization works on the lower triangle, filled from the upper one (which keeps H) in
  // reversed order: R[a][b] = H[k-1-a][k-1-b], an upper-triangle entry when a ≥ b.
  for (let damp = GPTQ_DAMP; damp <= 100; damp *= 10) {
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < a; b++) h[a * k + b] = h[(k - 1 - a) * k + (k - 1 - b)]!
      h[a * k + a] = diag[k - 1 - a]! + damp * mean
    }
    if (!(await cholesky(h, k, gemm))) continue
    // R_ij = L[k-1-i][k-1-j]: read from the lower triangle, written to the upper one.
    for (let j = 0; j < k; j++) diag[j] = h[(k - 1 - j) * k + (k - 1 - j)]!
    for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) h[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)]! / diag[j]!
    return {coef: h, order}
  }
  return undefined
}

/**
 * GPTQ for W[K, N] (K the input dimension, rows in row-major order), in its nearest-plane form,
 * with the coefficients c_ij = R_ij / R_jj of {@link gptqFactor}: rows are taken in the factor's
 * act-order, and the error ‖Rᵀ(w − q)‖² is taken out one row at a time, row j rounded from its
 * target w_j + Σ_{i<j} c_ij (w_i − q_i), the best value given the rows already quantized (the same
 * targets as GPTQ's inverse-Hessian updates, with no matrix inverse). Since rows leave their blocks'
 * order, block parameters are fixed beforehand from the weights (GPTQ's "static groups"), which
 * keeps MatMulNBits' layout with no group index.
 */
export async function gptqPack(weights: Float32Array, k: number, n: number, factor: GptqFactor, opts: Pick<Int4Options, 'blockSize' | 'symmetric'>, gemm: Gemm): Promise<Packed> {
  const bs = opts.blockSize
  const {coef: r, order} = factor
  const nb = k / bs
  const codes = new Uint8Array(n * k)
  const scales = new Float32Array(n * nb)
  const zeros = opts.symmetric ? undefined : new Uint8Array(n * nb)
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < nb; b++) {
      const p = blockParams((j) => weights[(b * bs + j) * n + col]!, bs, opts.symmetric)
      scales[col * nb + b] = p.scale
      if (zeros) zeros[col * nb + b] = p.zero
    }
  }
  // W's rows in act-order.
  const w = new Float32Array(k * n)
  for (let i = 0; i < k; i++) w.set(weights.subarray(order[i]! * n, (order[i]! + 1) * n), i * n)
  const target = Float64Array.from(w)
  const step = Math.max(GPTQ_BATCH, bs)
  const err = new Float64Array(step * n)
  for (let i1 = 0; i1 < k; i1 += step) {
    const i2 = Math.min(i1 + step, k)
    for (let i = i1; i < i2; i++) {
      const row = i * n
      // The parameters of the block this row belongs to in W's own order.
      const b = Math.floor(order[i]! / bs)
      const e = (i - i1) * n
      for (let col = 0; col < n; col++) {
        const s = scales[col * nb + b]!
        const z = zeros ? zeros[col * nb + b]! : 8
        const code = clamp(Math.round(target[row + col]! / s) + z, 0, 15)
        codes[col * k + order[i]!] = code
        err[e + col] = w[row + col]! - (code - z) * s
      }
      // The rest of this batch at once.
      for (let j = i + 1; j < i2; j++) {
        const c = r[i * k + j]!
        if (c === 0) continue
        const rj = j * n
        for (let col = 0; col < n; col++) target[rj + col]! += c * err[e + col]!
      }
    }
    // The rows below, in one product: target[j] += Σ_i c_ij · err_i.
    const m = k - i2
    const bb = i2 - i1
    if (m === 0) continue
    const coef = new Float32Array(m * bb)
    for (let j = 0; j < m; j++) for (let i = 0; i < bb; i++) coef[j * bb + i] = r[(i1 + i) * k + i2 + j]!
    const errT = new Float32Array(n * bb)
    for (let i = 0; i < bb; i++) for (let col = 0; col < n; col++) errT[col * bb + i] = err[i * n + col]!
    const y = await gemm.abt(coef, m, bb, errT, n)
    for (let j = 0; j < m; j++) {
      const rj = (i2 + j) * n
      for (let col = 0; col < n; col++) target[rj + col]! += y[j * n + col]!
    }
  }
  return packCodes(codes, scales, zeros, k, n, bs)
}

/** Memory the Hessians of one calibration pass may take; more inputs take more passes over the data. */
const GRAM_BUDGET = 256 * 2 ** 20

/**
 * GPTQ blocks for every MatMul int4 would quantize, by node label. The Hessians of their inputs are
 * gathered from the calibration batches in as many passes as {@link GRAM_BUDGET} needs, and each is
 * factored once for all the MatMuls that read that input. A MatMul with no usable statistics (an If
 * branch no sample took, inputs always zero) is listed in `unseen` and rounded to nearest.
 */
export async function gptqBlocks(
  model: ModelProto,
  opts: Pick<Int4Options, 'blockSize' | 'symmetric' | 'excluded'>,
  batches: () => AsyncIterable<Batch>,
  run: {threads?: number; signal?: AbortSignal; progress?: (message: string) => void} = {},
): Promise<{packed: Map<string, Packed>; unseen: string[]; samples: number; batches: number; passes: number}> {
  const {todo} = int4Targets(model, {...opts, algorithm: 'gptq'})
  const w = weightIndex(model)
  const byInput = new Map<string, Target[]>()
  for (const t of todo) byInput.set(t.node.input[0]!, [...(byInput.get(t.node.input[0]!) ?? []), t])
  const passes: string[][] = []
  let used = Number.POSITIVE_INFINITY
  for (const [input, targets] of byInput) {
    const bytes = targets[0]!.k ** 2 * 8
    if (used + bytes > GRAM_BUDGET) (passes.push([]), (used = 0))
    passes.at(-1)!.push(input)
    used += bytes
  }
  const packed = new Map<string, Packed>()
  const unseen: string[] = []
  let samples = 0
  let count = 0
  let done = 0
  if (passes.length === 0) return {packed, unseen, samples, batches: count, passes: 0}
  // One session hands out every input; each pass fetches only its own.
  const gemm = await Gemm.create(run.threads)
  const calibration = await CalibrationRun.open(model, [...byInput.keys()], run.threads)
  try {
    for (const [p, inputs] of passes.entries()) {
      run.progress?.(`GPTQ: gathering input statistics${passes.length > 1 ? ` (pass ${p + 1} of ${passes.length})` : ''}`)
      const cal = await calibration.collect(batches(), {tensors: inputs, signal: run.signal, accumulator: () => new Gram(gemm)})
      samples = cal.samples
      count = cal.batches
      for (const input of inputs) {
        const gram = cal.stats.get(input)
        cal.stats.delete(input)
        const targets = byInput.get(input)!
        const factor = gram && gram.rows > 0 && gram.k === targets[0]!.k ? await gptqFactor(gram.mean(), gram.k, gemm) : undefined
        for (const t of targets) {
          const {node, k, n} = t
          if (run.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
          const weights = weightMatrix(w, t)
          if (!factor) unseen.push(nodeLabel(node))
          packed.set(nodeLabel(node), factor ? await gptqPack(weights, k, n, factor, opts, gemm) : packBlocks(weights, k, n, {...opts, algorithm: 'rtn'}))
          run.progress?.(`GPTQ: ${++done} of ${todo.length} MatMuls`)
        }
      }
    }
  } finally {
    await calibration.close()
    await gemm.release()
  }
  return {packed, unseen, samples, batches: count, passes: passes.length}
}
