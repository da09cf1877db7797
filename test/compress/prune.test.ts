import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {checkSparsity, pruneFile, pruneModel} from '../../src/compress/prune.js'
import {prunableWeights, readWeight} from '../../src/compress/prune-weights.js'
import {KilnError} from '../../src/errors.js'
import {weights} from '../../src/onnx/graph.js'
import {readModel} from '../../src/onnx/model.js'
import {tensorData} from '../../src/onnx/tensor.js'
import {MODELS, ensureFixtures} from '../helpers/fixtures.js'
import {agreement, cosine, realFeeds, runModel} from './prune-helpers.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-prune-'))

beforeAll(() => ensureFixtures())

/** How each real model's pruned output is compared with the original's, and the least accepted. */
const CHECKS: Record<keyof typeof MODELS, {output: string; classes: number; min: number; samples?: number}> = {
  // Face scores (one logit per anchor): direction of the score vector.
  blazeface: {output: 'Identity:0', classes: 1, min: 0.95},
  // Speech probability: absolute difference, checked below as 1 - |Δp|.
  sileroV5: {output: 'output', classes: 0, min: 0.95},
  sileroLegacy: {output: 'output', classes: 0, min: 0.95},
  // Text probability map of a scanned page (the second image is blank at this size).
  ocrDet: {output: 'sigmoid_0.tmp_0', classes: 1, min: 0.95, samples: 1},
  // Character class per time step.
  ocrRec: {output: 'softmax_11.tmp_0', classes: 6625, min: 0.9},
  // Text direction probabilities (the test images are not text lines, so the class is a near tie).
  ocrCls: {output: 'softmax_0.tmp_0', classes: 1, min: 0.9},
}

describe('unstructured magnitude pruning on every real model', () => {
  for (const key of Object.keys(MODELS) as (keyof typeof MODELS)[]) {
    it(`${key}: 20% global, still loads, runs and agrees with the original`, async () => {
      const out = path.join(tmp, `${key}.onnx`)
      const r = await pruneFile(MODELS[key], out, {sparsity: 0.2})
      expect(r.layers.length).toBeGreaterThan(0)
      expect(r.sparsity).toBeCloseTo(0.2, 4)
      expect(r.params.after.nonzero).toBeLessThan(r.params.before.nonzero)
      expect(r.sizes.after.zstd).toBeLessThan(r.sizes.before.zstd * 0.95)
      const check = CHECKS[key]
      const feeds = (await realFeeds(key, MODELS[key])).slice(0, check.samples ?? 2)
      for (const feed of feeds) {
        const a = (await runModel(MODELS[key], feed))[check.output]!
        const b = (await runModel(out, feed))[check.output]!
        expect(b.length).toBe(a.length)
        expect(b.every(Number.isFinite)).toBe(true)
        const score = check.classes === 0 ? 1 - Math.abs(a[0]! - b[0]!) : check.classes === 1 ? cosine(a, b) : agreement(a, b, check.classes)
        console.info(`${key}: agreement ${score.toFixed(4)} (min ${check.min})`)
        expect(score, `${key} agreement`).toBeGreaterThanOrEqual(check.min)
      }
    })
  }
})

