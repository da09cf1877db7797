import {beforeAll, describe, expect, it} from 'vitest'
import stage from '../../src/stages/evaluate.js'
import {checkGates} from '../../src/eval/gates.js'
import {ensureTrainedModels} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'

describe('evaluate stage', () => {
  let trained: ReturnType<typeof ensureTrainedModels>
  beforeAll(() => {
    trained = ensureTrainedModels()
  }, 300_000)

  it('returns metrics, sizes, latency and gate results against the input model', async () => {
    const {ctx, input} = await makeStageContext({input: trained.cnn, datasets: {test: {path: trained.test, limit: 1000}}})
    // The pipeline input is the MLP here: the CNN is compared with it.
    const mlp = await makeStageContext({input: trained.mlp})
    const c = {...ctx, inputArtifact: mlp.input}
    const params = stage.schema.parse({
      dataset: 'test',
      baseline: 'input',
      metrics: ['accuracy', 'agreement'],
      benchmark: {batch: [1], iterations: 40, warmup: 5},
      gates: {accuracyDrop: 0.5, agreement: 0.99, latencyP95Ms: 10_000, sizeRatio: 0.01},
    })
    const r = await stage.run(c, input, params)
    expect(r.metrics.accuracy).toBeGreaterThan(0.7)
    expect(r.metrics.sizeRatio).toBeCloseTo(input.bytes / mlp.input.bytes, 6)
    expect(r.metrics.latencyP95Ms).toBeGreaterThan(0)
    expect(typeof r.metrics.speedupLow).toBe('number')
    const byName = Object.fromEntries(r.gates!.map((g) => [g.name, g]))
    expect(byName.accuracyDrop!.passed).toBe(true)
    expect(byName.latencyP95Ms!.passed).toBe(true)
    expect(byName.agreement!.passed).toBe(false)
    expect(byName.agreement!.message).toMatch(/missed by/)
    expect(byName.sizeRatio!.passed).toBe(false)
    expect(byName.sizeRatio!.stage).toBe(ctx.id)
    const report = r.report!.evaluate as {bench: {candidate: {runs: {samplesMs: number[]}[]}; baseline: unknown}}
    expect(report.bench.candidate.runs[0]!.samplesMs.length).toBe(40)
    expect(report.bench.baseline).toBeDefined()
  }, 120_000)

  it('refuses a latency gate without a benchmark, and an unknown baseline stage', async () => {
    const {ctx, input} = await makeStageContext({input: trained.mlp, datasets: {test: {path: trained.test, limit: 64}}})
    await expect(stage.run(ctx, input, stage.schema.parse({dataset: 'test', gates: {latencyP95Ms: 5}}))).rejects.toThrow(/no benchmark was run/)
    await expect(stage.run(ctx, input, stage.schema.parse({dataset: 'test', baseline: 'quantize'}))).rejects.toThrow(/neither 'input' nor the id of an earlier stage/)
    // A duration overrides an iteration count: asking for both would leave one unread.
    const both = stage.schema.safeParse({dataset: 'test', benchmark: {iterations: 10, durationMs: 200}})
    expect(both.success).toBe(false)
    expect(both.error!.issues[0]!.path).toEqual(['benchmark', 'durationMs'])
  })

  it('says by how much a gate missed, either way', () => {
    const [drop, agree, custom] = checkGates({accuracyDrop: 0.01, agreement: 0.95, meanMax: {min: 3}}, {accuracyDrop: 0.031, agreement: 0.97, meanMax: 2.5})
    expect(drop).toMatchObject({passed: false, value: 0.031, limit: 0.01})
    expect(drop!.message).toContain('missed by 0.0210')
    expect(agree!.passed).toBe(true)
    expect(custom).toMatchObject({name: 'meanMax', passed: false})
  })
})
