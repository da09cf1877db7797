import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {writeLfwNpz, BLAZEFACE_LFW_TASK} from '../../src/data/lfw.js'
import {evaluateModel} from '../../src/eval/evaluate.js'
import {baselineMetrics, labelMetrics, rocAuc} from '../../src/eval/metrics.js'
import {writeNpz} from '../../src/data/npz-write.js'
import {ensureTrainedModels, fixture, MODELS} from '../helpers/fixtures.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-eval-'))

describe('evaluateModel', () => {
  let trained: ReturnType<typeof ensureTrainedModels>
  let meta: {models: Record<string, {accuracy: number}>}
  beforeAll(() => {
    trained = ensureTrainedModels()
    meta = JSON.parse(fs.readFileSync(trained.meta, 'utf8'))
  }, 300_000)

  it('evaluates the Fashion-MNIST CNN on the full 10k test set in seconds, matching the accuracy measured at training', async () => {
    const r = await evaluateModel({model: trained.cnn, dataset: {name: 'test', path: trained.test}, metrics: ['accuracy', 'top2', 'precision', 'recall', 'f1'], batchSize: 250})
    expect(r.samples).toBe(10_000)
    expect(r.metrics.accuracy).toBeCloseTo(meta.models.cnn!.accuracy, 4)
    expect(r.metrics.top2).toBeGreaterThan(r.metrics.accuracy!)
    expect(r.metrics.f1).toBeGreaterThan(0.5)
    expect(r.metrics.f1).toBeLessThanOrEqual(1)
    expect(r.seconds).toBeLessThan(30)
  }, 60_000)

  it('compares with a baseline: agreement, cosine, output error and the baseline accuracy', async () => {
    const r = await evaluateModel({
      model: trained.cnn,
      baseline: trained.mlp,
      dataset: {name: 'test', path: trained.test, limit: 2000},
      metrics: ['accuracy', 'agreement', 'cosine', 'outputError'],
    })
    expect(r.metrics['baseline.accuracy']).toBeGreaterThan(0.7)
    expect(r.metrics.agreement).toBeGreaterThan(0.6)
    expect(r.metrics.agreement).toBeLessThan(1)
    expect(r.metrics['outputError.logits.maxAbs']).toBeGreaterThan(0)
    const self = await evaluateModel({model: trained.cnn, baseline: trained.cnn, dataset: {name: 'test', path: trained.test, limit: 500}, metrics: ['agreement', 'cosine', 'outputError']})
    expect(self.metrics.agreement).toBe(1)
    expect(self.metrics.cosine).toBeCloseTo(1, 6)
    expect(self.metrics['outputError.logits.maxAbs']).toBe(0)
  }, 60_000)

  it('reproduces BlazeFace accuracy 0.99 on the LFW face/non-face subset in fp32', async () => {
    const file = await writeLfwNpz(fixture('data/lfw_subset.npy'), path.join(tmp, 'lfw.npz'))
    const r = await evaluateModel({model: MODELS.blazeface, dataset: {name: 'lfw', path: file}, metrics: ['accuracy', 'auc', 'f1'], ...BLAZEFACE_LFW_TASK, outputs: [...BLAZEFACE_LFW_TASK.outputs]})
    expect(r.samples).toBe(200)
    expect(r.metrics.accuracy).toBeCloseTo(0.99, 2)
    expect(r.metrics.auc).toBeGreaterThan(0.99)
  }, 60_000)

  it('runs a custom metric module', async () => {
    const mod = path.join(tmp, 'mean-max.mjs')
    fs.writeFileSync(mod, `export default {name: 'meanMax', init: () => ({s: 0, n: 0}), update(st, b) { const o = Object.values(b.outputs)[0]; const w = o.data.length / b.size; for (let i = 0; i < b.size; i++) { st.s += Math.max(...o.data.subarray(i*w, (i+1)*w)); st.n++ } return st }, result: (st) => st.s / st.n }`)
    const r = await evaluateModel({model: trained.mlp, dataset: {name: 'test', path: trained.test, limit: 100}, metrics: ['accuracy', './mean-max.mjs'], baseDir: tmp})
    expect(r.metrics.meanMax).toBeGreaterThan(0)
    expect(r.metrics.accuracy).toBeGreaterThan(0.5)
  })

  it('rejects out-of-range labels and missing labels clearly', async () => {
    const bad = path.join(tmp, 'bad-labels.npz')
    await writeNpz(bad, {input: {dtype: '<f4', shape: [4, 1, 28, 28], data: new Float32Array(4 * 784)}, labels: {dtype: '<i8', shape: [4], data: BigInt64Array.from([1n, 2n, 12n, 3n])}})
    await expect(evaluateModel({model: trained.mlp, dataset: {name: 'bad', path: bad}})).rejects.toThrow(/label 12 of sample 2 is out of range for a model with 10 classes/)
    const none = path.join(tmp, 'no-labels.npz')
    await writeNpz(none, {input: {dtype: '<f4', shape: [4, 1, 28, 28], data: new Float32Array(4 * 784)}})
    await expect(evaluateModel({model: trained.mlp, dataset: {name: 'none', path: none}})).rejects.toThrow(/need labels; the dataset has none/)
  })

  it('computes ROC AUC by ranks, ties counted half', () => {
    expect(rocAuc([0.1, 0.4, 0.35, 0.8], [false, false, true, true])).toBeCloseTo(0.75, 10)
    expect(rocAuc([0.5, 0.5], [false, true])).toBeCloseTo(0.5, 10)
  })
})

