/**
 * The dense linear algebra GPTQ needs at the size of a transformer's layers (K in the thousands):
 * products run on onnxruntime's GEMM, the sequential parts stay here in float64.
 */
import type * as Ort from 'onnxruntime-node'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../onnx/build.js'
import {modelToBytes} from '../../onnx/model.js'
import {DataType} from '../../onnx/proto.js'
import {loadOrt} from '../../runtime/ort.js'

/** Y = A·Bᵀ in float32 on onnxruntime (A: [m, k], B: [n, k], both row-major). */
export class Gemm {
  private constructor(
    private readonly ort: typeof Ort,
    private readonly session: Ort.InferenceSession,
  ) {}

  static async create(threads = 1): Promise<Gemm> {
    const ort = await loadOrt()
    const graph = makeGraph({
      name: 'abt',
      node: [makeNode('Transpose', ['B'], ['Bt'], {perm: [1, 0]}), makeNode('MatMul', ['A', 'Bt'], ['Y'])],
      input: [makeValueInfo('A', DataType.FLOAT, ['m', 'k']), makeValueInfo('B', DataType.FLOAT, ['n', 'k'])],
      output: [makeValueInfo('Y', DataType.FLOAT, ['m', 'n'])],
    })
    const session = await ort.InferenceSession.create(modelToBytes(makeModel(graph, {'': 13})), {intraOpNumThreads: threads, logSeverityLevel: 3})
    return new Gemm(ort, session)
  }

  async abt(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Promise<Float32Array> {
    const out = await this.session.run({A: new this.ort.Tensor('float32', a, [m, k]), B: new this.ort.Tensor('float32', b, [n, k])})
    return out.Y!.data as Float32Array
  }

  async release(): Promise<void> {
    await this.session.release()
  }
}

/** Columns factored at a time by {@link cholesky}; the updates between blocks are GEMMs. */
const CHOLESKY_BLOCK = 256

/**
 * In-place lower Cholesky factor of a symmetric positive definite K×K matrix (row-major; only its
 * lower triangle is read, and the upper one is left as it was). Blocked: each block of columns is
 * factored here, and its panel and the trailing update go through `gemm`. False when the matrix
 * is not positive definite.
 */
export async function cholesky(a: Float64Array, k: number, gemm: Gemm, block = CHOLESKY_BLOCK): Promise<boolean> {
  for (let jb = 0; jb < k; jb += block) {
    const b = Math.min(block, k - jb)
    const end = jb + b
    // The diagonal block, whose updates from earlier blocks are done.
    for (let j = jb; j < end; j++) {
      const rj = j * k
      for (let i = j; i < end; i++) {
        const ri = i * k
        let s = a[ri + j]!
        for (let t = jb; t < j; t++) s -= a[ri + t]! * a[rj + t]!
        if (i === j) {
          if (!(s > 0)) return false
          a[rj + j] = Math.sqrt(s)
        } else a[ri + j] = s / a[rj + j]!
      }
    }
    const m = k - end
    if (m === 0) break
    // Panel: L21 = A21 · L11⁻ᵀ, with L11⁻¹ (lower) by forward substitution.
    const inv = new Float32Array(b * b)
    for (let c = 0; c < b; c++) {
      inv[c * b + c] = 1 / a[(jb + c) * k + jb + c]!
      for (let r = c + 1; r < b; r++) {
        let s = 0
        for (let t = c; t < r; t++) s += a[(jb + r) * k + jb + t]! * inv[t * b + c]!
        inv[r * b + c] = -s / a[(jb + r) * k + jb + r]!
      }
    }
    const a21 = new Float32Array(m * b)
    for (let r = 0; r < m; r++) for (let c = 0; c < b; c++) a21[r * b + c] = a[(end + r) * k + jb + c]!
    const l21 = await gemm.abt(a21, m, b, inv, b)
    for (let r = 0; r < m; r++) for (let c = 0; c < b; c++) a[(end + r) * k + jb + c] = l21[r * b + c]!
    // Trailing update: A22 -= L21·L21ᵀ (lower triangle).
    const y = await gemm.abt(l21, m, b, l21, m)
    for (let r = 0; r < m; r++) {
      const row = (end + r) * k + end
      for (let c = 0; c <= r; c++) a[row + c]! -= y[r * m + c]!
    }
  }
  return true
}
