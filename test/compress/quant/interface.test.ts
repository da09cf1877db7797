import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import stage from '../../../src/stages/quantize.js'
import {loadStage} from '../../../src/stages/registry.js'
import {readModel} from '../../../src/onnx/model.js'
import {writeNpz} from '../../../src/data/npz-write.js'
import {kiln} from '../../helpers/cli.js'
import {MODELS, ensureFixtures, ensureTrainedModels} from '../../helpers/fixtures.js'
import {makeStageContext} from '../../helpers/stage.js'
import {feedsFor, sileroStream} from './models.js'

ensureFixtures()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-quant-if-'))
afterAll(() => fs.rmSync(dir, {recursive: true, force: true}))
const calib = path.join(dir, 'cls-calib.npz')

beforeAll(async () => {
  // Direction classifier input: 4 text-line crops [3, 48, 192] built from the model's own test input, shifted.
  const x = (await feedsFor('ocrCls')).x!.data as Float32Array
  const n = 4
  const data = new Float32Array(n * x.length)
  for (let s = 0; s < n; s++) for (let i = 0; i < x.length; i++) data[s * x.length + i] = x[(i + s * 997) % x.length]!
  await writeNpz(calib, {x: {dtype: '<f4', shape: [n, 3, 48, 192], data}})
})

describe('quantize stage', () => {
  it('is registered, validates `with`, and writes a model with metrics', async () => {
    expect((await loadStage('quantize', dir)).kind).toBe('quantize')
    expect(stage.schema.safeParse({mode: 'static'}).success).toBe(false)
    expect(stage.schema.safeParse({mode: 'int4', blockSize: 48}).success).toBe(false)
    expect(stage.schema.safeParse({mode: 'int4', algorithm: 'gptq'}).success).toBe(false)
    expect(stage.schema.safeParse({mode: 'int4', algorithm: 'gptq', calibration: 'calib'}).success).toBe(true)
    // Options the mode would ignore are refused where they are written.
    const misapplied = stage.schema.safeParse({mode: 'static', calibration: {dataset: 'calib', percentile: 99.9}, blockSize: 64, keepIOTypes: false})
    expect(misapplied.success).toBe(false)
    expect(misapplied.error!.issues.map((i) => i.path.join('.')).sort()).toEqual(['blockSize', 'calibration.percentile', 'keepIOTypes'])
    // fp16 reads calibration data (a range check), not a calibration method.
    expect(stage.schema.safeParse({mode: 'fp16', calibration: 'calib'}).success).toBe(true)
    const fp16Method = stage.schema.safeParse({mode: 'fp16', calibration: {dataset: 'calib', method: 'entropy'}})
    expect(fp16Method.success).toBe(false)
    expect(fp16Method.error!.issues.map((i) => i.path.join('.'))).toEqual(['calibration.method'])
    expect(stage.schema.safeParse({mode: 'dynamic', maxAccuracyDrop: 0.01}).success).toBe(false)
    const params = stage.schema.parse({mode: 'static', calibration: {dataset: 'calib', method: 'percentile'}, neverSlower: false})
    expect(stage.datasets!(params)).toEqual(['calib'])
    const {ctx, input} = await makeStageContext({input: MODELS.ocrCls, datasets: {calib: {path: calib}}})
    const r = await stage.run(ctx, input, params)
    expect(r.artifact!.format).toBe('onnx')
    const m = await readModel(r.artifact!.path)
    expect(m.graph!.node.some((n) => n.opType === 'QuantizeLinear')).toBe(true)
    expect(r.metrics.mode).toBe('static')
    expect((r.metrics.calibration as {method: string}).method).toBe('percentile')
    expect((r.metrics.calibrationCheck as {agreement: number}).agreement).toBeGreaterThanOrEqual(0.8)
    expect((r.metrics.quantizedNodes as Record<string, number>).Conv).toBeGreaterThan(10)
    expect(r.metrics.outputBytes as number).toBeLessThan(r.metrics.inputBytes as number)
  })
})

