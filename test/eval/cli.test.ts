import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {readRunReport} from '../../src/eval/diff.js'
import {kiln} from '../helpers/cli.js'
import {ensureTrainedModels} from '../helpers/fixtures.js'

describe('kiln eval / bench / diff', () => {
  let t: ReturnType<typeof ensureTrainedModels>
  beforeAll(() => {
    t = ensureTrainedModels()
  }, 300_000)

  it('kiln eval --json prints the metrics; an NPZ named after the inputs needs no mapping', async () => {
    const r = await kiln(['eval', t.mlp, '--dataset', t.test, '--baseline', t.cnn, '--metrics', 'accuracy,top5,agreement', '--limit', '2000', '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.samples).toBe(2000)
    expect(r.json.metrics.accuracy).toBeGreaterThan(0.7)
    expect(r.json.metrics.top5).toBeGreaterThanOrEqual(r.json.metrics.accuracy)
    expect(r.json.metrics.agreement).toBeGreaterThan(0.5)
    expect(r.json.metrics['baseline.accuracy']).toBeGreaterThan(0.7)
  }, 120_000)

  it('kiln eval explains a dataset without labels (exit 1, JSON error)', async () => {
    const r = await kiln(['eval', t.mlp, '--dataset', t.calib, '--metrics', 'accuracy', '--json'])
    expect(r.exitCode).toBe(1)
    expect(r.json.error.message).toMatch(/need labels/)
  }, 60_000)

  it('kiln bench --vs prints per-model latency and the speed-up with its interval', async () => {
    const r = await kiln(['bench', t.cnn, '--vs', t.mlp, '--profile', 'cpu-1t', '--batch', '4', '-n', '60', '--rounds', '6', '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.models).toHaveLength(2)
    for (const m of r.json.models) {
      expect(m.loadMs).toBeGreaterThan(0)
      const run = m.runs[0]
      for (const k of ['p50', 'p90', 'p95', 'p99', 'mean']) expect(run.latencyMs[k]).toBeGreaterThan(0)
      expect(run.throughput).toBeGreaterThan(0)
      expect(run.peakRssBytes).toBeGreaterThan(0)
      expect(run.samplesMs).toBeUndefined()
    }
    const c = r.json.comparisons[0]
    expect(c.low).toBeLessThanOrEqual(c.speedup)
    expect(c.high).toBeGreaterThanOrEqual(c.speedup)
    expect(['faster', 'slower', 'inconclusive']).toContain(c.verdict)
  }, 120_000)

  it('refuses options nothing would read, instead of ignoring them', async () => {
    const seed = await kiln(['eval', t.mlp, '--dataset', t.test, '--limit', '10', '--seed', '5', '--json'])
    expect(seed.exitCode).toBe(2)
    expect(seed.json.error.message).toMatch(/--seed: --shuffle/)
    // A threshold makes the task binary, which reads 0/1 labels unless a positive class is named.
    const threshold = await kiln(['eval', t.mlp, '--dataset', t.test, '--limit', '10', '--threshold', '0.3', '--json'])
    expect(threshold.exitCode).toBe(2)
    expect(threshold.json.error.message).toMatch(/binary task reads labels 0 and 1/)
    const reduce = await kiln(['eval', t.mlp, '--dataset', t.test, '--limit', '10', '--reduce', 'max', '--json'])
    expect(reduce.exitCode).toBe(2)
    expect(reduce.json.error.message).toMatch(/reduce applies to binary tasks; this one is classification/)
    const explicit = await kiln(['eval', t.mlp, '--dataset', t.test, '--limit', '10', '--task', 'classification', '--threshold', '0.5', '--json'])
    expect(explicit.exitCode).toBe(2)
    expect(explicit.json.error.message).toMatch(/threshold applies to binary tasks; this one is classification/)
    const rounds = await kiln(['bench', t.mlp, '--rounds', '5', '-n', '5', '--json'])
    expect(rounds.exitCode).toBe(2)
    expect(rounds.json.error.message).toMatch(/--rounds: --vs/)
    const dim = await kiln(['bench', t.mlp, '--data', t.test, '--dim', 'batch=4', '-n', '5', '--json'])
    expect(dim.exitCode).toBe(2)
    expect(dim.json.error.message).toMatch(/cannot also be provided when using --dim/)
  }, 60_000)

  it('kiln bench names the available providers for an unknown profile (exit 2)', async () => {
    const r = await kiln(['bench', t.cnn, '--profile', 'gpu-x', '--json'])
    expect(r.exitCode).toBe(2)
    expect(r.json.error.try).toMatch(/cpu-1t, cpu-2t, cpu-all/)
  })

  it('kiln diff compares two run reports stage by stage', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-diff-'))
    const run = (id: string, acc: number, bytes: number) => {
      const d = path.join(dir, id)
      fs.mkdirSync(d)
      const stage = {id: 'evaluate', uses: 'evaluate', status: 'ran', seconds: 1, artifact: {path: 'm.onnx', sha256: 'x', bytes, format: 'onnx'}, metrics: {accuracy: acc, latencyP95Ms: 1.5}}
      const report = {kiln: '0.1.0', pipeline: 'p', file: 'k.yaml', runId: id, runDir: d, status: 'passed', startedAt: '', seconds: 1, input: {path: 'in.onnx', format: 'onnx', sha256: 'y', bytes: 1000}, stages: [stage], gates: [], runtime: {}}
      fs.writeFileSync(path.join(d, 'report.json'), JSON.stringify(report))
      return d
    }
    const a = run('a', 0.9, 1000)
    const b = run('b', 0.88, 500)
    const r = await kiln(['diff', a, b, '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.stages[0].metrics.find((m: {name: string}) => m.name === 'accuracy').delta).toBeCloseTo(-0.02, 10)
    const md = await kiln(['diff', a, b])
    expect(md.stdout).toContain('| evaluate (evaluate) | ran → ran | 1000 B → 500 B | -50.0% |')
    expect(md.stdout).not.toContain('latencyP95Ms')
    await expect(readRunReport(path.join(dir, 'nope'))).rejects.toMatchObject({exitCode: 2, message: expect.stringContaining('report.json')})
  }, 60_000)
})

describe('the Fashion-MNIST example pipeline', () => {
  it('runs evaluate in a pipeline; a missed gate exits 3 and junit names it', async () => {
    const t = ensureTrainedModels()
    const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
    // Inside the repository (git-ignored), so the example's custom stage resolves its imports.
    fs.mkdirSync(path.join(root, 'test', '.tmp'), {recursive: true})
    const dir = fs.mkdtempSync(path.join(root, 'test', '.tmp', 'fm-'))
    const example = path.join(root, 'examples', 'fashion-mnist')
    fs.cpSync(path.join(example, 'stages'), path.join(dir, 'stages'), {recursive: true})
    fs.mkdirSync(path.join(dir, 'models'))
    fs.mkdirSync(path.join(dir, 'data'))
    fs.copyFileSync(t.cnn, path.join(dir, 'models', 'fashion_cnn.onnx'))
    fs.copyFileSync(t.mlp, path.join(dir, 'models', 'fashion_mlp.onnx'))
    fs.copyFileSync(t.test, path.join(dir, 'data', 'fashion_test.npz'))
    const yaml = fs
      .readFileSync(path.join(example, 'kiln.yaml'), 'utf8')
      .replace('test: { path: ./data/fashion_test.npz }', 'test: { path: ./data/fashion_test.npz, limit: 1000 }')
      .replace('iterations: 200', 'iterations: 20')
      .replace('agreement: 0.8', 'agreement: 0.99')
    fs.writeFileSync(path.join(dir, 'kiln.yaml'), yaml)
    const r = await kiln(['run', path.join(dir, 'kiln.yaml'), '--out', path.join(dir, 'run'), '--json'], {cwd: dir})
    expect(r.exitCode, r.stderr).toBe(3)
    const gate = r.json.gates.find((g: {name: string}) => g.name === 'agreement')
    expect(gate).toMatchObject({stage: 'evaluate', limit: 0.99, passed: false})
    expect(gate.message).toMatch(/missed by/)
    expect(fs.readFileSync(path.join(dir, 'run', 'junit.xml'), 'utf8')).toContain('agreement')
    const html = fs.readFileSync(path.join(dir, 'run', 'report.html'), 'utf8')
    expect(html).toContain('Latency distributions')
    fs.rmSync(dir, {recursive: true, force: true})
  }, 180_000)
})
