import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {assign, checkClusters, clusterFile, kmeans1d} from '../../src/compress/cluster.js'
import {prunableWeights, readWeight} from '../../src/compress/prune-weights.js'
import {KilnError} from '../../src/errors.js'
import {readModel} from '../../src/onnx/model.js'
import {DataType} from '../../src/onnx/proto.js'
import {MODELS} from '../helpers/fixtures.js'
import {cosine, realFeeds, rng, runModel} from './prune-helpers.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cluster-'))

describe('k-means weight clustering', () => {
  it('finds well-separated clusters and is deterministic for a seed', () => {
    const r = rng(4)
    const truth = [-2, -0.5, 0.25, 3]
    const values = Float32Array.from({length: 4000}, (_, i) => truth[i % 4]! + (r() - 0.5) * 0.05)
    const c1 = kmeans1d(values, 4, 1)
    expect(Array.from(c1, (c) => Number(c.toFixed(1)))).toEqual([-2, -0.5, 0.3, 3])
    expect(kmeans1d(values, 4, 1)).toEqual(c1)
    const idx = assign(values, c1)
    for (let i = 0; i < 8; i++) expect(idx[i]).toBe(i % 4)
  })

  it('lowers the error as k grows', () => {
    const r = rng(5)
    const values = Float32Array.from({length: 5000}, () => (r() + r() + r() - 1.5) * 0.2)
    const err = (k: number) => {
      const c = kmeans1d(values, k, 0)
      const idx = assign(values, c)
      return values.reduce((s, v, i) => s + (v - c[idx[i]!]!) ** 2, 0)
    }
    expect(err(16)).toBeLessThan(err(4))
    expect(err(64)).toBeLessThan(err(16))
  })

  it('rejects k outside 4..256', () => {
    for (const k of [2, 3, 257, 16.5]) expect(() => checkClusters(k)).toThrow(KilnError)
    expect(() => checkClusters(4)).not.toThrow()
    expect(() => checkClusters(256)).not.toThrow()
  })

  it('codebook and float storage decode to the same weights; both shrink the delivered artifact', async () => {
    const book = path.join(tmp, 'cls-book.onnx')
    const flt = path.join(tmp, 'cls-float.onnx')
    const rb = await clusterFile(MODELS.ocrCls, book, {clusters: 32, storage: 'codebook', seed: 3})
    const rf = await clusterFile(MODELS.ocrCls, flt, {clusters: 32, storage: 'float', seed: 3})
    // Every real weight with more values than clusters.
    expect(rb.layers.length).toBe(prunableWeights(await readModel(MODELS.ocrCls)).filter((l) => l.dims.reduce((a, b) => a * b, 1) > 32).length)
    // Float storage: at most k distinct values per layer.
    for (const l of prunableWeights(await readModel(flt))) expect(new Set(readWeight(l.tensor)).size).toBeLessThanOrEqual(32)
    // Codebook storage: one byte per weight, a uint8 index tensor decoded by Gather.
    const model = await readModel(book)
    expect(model.graph!.node.filter((n) => n.opType === 'Gather').length).toBe(rb.layers.length)
    expect(model.graph!.initializer.filter((t) => t.dataType === DataType.UINT8).length).toBe(rb.layers.length)
    expect(rb.sizes.after.raw).toBeLessThan(rb.sizes.before.raw * 0.5)
    expect(rb.sizes.after.zstd).toBeLessThan(rb.sizes.before.zstd * 0.3)
    expect(rf.sizes.after.zstd).toBeLessThan(rf.sizes.before.zstd * 0.5)
    for (const feeds of await realFeeds('ocrCls', MODELS.ocrCls)) {
      const a = (await runModel(book, feeds))['softmax_0.tmp_0']!
      const b = (await runModel(flt, feeds))['softmax_0.tmp_0']!
      for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 5)
      const orig = (await runModel(MODELS.ocrCls, feeds))['softmax_0.tmp_0']!
      expect(cosine(orig, a)).toBeGreaterThan(0.9)
    }
  })

  it('clusters Silero weights that live in Constant nodes inside subgraphs, and the model still runs', async () => {
    const out = path.join(tmp, 'silero.onnx')
    const r = await clusterFile(MODELS.sileroV5, out, {clusters: 32})
    expect(r.layers.length).toBeGreaterThan(10)
    expect(r.sizes.after.raw).toBeLessThan(r.sizes.before.raw * 0.5)
    for (const feeds of await realFeeds('sileroV5', MODELS.sileroV5)) {
      const a = (await runModel(MODELS.sileroV5, feeds)).output!
      const b = (await runModel(out, feeds)).output!
      expect(Math.abs(a[0]! - b[0]!)).toBeLessThan(0.05)
    }
  })
})