describe('which weights are pruned', () => {
  it('finds Silero weights in Constant nodes inside If subgraphs', async () => {
    const model = await readModel(MODELS.sileroV5)
    const layers = prunableWeights(model)
    expect(layers.length).toBeGreaterThan(0)
    expect(layers.every((l) => l.ref.kind === 'constant')).toBe(true)
    expect(layers.some((l) => l.path.length > 0)).toBe(true)
    expect(layers.some((l) => l.opType === 'LSTM')).toBe(true)
  })

  it('leaves biases, BatchNormalization statistics and shape tensors exact', async () => {
    const model = await readModel(MODELS.ocrCls)
    const prunable = new Set(prunableWeights(model).map((l) => l.tensor))
    const others = [...weights(model)].filter((w) => !prunable.has(w.tensor))
    const before = others.map((w) => Buffer.from(tensorData(w.tensor).buffer.slice(0)).toString('base64'))
    await pruneModel(model, {sparsity: 0.5})
    expect(others.map((w) => Buffer.from(tensorData(w.tensor).buffer.slice(0)).toString('base64'))).toEqual(before)
    expect(others.length).toBeGreaterThan(0)
  })

  it('global scope varies per layer, layer scope hits the target in every layer', async () => {
    const global = await readModel(MODELS.ocrCls)
    const g = await pruneModel(global, {sparsity: 0.5, scope: 'global'})
    expect(g.sparsity).toBeCloseTo(0.5, 3)
    const spread = g.layers.map((l) => l.sparsity)
    expect(Math.max(...spread) - Math.min(...spread)).toBeGreaterThan(0.2)

    const layer = await readModel(MODELS.ocrCls)
    const l = await pruneModel(layer, {sparsity: 0.5, scope: 'layer'})
    for (const s of l.layers) expect(Math.abs(s.sparsity - 0.5)).toBeLessThanOrEqual(1 / s.params + 1e-9)
  })

  it('protects the first and last layers and applies per-layer overrides', async () => {
    const model = await readModel(MODELS.ocrCls)
    const layers = prunableWeights(model)
    const zerosBefore = layers.map((l) => readWeight(l.tensor).filter((v) => v === 0).length)
    const target = layers[5]!
    const r = await pruneModel(model, {sparsity: 0.4, protectFirstLast: true, overrides: {[target.layer]: 0.9}})
    expect(r.layers[0]!.sparsity * r.layers[0]!.params).toBe(zerosBefore[0])
    expect(r.layers.at(-1)!.sparsity * r.layers.at(-1)!.params).toBe(zerosBefore.at(-1))
    expect(Math.abs(r.layers[5]!.sparsity - 0.9)).toBeLessThanOrEqual(1 / r.layers[5]!.params)
  })

  it('removes the smallest magnitudes', async () => {
    const model = await readModel(MODELS.ocrCls)
    const layer = prunableWeights(model)[3]!
    const original = readWeight(layer.tensor)
    await pruneModel(model, {sparsity: 0.5, scope: 'layer'})
    const pruned = readWeight(layer.tensor)
    let maxRemoved = 0
    let minKept = Number.POSITIVE_INFINITY
    pruned.forEach((v, i) => {
      if (v === 0) maxRemoved = Math.max(maxRemoved, Math.abs(original[i]!))
      else minKept = Math.min(minKept, Math.abs(original[i]!))
    })
    expect(maxRemoved).toBeLessThanOrEqual(minKept)
  })
})

describe('bad input', () => {
  it.each([-0.1, 1, 1.5, Number.NaN])('rejects sparsity %s', async (s) => {
    expect(() => checkSparsity(s)).toThrow(/sparsity must be in \[0, 1\)/)
    const out = path.join(tmp, `bad-${s}.onnx`)
    const err = await pruneFile(MODELS.ocrCls, out, {sparsity: s}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect((err as KilnError).code).toBe('E_PRUNE_SPARSITY')
    expect((err as KilnError).exitCode).toBe(2)
    expect(fs.existsSync(out)).toBe(false)
  })

  it('rejects an override that names no layer', async () => {
    const model = await readModel(MODELS.ocrCls)
    await expect(pruneModel(model, {sparsity: 0.5, overrides: {nosuchlayer: 0.5}})).rejects.toThrow(/names no prunable layer: 'nosuchlayer'/)
  })

  it('rejects options that do not apply to the method instead of ignoring them', async () => {
    const model = await readModel(MODELS.ocrCls)
    await expect(pruneModel(model, {sparsity: 0.5, pattern: '2:4'})).rejects.toThrow(/--pattern applies to --method nm/)
    await expect(pruneModel(model, {sparsity: 0.5, criterion: 'l2'})).rejects.toThrow(/--criterion applies to --method channel/)
    await expect(pruneModel(model, {method: 'nm', scope: 'layer'})).rejects.toThrow(/no scope/)
    await expect(pruneModel(model, {method: 'nm', overrides: {'p2o.Conv.0': 0.3}})).rejects.toThrow(/must be 0/)
    const dataset = {name: 'd', path: 'unused.npz'}
    await expect(pruneModel(model, {sparsity: 0.5, method: 'channel', eval: {dataset, maxAccuracyDrop: 0.01}})).rejects.toThrow(/supports method 'magnitude'/)
    await expect(pruneModel(model, {sparsity: 0.5, scope: 'layer', eval: {dataset, maxAccuracyDrop: 0.01}})).rejects.toThrow(/planner picks every layer/)
  })
})
