import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {quantizeModel} from '../../../src/compress/quant/index.js'
import {cosine, sqnr} from '../../../src/compress/quant/math.js'
import {agreement, evaluate} from '../../../src/compress/quant/measure.js'
import {readBatches} from '../../../src/data/dataset.js'
import {writeNpz} from '../../../src/data/npz-write.js'
import {allNodes} from '../../../src/onnx/graph.js'
import {modelToBytes, readModel, writeModel} from '../../../src/onnx/model.js'
import {convertFp16, fp16OutOfRange} from '../../../src/compress/quant/fp16.js'
import {MODELS, ensureFixtures, ensureTrainedModels} from '../../helpers/fixtures.js'
import {runModel, sileroAgreement, sileroStream, transformerModel} from './models.js'
import {realFeeds, runModel as runReal} from '../../onnx/helpers.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../../src/onnx/build.js'
import {DataType} from '../../../src/onnx/proto.js'
import {makeTensor} from '../../../src/onnx/tensor.js'
import {loadOrt} from '../../../src/runtime/ort.js'
import type {ModelKey} from './models.js'

ensureFixtures()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-quant-modes-'))
afterAll(() => fs.rmSync(dir, {recursive: true, force: true}))
const profile = {name: 'cpu-1t', threads: 1, providers: ['cpu'], batch: [1]}

/**
 * Every output of `out` against the float model's on real inputs (photos for the vision models,
 * speech at both of Silero's sample rates, so both If branches run): cosine above `min`. A map with
 * nothing in it (the detector on a page shrunk to 64×96: no text left) has no direction for a
 * cosine to compare; there, the values themselves must stay near zero.
 */
async function expectCloseOnRealInputs(key: ModelKey, out: string, min: number): Promise<void> {
  const feeds = await realFeeds(key)
  const [a, b] = await Promise.all([runReal(MODELS[key], feeds), runReal(out, feeds)])
  a.forEach((outs, i) => {
    for (const [name, x] of Object.entries(outs)) {
      const y = b[i]![name]!.data
      const peak = x.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0)
      if (peak < 1e-3) expect(y.reduce((m, v) => Math.max(m, Math.abs(v)), 0), `${name}, input ${i}`).toBeLessThan(1e-3)
      else expect(cosine(x.data, y), `${name}, input ${i}`).toBeGreaterThan(min)
    }
  })
}

async function opCounts(file: string): Promise<Map<string, number>> {
  const m = await readModel(file)
  const c = new Map<string, number>()
  for (const {node} of allNodes(m)) c.set(node.opType, (c.get(node.opType) ?? 0) + 1)
  return c
}

const keys = Object.keys(MODELS) as ModelKey[]

describe('fp16 on every real model', () => {
  it.each(keys)('%s: half-size weights, float32 I/O kept, output cosine ≥ 0.9999 on real inputs', async (key) => {
    const out = path.join(dir, `${key}.fp16.onnx`)
    const r = await quantizeModel({input: MODELS[key], output: out, mode: 'fp16', profile})
    expect(r.decision).toBe('quantized')
    expect(r.sizeRatio).toBeLessThan(0.62)
    await expectCloseOnRealInputs(key, out, 0.9999)
  })
})

