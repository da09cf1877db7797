import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {KilnError} from '../../src/errors.js'
import {sileroStream} from '../compress/quant/models.js'
import {benchmark, benchmarkAB} from '../../src/runtime/bench.js'
import {checkProviders, getProfile, resolveProfiles} from '../../src/runtime/profiles.js'
import {meanCi, percentile} from '../../src/runtime/stats.js'
import {MODELS} from '../helpers/fixtures.js'

describe('hardware profiles', () => {
  it('has the built-ins and merges custom ones over cpu-2t defaults', () => {
    const all = resolveProfiles({'edge-1t': {threads: 1, batch: [1, 8]}, slow: {durationMs: 500}})
    expect(Object.keys(all)).toEqual(expect.arrayContaining(['cpu-1t', 'cpu-2t', 'cpu-all', 'edge-1t']))
    expect(all['cpu-1t']!.threads).toBe(1)
    expect(all['edge-1t']).toMatchObject({name: 'edge-1t', threads: 1, batch: [1, 8], providers: ['cpu']})
    expect(all.slow!.iterations).toBeUndefined()
    expect(() => getProfile('gpu-x')).toThrow(/unknown hardware profile 'gpu-x'/)
  })

  it('names the providers that are available when a profile asks for a missing one', async () => {
    const p = {...getProfile('cpu-1t'), name: 'npu', providers: ['qnn-npu']}
    await expect(checkProviders(p)).rejects.toThrow(/qnn-npu/)
    await expect(checkProviders(p)).rejects.toMatchObject({tryMessage: expect.stringContaining('cpu')})
  })
})

describe('statistics', () => {
  it('interpolates percentiles and gives a t interval for the mean', () => {
    expect(percentile([1, 2, 3, 4, 5], 50)).toBe(3)
    expect(percentile([1, 2, 3, 4], 90)).toBeCloseTo(3.7, 10)
    const ci = meanCi([10, 12, 11, 13, 9])
    expect(ci.mean).toBe(11)
    // t(0.975, 4) = 2.776, s = 1.5811
    expect(ci.high - ci.mean).toBeCloseTo((2.776 * 1.5811388) / Math.sqrt(5), 3)
  })
})

describe('benchmark harness', () => {
  it('measures a real model: load time, percentiles in order, throughput, RSS', async () => {
    const r = await benchmark(MODELS.blazeface, getProfile('cpu-1t'), {iterations: 30, warmup: 3})
    expect(r.loadMs).toBeGreaterThan(0)
    expect(r.sizeBytes).toBeGreaterThan(100_000)
    expect(r.compressedBytes).toBeLessThan(r.sizeBytes!)
    const run = r.runs[0]!
    expect(run.iterations).toBe(30)
    const l = run.latencyMs
    expect(l.min).toBeLessThanOrEqual(l.p50)
    expect(l.p50).toBeLessThanOrEqual(l.p90)
    expect(l.p90).toBeLessThanOrEqual(l.p95)
    expect(l.p95).toBeLessThanOrEqual(l.p99)
    expect(l.p99).toBeLessThanOrEqual(l.max)
    expect(l.ciLow).toBeGreaterThan(0)
    expect(l.ciLow).toBeLessThanOrEqual(l.mean)
    expect(l.ciHigh).toBeGreaterThanOrEqual(l.mean)
    expect(run.throughput).toBeGreaterThan(0)
    // Throughput counts wall time, gaps between runs included: never more than the latencies allow.
    expect(run.throughput).toBeLessThanOrEqual((1000 / l.mean) * 1.001)
    expect(run.peakRssBytes).toBeGreaterThan(10 * 2 ** 20)
    expect(run.inputShapes['input:0']).toEqual([1, 128, 128, 3])
  }, 60_000)

  it('refuses a batch the model cannot take', async () => {
    await expect(benchmark(MODELS.blazeface, getProfile('cpu-1t'), {batch: [4], iterations: 2})).rejects.toThrow(/fixed batch dimension of 1/)
  })

  it('says plainly when a model will not run on generated inputs, and times it on the samples of a dataset instead', async () => {
    // Silero: a scalar sample rate and a [2, batch, 128] state that generated inputs cannot guess.
    const err = await benchmark(MODELS.sileroV5, getProfile('cpu-1t'), {iterations: 2, compressedSize: false}).catch((e: unknown) => e as KilnError)
    expect(err).toBeInstanceOf(KilnError)
    expect((err as KilnError).code).toBe('E_BENCH_INPUT')
    expect((err as KilnError).message).toMatch(/does not run on the generated inputs \(input float32\[1,64\], state float32\[2,\d+,128\], sr int64\[\]\)/)
    const stream = await sileroStream('sileroV5', ['cards-001.wav'], 8, path.join(os.tmpdir(), `kiln-bench-silero-${process.pid}.npz`))
    const data = {name: 'speech', path: stream.npz}
    const r = await benchmark(MODELS.sileroV5, getProfile('cpu-1t'), {iterations: 5, warmup: 1, compressedSize: false, data})
    expect(r.runs[0]!.inputShapes).toEqual({input: [1, 512], state: [2, 1, 128], sr: []})
    // Inputs without a batch axis run one sample at a time.
    await expect(benchmark(MODELS.sileroV5, getProfile('cpu-1t'), {batch: [4], iterations: 2, compressedSize: false, data})).rejects.toThrow(/no batch axis of its own/)
    fs.rmSync(stream.npz, {force: true})
  }, 60_000)

  it('interleaves A/B and does not claim a speed-up between a model and itself', async () => {
    // BlazeFace runs take milliseconds, so each round spans enough time for a busy machine's
    // hiccups to average out; sub-millisecond rounds would measure the scheduler instead.
    const ab = await benchmarkAB({baseline: MODELS.blazeface, candidate: MODELS.blazeface}, getProfile('cpu-1t'), {iterations: 100, rounds: 10, warmup: 3, compressedSize: false})
    const c = ab.comparisons[0]!
    expect(c.low).toBeLessThanOrEqual(c.speedup)
    expect(c.high).toBeGreaterThanOrEqual(c.speedup)
    // The same model on both sides: the ratio is near 1, and a verdict is only given when the interval excludes 1.
    expect(c.speedup).toBeGreaterThan(0.5)
    expect(c.speedup).toBeLessThan(2)
    expect(c.verdict).toBe(c.low > 1 ? 'faster' : c.high < 1 ? 'slower' : 'inconclusive')
    expect(ab.baseline.runs[0]!.iterations).toBe(100)
    expect(ab.candidate.runs[0]!.iterations).toBe(100)
  }, 300_000)
})
