import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {parsePattern} from '../../src/compress/nm.js'
import {pruneFile, pruneModel} from '../../src/compress/prune.js'
import {prunableWeights, readWeight} from '../../src/compress/prune-weights.js'
import {KilnError} from '../../src/errors.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import {modelToBytes, writeModel} from '../../src/onnx/model.js'
import {DataType} from '../../src/onnx/proto.js'
import type {ModelProto} from '../../src/onnx/proto.js'
import {makeTensor} from '../../src/onnx/tensor.js'
import {MODELS} from '../helpers/fixtures.js'
import {rng} from './prune-helpers.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-nm-'))

/** MatMul [K=16 → 16], Gemm with transB (B stored [8, 16]) and a Conv with 8 input channels. */
function model(k = 16): ModelProto {
  const r = rng(11)
  const t = (name: string, dims: number[]) => makeTensor(name, DataType.FLOAT, dims, Float32Array.from({length: dims.reduce((a, b) => a * b, 1)}, () => r() * 2 - 1))
  return makeModel(
    makeGraph({
      input: [makeValueInfo('x', DataType.FLOAT, [2, k]), makeValueInfo('img', DataType.FLOAT, [1, 8, 5, 5])],
      output: [makeValueInfo('y', DataType.FLOAT, [2, 8]), makeValueInfo('z', DataType.FLOAT, [1, 4, 3, 3])],
      initializer: [t('w_mm', [k, 16]), t('w_gemm', [8, 16]), t('w_conv', [4, 8, 3, 3])],
      node: [
        makeNode('MatMul', ['x', 'w_mm'], ['h'], {}, {name: 'mm'}),
        makeNode('Gemm', ['h', 'w_gemm'], ['y'], {transB: 1}, {name: 'gemm'}),
        makeNode('Conv', ['img', 'w_conv'], ['z'], {}, {name: 'conv'}),
      ],
    }),
    {'': 13},
  )
}

/** Most non-zeros in any group of m consecutive weights along `axis`. */
function maxPerGroup(values: Float32Array, dims: number[], axis: number, m: number): number {
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1)
  const len = dims[axis]!
  const outer = values.length / (len * inner)
  let worst = 0
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      for (let b = 0; b < len; b += m) {
        let nz = 0
        for (let j = 0; j < m; j++) if (values[(o * len + b + j) * inner + i] !== 0) nz++
        worst = Math.max(worst, nz)
      }
    }
  }
  return worst
}

describe('N:M pruning', () => {
  it.each([
    ['2:4', 2, 4],
    ['4:8', 4, 8],
  ])('%s keeps at most N of every M along each layer’s reduction axis', async (pattern, n, m) => {
    const mdl = model()
    const r = await pruneModel(mdl, {method: 'nm', pattern})
    expect(r.sparsity).toBeCloseTo(1 - n / m, 6)
    const layers = prunableWeights(mdl)
    const axes = Object.fromEntries(layers.map((l) => [l.name, l.reductionAxis]))
    // K of the MatMul, K of a transposed Gemm weight, input channels of the conv.
    expect(axes).toEqual({w_mm: 0, w_gemm: 1, w_conv: 1})
    for (const l of layers) expect(maxPerGroup(readWeight(l.tensor), l.dims, l.reductionAxis, m)).toBe(n)
  })

  it('rejects an axis that M does not divide, naming the layer, and changes nothing', async () => {
    const mdl = model(10)
    const before = modelToBytes(mdl)
    const err = await pruneModel(mdl, {method: 'nm', pattern: '2:4'}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect((err as KilnError).code).toBe('E_PRUNE_NM_AXIS')
    expect((err as Error).message).toMatch(/layer 'mm'.*size 10, which 4 does not divide/)
    expect(modelToBytes(mdl)).toEqual(before)

    const input = path.join(tmp, 'bad.onnx')
    await writeModel(model(10), input)
    const out = path.join(tmp, 'bad-out.onnx')
    await expect(pruneFile(input, out, {method: 'nm', pattern: '4:8'})).rejects.toThrow(/which 8 does not divide/)
    expect(fs.existsSync(out)).toBe(false)
  })

  it('an override of 0 leaves an indivisible layer dense', async () => {
    const mdl = model(10)
    const r = await pruneModel(mdl, {method: 'nm', pattern: '2:4', overrides: {mm: 0}})
    expect(r.layers.find((l) => l.layer === 'mm')!.sparsity).toBe(0)
    expect(r.layers.find((l) => l.layer === 'gemm')!.sparsity).toBeCloseTo(0.5, 6)
  })

  it('rejects malformed patterns and a sparsity that contradicts the pattern', async () => {
    for (const p of ['4:2', '2-4', '0:4', '2:4:8']) expect(() => parsePattern(p)).toThrow(/invalid N:M pattern/)
    await expect(pruneModel(model(), {method: 'nm', pattern: '2:4', sparsity: 0.3})).rejects.toThrow(/gives sparsity 0.5/)
  })

  it('real models: names the first indivisible layer of the PaddleOCR classifier', async () => {
    await expect(pruneFile(MODELS.ocrCls, path.join(tmp, 'cls.onnx'), {method: 'nm'})).rejects.toThrow(/layer 'p2o\.Conv\.0'.*size 3/)
  })
})