describe('fp16 and values beyond its range', () => {
  it('keeps a weight float16 cannot hold in float32: Silero legacy (a 2^20 scale) still decides speech as fp32 does', async () => {
    const out = path.join(dir, 'sileroLegacy.wide.fp16.onnx')
    const r = await quantizeModel({input: MODELS.sileroLegacy, output: out, mode: 'fp16', profile})
    const wide = r.leftFloat.filter((f) => /beyond float16's range/.test(f.reason))
    expect(wide.map((f) => f.opType)).toEqual(['Mul', 'Mul'])
    expect(wide[0]!.reason).toMatch(/^weight \S+ holds 1\.05e\+6, beyond float16's range \(largest 65504\)$/)
    // Real speech, each chunk with the state the float model carried into it (converted blindly,
    // 10% of decisions changed).
    const held = await sileroStream('sileroLegacy', ['cards-003.wav'], 120, path.join(dir, 'legacy-held.npz'))
    const {agreement: agree, meanAbsError} = await sileroAgreement(out, held)
    expect(agree).toBeGreaterThanOrEqual(0.99)
    expect(meanAbsError).toBeLessThan(0.005)
  })

  it('keeps tensors that reach beyond float16\'s range in float32, never cast to float16, with the nodes around them', async () => {
    // y = x · 300 · 300 / 1000: the weights fit float16, t2 (up to 90000) does not.
    const w = (name: string, v: number) => makeTensor(name, DataType.FLOAT, [], Float32Array.of(v))
    const model = makeModel(
      makeGraph({
        name: 'wide',
        node: [makeNode('Mul', ['x', 'a'], ['t1'], {}, {name: 'm1'}), makeNode('Mul', ['t1', 'a'], ['t2'], {}, {name: 'm2'}), makeNode('Mul', ['t2', 'b'], ['y'], {}, {name: 'm3'})],
        input: [makeValueInfo('x', DataType.FLOAT, ['N', 8])],
        output: [makeValueInfo('y', DataType.FLOAT, ['N', 8])],
        initializer: [w('a', 300), w('b', 0.001)],
      }),
    )
    const wide = fp16OutOfRange(new Map([['t1', {min: 150, max: 300, count: 8}], ['t2', {min: 45000, max: 90000, count: 8}], ['y', {min: 45, max: 90, count: 8}]]))
    expect([...wide.keys()]).toEqual(['t2'])
    expect(wide.get('t2')).toBe("t2 reaches 9.00e+4 on the calibration data, beyond float16's range (largest 65504)")
    const r = convertFp16(model, {keepIO: true, blockList: [], excluded: () => false, keepTensors: wide})
    expect(r.keptFloat32.map((k) => k.node)).toEqual(['m2', 'm3'])
    const nodes = model.graph!.node
    // m2 and m3 read and write float32: t2 is never cast to float16, and m3 needs no cast on its output.
    expect(nodes.some((n) => n.opType === 'Cast' && n.input[0] === 't2')).toBe(false)
    expect(nodes.find((n) => n.name === 'm2')!.output[0]).toBe('t2')
    expect(nodes.find((n) => n.name === 'm3')!.input[0]).toBe('t2')
    const ort = await loadOrt()
    const s = await ort.InferenceSession.create(modelToBytes(model))
    const y = (await s.run({x: new ort.Tensor('float32', new Float32Array(8).fill(1), [1, 8])})).y!.data as Float32Array
    expect(Math.abs(y[0]! - 90)).toBeLessThan(0.1)
  })

  it('with calibration data, checks the float16 model against the float one on those samples', async () => {
    const trained = ensureTrainedModels()
    const out = path.join(dir, 'fashion_cnn.checked.fp16.onnx')
    const r = await quantizeModel({input: trained.cnn, output: out, mode: 'fp16', profile, calibration: {name: 'calib', path: trained.calib, limit: 24}})
    expect(r.calibrationCheck!.samples).toBe(24)
    expect(r.calibrationCheck!.agreement).toBe(1)
    expect(r.calibrationCheck!.sqnrDb).toBeGreaterThan(40)
    expect(r.calibration!.dataset).toBe('calib')
  })
})

describe('dynamic int8 on every real model (weights in initializers, Constant nodes and If subgraphs)', () => {
  it.each(keys)('%s: quantizes, loads, runs', async (key) => {
    const out = path.join(dir, `${key}.dyn.onnx`)
    const r = await quantizeModel({input: MODELS[key], output: out, mode: 'dynamic', profile, neverSlower: false})
    expect(r.decision).toBe('quantized')
    expect(Object.values(r.quantizedNodes).reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
    expect(r.opset.to).toBeGreaterThanOrEqual(13)
    const ops = await opCounts(out)
    expect(ops.get('DynamicQuantizeLinear')).toBeGreaterThan(0)
    // Silero's LSTM weights stay float (dynamic covers MatMul/Gemm/Conv), so its ratio is higher.
    expect(r.sizeRatio).toBeLessThan(key.startsWith('silero') ? 0.8 : 0.6)
    await expectCloseOnRealInputs(key, out, 0.95)
  })
})

describe('int4 MatMulNBits', () => {
  const model = transformerModel({d: 64, layers: 2})
  const input = path.join(dir, 'tiny-transformer.onnx')
  it.each([
    ['rtn', true, 32],
    ['rtn', false, 64],
    ['hqq', false, 32],
  ] as const)('%s symmetric=%s block %i: loads, runs, close to fp32', async (algorithm, symmetric, blockSize) => {
    await writeModel(model, input)
    const out = path.join(dir, `tiny.${algorithm}.${blockSize}.onnx`)
    const r = await quantizeModel({input, output: out, mode: 'int4', algorithm, symmetric, blockSize, profile, neverSlower: false})
    expect(r.quantizedNodes).toEqual({MatMul: 4})
    expect((await opCounts(out)).get('MatMulNBits')).toBe(4)
    const ort = await import('onnxruntime-node')
    const x = new ort.Tensor('float32', Float32Array.from({length: 2 * 5 * 64}, (_, i) => Math.sin(i)), [2, 5, 64])
    const a = await runModel(input, {x})
    const b = await runModel(out, {x})
    expect(cosine(a.y!, b.y!)).toBeGreaterThan(0.99)
    expect(r.sizeRatio).toBeLessThan(0.25)
  })
})

describe('int4 GPTQ', () => {
  // Inputs shaped like a transformer's hidden states: a few directions carry most of the energy, and
  // a few channels are outliers. GPTQ spends the rounding error where these inputs do not look.
  const d = 64
  const model = transformerModel({d, layers: 2, seed: 11})
  let seed = 5
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff - 0.5) * 2
  const basis = Float32Array.from({length: 8 * d}, rnd)
  const hidden = (samples: number, seq: number) => {
    const x = new Float32Array(samples * seq * d)
    for (let r = 0; r < samples * seq; r++) {
      const c = Array.from({length: 8}, rnd)
      for (let i = 0; i < d; i++) {
        let v = 0.05 * rnd()
        for (let j = 0; j < 8; j++) v += c[j]! * basis[j * d + i]!
        x[r * d + i] = i % 16 === 3 ? 6 * v : v
      }
    }
    return x
  }
  const input = path.join(dir, 'gptq-transformer.onnx')
  const calib = path.join(dir, 'gptq-calib.npz')

  it('moves the output less than round-to-nearest on held-out inputs, at block 32 and 64, symmetric and not', async () => {
    await writeModel(model, input)
    await writeNpz(calib, {x: {dtype: '<f4', shape: [64, 8, d], data: hidden(64, 8)}})
    const ort = await import('onnxruntime-node')
    const x = new ort.Tensor('float32', hidden(16, 8), [16, 8, d])
    const ref = (await runModel(input, {x})).y!
    for (const [blockSize, symmetric] of [[32, true], [64, false]] as const) {
      const rtn = path.join(dir, `gptq-base.${blockSize}.onnx`)
      const gptq = path.join(dir, `gptq.${blockSize}.onnx`)
      await quantizeModel({input, output: rtn, mode: 'int4', algorithm: 'rtn', symmetric, blockSize, profile, neverSlower: false})
      const r = await quantizeModel({input, output: gptq, mode: 'int4', algorithm: 'gptq', symmetric, blockSize, calibration: {name: 'calib', path: calib}, profile, neverSlower: false})
      expect(r.quantizedNodes).toEqual({MatMul: 4})
      expect(r.calibration).toMatchObject({method: 'gptq', samples: 64})
      expect((await opCounts(gptq)).get('MatMulNBits')).toBe(4)
      const a = sqnr(ref, (await runModel(rtn, {x})).y!)
      const b = sqnr(ref, (await runModel(gptq, {x})).y!)
      expect(b, `block ${blockSize}: GPTQ ${b.toFixed(1)} dB vs RTN ${a.toFixed(1)} dB`).toBeGreaterThan(a + 3)
    }
  })

  it('on the trained Fashion-MNIST MLP (Gemm layers; the first, K=784, excluded): closer to fp32 than round-to-nearest over the 10k test set', async () => {
    const trained = ensureTrainedModels()
    const test = {name: 'test', path: trained.test}
    const batches = () => readBatches(test, {batchSize: 1000})
    const fp32 = await evaluate(trained.mlp, batches, profile)
    const agreeing: Record<string, number> = {}
    for (const algorithm of ['rtn', 'gptq'] as const) {
      const out = path.join(dir, `fashion_mlp.int4.${algorithm}.onnx`)
      const r = await quantizeModel({input: trained.mlp, output: out, mode: 'int4', algorithm, blockSize: 64, exclude: ['fc1'], calibration: {name: 'calib', path: trained.calib}, profile, neverSlower: false})
      expect(r.quantizedNodes).toEqual({Gemm: 2})
      expect(r.leftFloat).toContainEqual(expect.objectContaining({node: 'fc1', reason: 'excluded'}))
      expect((await opCounts(out)).get('MatMulNBits')).toBe(2)
      const q = await evaluate(out, batches, profile)
      expect(Math.abs(fp32.accuracy! - q.accuracy!), algorithm).toBeLessThanOrEqual(0.005)
      agreeing[algorithm] = agreement(fp32.predictions, q.predictions)
    }
    expect(agreeing.gptq).toBeGreaterThanOrEqual(0.99)
    expect(agreeing.gptq).toBeGreaterThan(agreeing.rtn!)
  })

  it('needs calibration data', async () => {
    await writeModel(model, input)
    await expect(quantizeModel({input, output: path.join(dir, 'gptq-none.onnx'), mode: 'int4', algorithm: 'gptq', profile, neverSlower: false})).rejects.toMatchObject({code: 'E_QUANT_NO_CALIBRATION'})
    expect(fs.existsSync(path.join(dir, 'gptq-none.onnx'))).toBe(false)
  })
})
