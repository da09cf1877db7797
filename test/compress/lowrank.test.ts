import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {lowrankFile, lowrankModel} from '../../src/compress/lowrank.js'
import {decompose, symmetricEigen} from '../../src/compress/lowrank-svd.js'
import {KilnError} from '../../src/errors.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import {readModel, writeModel} from '../../src/onnx/model.js'
import {DataType} from '../../src/onnx/proto.js'
import type {ModelProto} from '../../src/onnx/proto.js'
import {makeTensor} from '../../src/onnx/tensor.js'
import {loadOrt} from '../../src/runtime/ort.js'
import {MODELS} from '../helpers/fixtures.js'
import {agreement, realFeeds, rng, runModel} from './prune-helpers.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-lowrank-'))

/** A [k×n] matrix of exact rank `rank` plus optional noise. */
function lowRankMatrix(k: number, n: number, rank: number, noise: number, seed: number): Float32Array {
  const r = rng(seed)
  const a = Float32Array.from({length: k * rank}, () => r() * 2 - 1)
  const b = Float32Array.from({length: rank * n}, () => r() * 2 - 1)
  const w = new Float32Array(k * n)
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) {
    let s = 0
    for (let c = 0; c < rank; c++) s += a[i * rank + c]! * b[c * n + j]!
    w[i * n + j] = s + noise * (r() * 2 - 1)
  }
  return w
}

/** x [2,64] → MatMul(64→48, rank 4) → Gemm(transB, 48→40, rank 6) → MatMul(40→2, full rank: cannot shrink) → y. */
function mlp(): ModelProto {
  const wGemm = lowRankMatrix(40, 48, 6, 0, 2)
  return makeModel(
    makeGraph({
      input: [makeValueInfo('x', DataType.FLOAT, [2, 64])],
      output: [makeValueInfo('y', DataType.FLOAT, [2, 2])],
      initializer: [
        makeTensor('w1', DataType.FLOAT, [64, 48], lowRankMatrix(64, 48, 4, 0, 1)),
        makeTensor('w2', DataType.FLOAT, [40, 48], wGemm),
        makeTensor('b2', DataType.FLOAT, [40], Float32Array.from({length: 40}, (_, i) => i / 40)),
        makeTensor('w3', DataType.FLOAT, [40, 2], lowRankMatrix(40, 2, 2, 0, 3)),
      ],
      node: [
        makeNode('MatMul', ['x', 'w1'], ['h1'], {}, {name: 'fc1'}),
        makeNode('Gemm', ['h1', 'w2', 'b2'], ['h2'], {transB: 1, alpha: {float: 0.5}}, {name: 'fc2'}),
        makeNode('MatMul', ['h2', 'w3'], ['y'], {}, {name: 'fc3'}),
      ],
    }),
    {'': 13},
  )
}

describe('low-rank factorisation', () => {
  it('eigen-decomposes a symmetric matrix', () => {
    const a = Float64Array.from([4, 1, 2, 1, 3, 0, 2, 0, 5])
    const {values, vectors} = symmetricEigen(a, 3)
    for (let c = 0; c < 3; c++) {
      for (let r = 0; r < 3; r++) {
        let av = 0
        for (let k = 0; k < 3; k++) av += a[r * 3 + k]! * vectors[k * 3 + c]!
        expect(av).toBeCloseTo(values[c]! * vectors[r * 3 + c]!, 8)
      }
    }
    expect(values[0]).toBeGreaterThanOrEqual(values[1]!)
  })

  it('recovers an exact low rank, wide or tall', () => {
    for (const [k, n] of [[30, 20], [20, 30]] as const) {
      const w = lowRankMatrix(k, n, 3, 0, 9)
      const svd = decompose(w, k, n)
      expect(svd.energy[3]! / svd.energy[0]!).toBeLessThan(1e-8)
      const {a, b} = svd.factor(3)
      for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) {
        let s = 0
        for (let c = 0; c < 3; c++) s += a[i * 3 + c]! * b[c * n + j]!
        expect(s).toBeCloseTo(w[i * n + j]!, 3)
      }
    }
  })

  it('factorises by energy into two MatMuls that compute the same function', async () => {
    const input = path.join(tmp, 'mlp.onnx')
    await writeModel(mlp(), input)
    const out = path.join(tmp, 'mlp-lr.onnx')
    const r = await lowrankFile(input, out, {energy: 0.9999})
    const byLayer = Object.fromEntries(r.layers.map((l) => [l.layer, l]))
    expect(byLayer.fc1!.rank).toBe(4)
    expect(byLayer.fc2!.rank).toBe(6)
    expect(byLayer.fc2!.shape).toEqual([48, 40])
    expect(byLayer.fc1!.error).toBeLessThan(1e-4)
    // 40×2 at full rank would cost 2·42 > 80.
    expect(byLayer.fc3!.skipped).toMatch(/would not reduce/)
    expect(r.factorised).toBe(2)
    expect(r.params.after).toBeLessThan(r.params.before)
    expect(r.flopsPerRow.after).toBeLessThan(r.flopsPerRow.before)
    const model = await readModel(out)
    expect(model.graph!.node.map((n) => n.opType)).toEqual(['MatMul', 'MatMul', 'MatMul', 'Gemm', 'MatMul'])
    expect(model.graph!.initializer.some((t) => t.name === 'w1')).toBe(false)
    const ort = await loadOrt()
    const x = new ort.Tensor('float32', Float32Array.from({length: 128}, (_, i) => Math.sin(i)), [2, 64])
    const a = (await runModel(input, {x})).y!
    const b = (await runModel(out, {x})).y!
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 2)
  })

  it('chooses the rank by rank or by a per-layer error budget, and reports the error', () => {
    const byRank = lowrankModel(mlp(), {rank: 2})
    expect(byRank.layers.filter((l) => l.rank !== undefined).map((l) => l.rank)).toEqual([2, 2])
    for (const l of byRank.layers.filter((x) => x.rank)) expect(l.error).toBeGreaterThan(0.01)
    const byError = lowrankModel(mlp(), {maxError: 0.3})
    for (const l of byError.layers.filter((x) => x.rank !== undefined)) expect(l.error!).toBeLessThanOrEqual(0.3 + 1e-6)
  })

  it('rejects missing, conflicting or out-of-range choices', () => {
    for (const o of [{}, {rank: 2, energy: 0.9}, {energy: 1.5}, {maxError: 0}, {rank: 0}]) {
      expect(() => lowrankModel(mlp(), o)).toThrow(KilnError)
    }
  })

  it('factorises the real PaddleOCR recogniser where it pays and the model still reads text the same', async () => {
    const out = path.join(tmp, 'rec-lr.onnx')
    const r = await lowrankFile(MODELS.ocrRec, out, {energy: 0.98})
    expect(r.factorised).toBeGreaterThan(0)
    expect(r.params.after).toBeLessThan(r.params.before)
    for (const l of r.layers.filter((x) => x.rank !== undefined)) {
      expect(l.rank! * (l.shape[0] + l.shape[1])).toBeLessThan(l.shape[0] * l.shape[1])
      expect(l.error).toBeLessThan(0.2)
    }
    for (const feeds of (await realFeeds('ocrRec', MODELS.ocrRec)).slice(0, 1)) {
      const a = (await runModel(MODELS.ocrRec, feeds))['softmax_11.tmp_0']!
      const b = (await runModel(out, feeds))['softmax_11.tmp_0']!
      expect(agreement(a, b, 6625)).toBeGreaterThanOrEqual(0.9)
    }
  })
})