// Runs the built CLI: `npm test` builds first (pretest).
describe('kiln quantize', () => {
  it('--json prints the metrics and writes the model', async () => {
    const out = path.join(dir, 'cli.fp16.onnx')
    const r = await kiln(['quantize', MODELS.ocrCls, '-o', out, '--mode', 'fp16', '--json'])
    expect(r.exitCode).toBe(0)
    expect(r.json.mode).toBe('fp16')
    expect(r.json.decision).toBe('quantized')
    expect(r.json.sizeRatio).toBeLessThan(0.6)
    expect(fs.existsSync(out)).toBe(true)
  })

  it('says in the terminal how the static model compares with the float one, and which ops are timed', async () => {
    const trained = ensureTrainedModels()
    const out = path.join(dir, 'cli.static.onnx')
    const r = await kiln(['quantize', trained.cnn, '-o', out, '--mode', 'static', '--calibration', trained.calib, '--allow-slower'])
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toMatch(/against the float model on 64 calibration samples: \d+\.\d% agreement, output SQNR \d+\.\d dB/)
    const json = await kiln(['quantize', trained.cnn, '-o', out, '--mode', 'static', '--calibration', trained.calib, '--json'])
    expect((json.json.nodeTimings as {node: string}[]).map((t) => t.node).sort()).toEqual(['conv1', 'conv2', 'conv3', 'fc'])
  })

  it('names the units kept in float for accuracy, most harmful first, and says when the data has no labels', async () => {
    // Silero on streamed speech: no labels, so the drop is the share of speech decisions that change.
    const cal = await sileroStream('sileroV5', ['cards-001.wav', 'cards-002.wav'], 48, path.join(dir, 'silero-cal.npz'))
    const ev = await sileroStream('sileroV5', ['cards-004.wav', 'cards-005.wav'], 96, path.join(dir, 'silero-eval.npz'))
    const out = path.join(dir, 'cli.silero.onnx')
    const r = await kiln(['quantize', MODELS.sileroV5, '-o', out, '--mode', 'static', '--calibration', cal.npz, '--eval', ev.npz, '--max-accuracy-drop', '0', '--allow-slower'])
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toMatch(/agreement \d+\.\d\d% with the float model \(the evaluation data has no labels\)/)
    // A limit of 0 on speech decisions that sit near 0.5: some unit falls back, named with its own SQNR.
    expect(r.stdout).toMatch(/kept in float for accuracy: \d+, the most harmful .+ \(-?\d+\.\d dB alone\)/)
  })

  it('usage errors exit 2 with what to try', async () => {
    const r = await kiln(['quantize', MODELS.ocrCls, '-o', path.join(dir, 'x.onnx'), '--mode', 'static', '--json'])
    expect(r.exitCode).toBe(2)
    expect(r.json.error.message).toMatch(/calibration/)
    expect(r.json.error.try).toBeTruthy()
    const g = await kiln(['quantize', MODELS.ocrRec, '-o', path.join(dir, 'x.onnx'), '--mode', 'int4', '--algorithm', 'gptq', '--json'])
    expect(g.exitCode).toBe(2)
    expect(g.json.error.message).toMatch(/gptq needs --calibration/)
    expect(fs.existsSync(path.join(dir, 'x.onnx'))).toBe(false)
    const m = await kiln(['quantize', MODELS.ocrCls, '-o', path.join(dir, 'x.onnx'), '--mode', 'fp16', '--block-size', '64', '--method', 'entropy', '--json'])
    expect(m.exitCode).toBe(2)
    expect(m.json.error.message).toMatch(/method \(--method\) applies to static mode only; blockSize \(--block-size\) applies to int4 mode only/)
    expect(fs.existsSync(path.join(dir, 'x.onnx'))).toBe(false)
  })
})
