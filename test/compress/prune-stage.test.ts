import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {KilnError} from '../../src/errors.js'
import {loadStage} from '../../src/stages/registry.js'
import {kiln} from '../helpers/cli.js'
import {MODELS, ensureFixtures, ensureTrainedModels} from '../helpers/fixtures.js'
import type {TrainedModels} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-prune-stage-'))
let trained: TrainedModels

beforeAll(() => {
  ensureFixtures()
  trained = ensureTrainedModels()
}, 900_000)

describe('prune, lowrank and cluster stages', () => {
  it('are registered and validate their parameters', async () => {
    const prune = await loadStage('prune', tmp)
    expect(prune.schema.safeParse({sparsity: 0.5}).success).toBe(true)
    expect(prune.schema.safeParse({sparsity: 1}).success).toBe(false)
    expect(prune.schema.safeParse({sparsity: -0.1}).success).toBe(false)
    expect(prune.schema.safeParse({sparsity: 0.5, sparsityy: 1}).success).toBe(false)
    const lowrank = await loadStage('lowrank', tmp)
    expect(lowrank.schema.safeParse({rank: 8}).success).toBe(true)
    expect(lowrank.schema.safeParse({rank: 8, energy: 0.9}).success).toBe(false)
    const cluster = await loadStage('cluster', tmp)
    expect(cluster.schema.safeParse({clusters: 16}).success).toBe(true)
    expect(cluster.schema.safeParse({clusters: 300}).success).toBe(false)
  })

  it('prune writes the model into the stage directory with sparsity, params and sizes in its metrics', async () => {
    const stage = await loadStage('prune', tmp)
    const {ctx, input} = await makeStageContext({input: MODELS.ocrCls})
    const r = await stage.run(ctx, input, stage.schema.parse({method: 'channel', sparsity: 0.3}))
    expect(r.artifact!.path.startsWith(ctx.outDir)).toBe(true)
    expect(fs.existsSync(r.artifact!.path)).toBe(true)
    const m = r.metrics as Record<string, number>
    expect(m.paramsAfter).toBeLessThan(m.paramsBefore)
    expect(m.flopsAfter).toBeLessThan(m.flopsBefore)
    expect(m.zstdBytesAfter).toBeLessThan(m.zstdBytesBefore)
    expect(m.bytesAfter).toBeLessThan(m.bytesBefore)
    expect(Object.keys(r.metrics.layerSparsity as object).length).toBeGreaterThan(0)
  })

  it('plans per-layer ratios from a sensitivity analysis within the accuracy budget and reports the curve', async () => {
    const stage = await loadStage('prune', tmp)
    const {ctx, input} = await makeStageContext({input: trained.mlp, datasets: {test: {path: trained.test, limit: 300}}})
    const params = stage.schema.parse({sparsity: 0.6, eval: {dataset: 'test', maxAccuracyDrop: 0.03, samples: 300}})
    expect(stage.datasets!(params)).toEqual(['test'])
    const r = await stage.run(ctx, input, params)
    const s = r.report!.sensitivity as {metric: string; baseline: number; curve: {layer: string; points: {ratio: number; drop: number}[]}[]; plan: {layer: string; ratio: number}[]; final: {sparsity: number; drop: number}}
    expect(s.metric).toBe('accuracy')
    expect(s.baseline).toBeGreaterThan(0.7)
    expect(s.curve.map((c) => c.layer)).toEqual(['fc1', 'fc2', 'fc3'])
    for (const c of s.curve) expect(c.points.map((p) => p.ratio)).toEqual([0.25, 0.5, 0.7, 0.85, 0.95])
    expect(s.final.drop).toBeLessThanOrEqual(0.03)
    expect(s.final.sparsity).toBeCloseTo(0.6, 2)
    expect(r.metrics.sparsity as number).toBeCloseTo(0.6, 2)
    // The planner prunes the layers it measured as less sensitive harder.
    const ratio = Object.fromEntries(s.plan.map((p) => [p.layer, p.ratio]))
    const drop = (layer: string) => s.curve.find((c) => c.layer === layer)!.points.find((p) => p.ratio === 0.85)!.drop
    const [robust, fragile] = drop('fc1') <= drop('fc3') ? ['fc1', 'fc3'] : ['fc3', 'fc1']
    expect(ratio[robust]!).toBeGreaterThanOrEqual(ratio[fragile]!)
  }, 120_000)

  it('fails clearly when no plan reaches the sparsity within the budget', async () => {
    const stage = await loadStage('prune', tmp)
    const {ctx, input} = await makeStageContext({input: trained.mlp, datasets: {test: {path: trained.test, limit: 200}}})
    const err = await stage.run(ctx, input, stage.schema.parse({sparsity: 0.9, eval: {dataset: 'test', maxAccuracyDrop: 0.001, samples: 200, ratios: [0.5, 0.9]}})).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect((err as KilnError).code).toBe('E_PRUNE_PLAN')
  }, 120_000)

  it('lowrank and cluster run as stages on the trained CNN and MLP', async () => {
    const lowrank = await loadStage('lowrank', tmp)
    const a = await makeStageContext({input: trained.mlp})
    const lr = await lowrank.run(a.ctx, a.input, lowrank.schema.parse({energy: 0.9}))
    expect(lr.metrics.factorised as number).toBeGreaterThan(0)
    expect(lr.metrics.paramsAfter as number).toBeLessThan(lr.metrics.paramsBefore as number)
    const cluster = await loadStage('cluster', tmp)
    const b = await makeStageContext({input: trained.cnn})
    const cl = await cluster.run(b.ctx, b.input, cluster.schema.parse({clusters: 16}))
    expect(cl.metrics.zstdBytesAfter as number).toBeLessThan((cl.metrics.zstdBytesBefore as number) / 3)
  })
})

