import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {Gemm, cholesky} from '../../../src/compress/quant/linalg.js'

let gemm: Gemm
beforeAll(async () => {
  gemm = await Gemm.create(1)
})
afterAll(async () => {
  await gemm.release()
})

/** A symmetric positive definite k×k matrix BBᵀ + I. */
function spd(k: number, seed: number): Float64Array {
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff - 0.5) * 2
  const b = Float64Array.from({length: k * k}, rnd)
  const a = new Float64Array(k * k)
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    let s = i === j ? 1 : 0
    for (let t = 0; t < k; t++) s += b[i * k + t]! * b[j * k + t]!
    a[i * k + j] = s
  }
  return a
}

describe('linear algebra for GPTQ', () => {
  it('A·Bᵀ on onnxruntime matches the plain product', async () => {
    const a = Float32Array.from({length: 3 * 4}, (_, i) => i - 5)
    const b = Float32Array.from({length: 2 * 4}, (_, i) => (i % 3) - 1)
    const y = await gemm.abt(a, 3, 4, b, 2)
    for (let r = 0; r < 3; r++) for (let c = 0; c < 2; c++) {
      let s = 0
      for (let t = 0; t < 4; t++) s += a[r * 4 + t]! * b[c * 4 + t]!
      expect(y[r * 2 + c]).toBeCloseTo(s, 5)
    }
  })

  it.each([
    [70, 16],
    [40, 256],
  ])('blocked Cholesky (k=%i, blocks of %i) gives L with LLᵀ = A', async (k, block) => {
    const a = spd(k, 7)
    const l = a.slice()
    expect(await cholesky(l, k, gemm, block)).toBe(true)
    let worst = 0
    for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) {
      let s = 0
      for (let t = 0; t <= j; t++) s += l[i * k + t]! * l[j * k + t]!
      worst = Math.max(worst, Math.abs(s - a[i * k + j]!) / a[i * k + i]!)
    }
    expect(worst).toBeLessThan(1e-5)
  })

  it('says when the matrix is not positive definite', async () => {
    const k = 40
    const a = spd(k, 3)
    a[20 * k + 20] = -1
    expect(await cholesky(a, k, gemm, 16)).toBe(false)
  })
})