describe('alignOutputs', () => {
  it('pairs renamed baseline outputs by position, and refuses a different count', async () => {
    const {alignOutputs} = await import('../../src/eval/evaluate.js')
    const o = {data: new Float32Array([1]), dims: [1, 1]}
    expect(Object.keys(alignOutputs({out0: o, out1: o}, ['logits', 'probs']))).toEqual(['logits', 'probs'])
    expect(alignOutputs({logits: o}, ['logits']).logits).toBe(o)
    expect(() => alignOutputs({a: o}, ['x', 'y'])).toThrow(/do not match/)
  })
})

describe('baseline metrics on one value per sample', () => {
  const feed = (a: number[], b: number[]) => {
    const acc = baselineMetrics(['agreement', 'cosine'], {})
    acc.update({outputs: {p: {data: Float32Array.from(a), dims: [a.length, 1]}}, baseline: {p: {data: Float32Array.from(b), dims: [b.length, 1]}}, size: a.length})
    return acc.result()
  }
  it('splits probabilities at 0.5 and takes the cosine over all samples, not per single value', () => {
    const r = feed([0.4, 0.6, 0.7], [0.6, 0.55, 0.2])
    expect(r.agreement).toBeCloseTo(1 / 3, 6)
    const dot = 0.4 * 0.6 + 0.6 * 0.55 + 0.7 * 0.2
    expect(r.cosine).toBeCloseTo(dot / Math.sqrt((0.16 + 0.36 + 0.49) * (0.36 + 0.3025 + 0.04)), 6)
  })
  it('splits logits at 0', () => {
    expect(feed([-1, 2, -3, 4], [1, 3, -2, 5]).agreement).toBeCloseTo(3 / 4, 6)
  })
})

describe('label metrics on one value per sample', () => {
  it('scores it as binary (a probability split at 0.5), not as one class that is always predicted', () => {
    const acc = labelMetrics(['accuracy', 'precision', 'recall'], {}, 'outputs')
    acc.update({outputs: {p: {data: Float32Array.of(0.9, 0.2, 0.7, 0.4), dims: [4, 1]}}, labels: Float64Array.of(1, 0, 0, 0), size: 4})
    const r = acc.result()
    expect(r.accuracy).toBeCloseTo(3 / 4, 6)
    expect(r.precision).toBeCloseTo(1 / 2, 6)
    expect(r.recall).toBe(1)
  })
})