describe('kiln prune / lowrank / cluster commands', () => {
  it('prune: --json result, and exit 2 for a sparsity outside [0, 1)', async () => {
    const out = path.join(tmp, 'cli-pruned.onnx')
    const ok = await kiln(['prune', MODELS.ocrCls, '-o', out, '--sparsity', '0.5', '--json'])
    expect(ok.exitCode).toBe(0)
    expect(ok.json.sparsity).toBeCloseTo(0.5, 3)
    expect(ok.json.sizes.after.zstd).toBeLessThan(ok.json.sizes.before.zstd)
    expect(fs.existsSync(out)).toBe(true)
    const bad = await kiln(['prune', MODELS.ocrCls, '-o', path.join(tmp, 'never.onnx'), '--sparsity', '1.5'])
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr).toContain('sparsity must be in [0, 1), got 1.5')
    expect(fs.existsSync(path.join(tmp, 'never.onnx'))).toBe(false)
    const nm = await kiln(['prune', MODELS.ocrCls, '-o', path.join(tmp, 'never.onnx'), '--method', 'nm', '--pattern', '2:4', '--json'])
    expect(nm.exitCode).toBe(2)
    expect(nm.json.error.code).toBe('E_PRUNE_NM_AXIS')
  })

  it('lowrank and cluster', async () => {
    const lr = await kiln(['lowrank', MODELS.ocrCls, '-o', path.join(tmp, 'cli-lr.onnx'), '--rank', '1', '--json'])
    expect(lr.exitCode).toBe(0)
    expect(lr.json.factorised).toBe(1)
    const cl = await kiln(['cluster', MODELS.ocrCls, '-o', path.join(tmp, 'cli-cl.onnx'), '--clusters', '16', '--json'])
    expect(cl.exitCode).toBe(0)
    expect(cl.json.sizes.after.raw).toBeLessThan(cl.json.sizes.before.raw)
    const badK = await kiln(['cluster', MODELS.ocrCls, '-o', path.join(tmp, 'cli-cl2.onnx'), '--clusters', '3'])
    expect(badK.exitCode).toBe(2)
    expect(badK.stderr).toContain('clusters must be an integer from 4 to 256')
  })
})
