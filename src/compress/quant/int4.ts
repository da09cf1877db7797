/**
 * Weight-only 4-bit blockwise quantization of MatMul weights into onnxruntime's MatMulNBits
 * (com.microsoft): each output column is cut into blocks of `blockSize` values along K, each block
 * with its own scale (and zero point). RTN rounds to nearest; HQQ (half-quadratic) refines the zero
 * point per block to minimise an Lp (p < 1) error, with no data needed.
 */
import {KilnError} from '../../errors.js'
import {walkGraphs} from '../../onnx/graph.js'
import {makeNode} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {makeTensor, tensorToFloat32} from '../../onnx/tensor.js'
import {NameScope, ensureOpsetImport, nodeLabel, removeUnusedWeights, weightIndex} from './graph-util.js'
import type {FloatNode} from './static.js'

export type Int4Algorithm = 'rtn' | 'hqq'

export interface Int4Options {
  blockSize: 32 | 64 | 128 | number
  symmetric: boolean
  algorithm: Int4Algorithm
  /** MatMulNBits accuracy_level: 4 lets onnxruntime compute with int8 activations (fastest on CPU); 0 keeps float compute. */
  accuracyLevel: number
  excluded: (node: NodeProto) => boolean
}

export interface Int4Result {
  quantizedNodes: Record<string, number>
  leftFloat: FloatNode[]
}

export function quantizeInt4(model: ModelProto, opts: Int4Options): Int4Result {
  const bs = opts.blockSize
  if (![16, 32, 64, 128, 256].includes(bs)) {
    throw new KilnError(`block size ${bs} is not supported: use 32, 64 or 128`, {code: 'E_QUANT_BLOCK', exitCode: 2, tryMessage: '--block-size 32 (most accurate), 64 or 128 (smallest)'})
  }
  if (opts.symmetric && opts.algorithm === 'hqq') {
    throw new KilnError('HQQ optimises a zero point: it needs asymmetric int4', {code: 'E_QUANT_OPTIONS', exitCode: 2, tryMessage: 'Drop the symmetric option, or use --algorithm rtn.'})
  }
  const w = weightIndex(model)
  const names = new NameScope(model)
  const leftFloat: FloatNode[] = []
  const todo: {node: NodeProto; graph: GraphProto; k: number; n: number}[] = []
  const indivisible: string[] = []
  for (const {graph} of walkGraphs(model)) {
    for (const node of graph.node) {
      if (node.opType !== 'MatMul' || node.domain !== '') continue
      const ref = w.get(node.input[1]!)
      if (opts.excluded(node)) leftFloat.push({node: nodeLabel(node), opType: 'MatMul', reason: 'excluded'})
      else if (!ref || ref.tensor.dataType !== DataType.FLOAT) leftFloat.push({node: nodeLabel(node), opType: 'MatMul', reason: 'weight is computed at run time'})
      else if (ref.tensor.dims.length !== 2) leftFloat.push({node: nodeLabel(node), opType: 'MatMul', reason: 'weight is not a 2-D matrix'})
      else {
        const [k, n] = ref.tensor.dims.map(Number) as [number, number]
        if (k % bs !== 0) indivisible.push(`${nodeLabel(node)} (K=${k})`)
        else todo.push({node, graph, k, n})
      }
    }
  }
  if (indivisible.length > 0) {
    throw new KilnError(`block size ${bs} does not divide the inner dimension K of ${indivisible.length} MatMul weight(s): ${indivisible.slice(0, 5).join(', ')}${indivisible.length > 5 ? ', …' : ''}`, {
      code: 'E_QUANT_BLOCK',
      exitCode: 2,
      tryMessage: `Use a block size that divides K (e.g. --block-size ${[32, 16].find((b) => b < bs) ?? 16}), or --exclude those nodes.`,
    })
  }
  for (const {node, graph, k, n} of todo) {
    const ref = w.get(node.input[1]!)!
    const packed = packBlocks(tensorToFloat32(ref.tensor), k, n, opts)
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
    const q = makeNode('MatMulNBits', inputs, [node.output[0]!], {K: k, N: n, bits: 4, block_size: bs, accuracy_level: opts.accuracyLevel}, {name: names.fresh(`${node.name || base}_Q4`), domain: 'com.microsoft'})
    graph.node[graph.node.indexOf(node)] = q
  }
  if (todo.length > 0) ensureOpsetImport(model, 'com.microsoft', 1)
  removeUnusedWeights(model)
  return {quantizedNodes: todo.length ? {MatMul: todo.length} : {}, leftFloat}
}

interface Packed {
  blob: Uint8Array
  scales: Float32Array
  zeroPoints?: Uint8Array | Float32Array
}

/** Quantize W[K, N] column by column in blocks along K. */
export function packBlocks(w: Float32Array, k: number, n: number, opts: Pick<Int4Options, 'blockSize' | 'symmetric' | 'algorithm'>): Packed {
  const bs = opts.blockSize
  const nb = k / bs
  const blob = new Uint8Array(n * nb * (bs / 2))
  const scales = new Float32Array(n * nb)
  const hqq = opts.algorithm === 'hqq'
  const zpBytes = Math.ceil(nb / 2)
  const zpU8 = !opts.symmetric && !hqq ? new Uint8Array(n * zpBytes) : undefined
  const zpF = hqq ? new Float32Array(n * nb) : undefined
  const block = new Float32Array(bs)
  const q = new Uint8Array(bs)
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < nb; b++) {
      for (let j = 0; j < bs; j++) block[j] = w[(b * bs + j) * n + col]!
      const idx = col * nb + b
      if (opts.symmetric) {
        let m = 0
        for (let j = 0; j < bs; j++) if (Math.abs(block[j]!) > Math.abs(m)) m = block[j]!
        // The value of largest magnitude maps to -8 exactly; the rest fit in [-8, 7].
        const s = m === 0 ? 1 : m / -8
        scales[idx] = s
        for (let j = 0; j < bs; j++) q[j] = clamp(Math.round(block[j]! / s) + 8, 0, 15)
      } else {
        let lo = 0
        let hi = 0
        for (let j = 0; j < bs; j++) {
          lo = Math.min(lo, block[j]!)
          hi = Math.max(hi, block[j]!)
        }
        let s = hi > lo ? (hi - lo) / 15 : 1
        const z = clamp(Math.round(-lo / s), 0, 15)
        if (hqq) {
          const r = hqqRefine(block, s, -lo / s, q)
          s = r.scale
          zpF![idx] = r.zero
        } else {
          for (let j = 0; j < bs; j++) q[j] = clamp(Math.round(block[j]! / s) + z, 0, 15)
          zpU8![col * zpBytes + (b >> 1)]! |= b & 1 ? z << 4 : z
        }
        scales[idx] = s
      }
      const off = idx * (bs / 2)
      for (let j = 0; j < bs; j += 2) blob[off + (j >> 1)] = q[j]! | (q[j + 1]! << 4)
    }
  }
  return {blob, scales, zeroPoints: zpU8 ?? zpF}
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
