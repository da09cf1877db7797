import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {KilnError} from '../../../src/errors.js'
import {answerTensors, calibrate, TensorStats} from '../../../src/compress/quant/calibrate.js'
import {quantizeModel} from '../../../src/compress/quant/index.js'
import {cutNode} from '../../../src/compress/quant/node-timing.js'
import {exposedSession, inferTypes, sessionFor} from '../../../src/compress/quant/graph-util.js'
import {buildCandidate} from '../../../src/compress/quant/candidates.js'
import type {ModeContext} from '../../../src/compress/quant/candidates.js'
import {applyStatic, flattenChannelsLast, planStatic} from '../../../src/compress/quant/static.js'
import {cosine} from '../../../src/compress/quant/math.js'
import {preprocessModel} from '../../../src/compress/preprocess.js'
import {upgradeOpset} from '../../../src/compress/quant/opset.js'
import {allNodes} from '../../../src/onnx/graph.js'
import {modelToBytes, readModel, writeModel} from '../../../src/onnx/model.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../../src/onnx/build.js'
import {DataType} from '../../../src/onnx/proto.js'
import type {GraphProto} from '../../../src/onnx/proto.js'
import type {NpyArray} from '../../../src/data/npy.js'
import {makeTensor} from '../../../src/onnx/tensor.js'
import {writeNpz} from '../../../src/data/npz-write.js'
import {seededRandom} from '../../../src/data/random.js'
import {MODELS, ensureFixtures, ensureTrainedModels} from '../../helpers/fixtures.js'
import {agreement, evaluate, referenceOutputs} from '../../../src/compress/quant/measure.js'
import {readBatches} from '../../../src/data/dataset.js'
import type {Batch} from '../../../src/data/dataset.js'
import {faceScore, lfwSamples, writeLfwNpz} from './lfw.js'
import {feedsFor, runModel, sileroAgreement, sileroStream} from './models.js'

ensureFixtures()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-quant-static-'))
afterAll(() => fs.rmSync(dir, {recursive: true, force: true}))
const profile = {name: 'cpu-1t', threads: 1, providers: ['cpu'], batch: [1]}
const calib = path.join(dir, 'lfw-calib.npz')
const evalSet = path.join(dir, 'lfw-eval.npz')
// Faces are samples 0–99, non-faces 100–199: calibration and evaluation take disjoint halves of each.
const calibIdx = [...Array(12)].map((_, i) => (i < 6 ? i * 16 + 1 : 100 + (i - 6) * 16 + 1))
const evalIdx = [...Array(20)].map((_, i) => (i < 10 ? i * 10 + 4 : 100 + (i - 10) * 10 + 4))
const holdIdx = [...Array(20)].map((_, i) => (i < 10 ? i * 10 + 7 : 100 + (i - 10) * 10 + 7))

beforeAll(async () => {
  await writeLfwNpz(calib, calibIdx)
  await writeLfwNpz(evalSet, evalIdx)
})

async function lfwAccuracy(model: string, indices: number[]): Promise<{acc: number; preds: boolean[]}> {
  const ort = await import('onnxruntime-node')
  const preds: boolean[] = []
  for (const i of indices) {
    const out = await runModel(model, {'input:0': new ort.Tensor('float32', lfwSamples([i]).input, [1, 128, 128, 3])})
    preds.push(faceScore(Object.fromEntries(Object.entries(out).map(([k, v]) => [k, {data: v}]))) > 0)
  }
  return {acc: preds.filter((p, k) => p === indices[k]! < 100).length / indices.length, preds}
}

/** Seeded values spread evenly over [-scale/2, scale/2). */
const uniform = (seed: number, scale: number) => {
  const next = seededRandom(seed)
  return () => (next() - 0.5) * scale
}

/** A Constant node holding a float tensor of seeded values. */
const constantNode = (name: string, dims: number[], rnd: () => number) =>
  makeNode('Constant', [], [name], {value: makeTensor(name, DataType.FLOAT, dims, Float32Array.from({length: dims.reduce((a, b) => a * b, 1)}, rnd))})

/**
 * Write a generated graph and its calibration arrays, quantize it static (never-slower off), and
 * compare the first output with the float model's on `feeds`.
 */
async function quantizeGenerated(name: string, graph: GraphProto, calib: Record<string, NpyArray>, feeds: Record<string, [Float32Array, number[]]>) {
  const input = path.join(dir, `${name}.onnx`)
  await writeModel(makeModel(graph, {'': 17}), input)
  await writeNpz(path.join(dir, `${name}-calib.npz`), calib)
  const out = path.join(dir, `${name}.static.onnx`)
  const r = await quantizeModel({input, output: out, mode: 'static', calibration: {name: 'c', path: path.join(dir, `${name}-calib.npz`)}, profile, neverSlower: false})
  const ort = await import('onnxruntime-node')
  const tensors = Object.fromEntries(Object.entries(feeds).map(([k, [data, dims]]) => [k, new ort.Tensor('float32', data, dims)]))
  const [a, b] = [await runModel(input, tensors), await runModel(out, tensors)]
  const first = graph.output[0]!.name
  return {r, q: await readModel(out), cos: cosine(a[first]!, b[first]!)}
}

describe('static QDQ on BlazeFace with LFW', () => {
  it('accuracy-aware fallback keeps the labels, with QDQ placed for QLinearConv fusion', async () => {
    const out = path.join(dir, 'blazeface.int8.onnx')
    const r = await quantizeModel({
      input: MODELS.blazeface, output: out, mode: 'static', calibration: {name: 'calib', path: calib}, method: 'percentile',
      eval: {name: 'eval', path: evalSet}, maxAccuracyDrop: 0, profile, neverSlower: false,
    })
    expect(r.decision).toBe('quantized')
    expect(r.opset).toEqual({from: 12, to: 13})
    expect(r.calibration?.samples).toBe(12)
    expect(r.quantizedNodes.Conv).toBeGreaterThan(20)
    expect(r.accuracy!.drop).toBeLessThanOrEqual(0)
    // The score heads feed the outputs: they stay float.
    expect(r.leftFloat.some((f) => f.reason.startsWith('output layer'))).toBe(true)
    const ops = new Map<string, number>()
    for (const {node} of allNodes(await readModel(out))) ops.set(node.opType, (ops.get(node.opType) ?? 0) + 1)
    expect(ops.get('QuantizeLinear')).toBeGreaterThan(10)
    // Per-channel weights: DequantizeLinear with an axis.
    const m = await readModel(out)
    expect(m.graph!.node.some((n) => n.opType === 'DequantizeLinear' && n.attribute.some((a) => a.name === 'axis'))).toBe(true)
    // Held-out faces and non-faces keep their labels.
    const fp = await lfwAccuracy(MODELS.blazeface, holdIdx)
    const q = await lfwAccuracy(out, holdIdx)
    const agree = fp.preds.filter((p, i) => p === q.preds[i]).length / holdIdx.length
    expect(agree).toBeGreaterThanOrEqual(0.9)
    expect(q.acc).toBeGreaterThanOrEqual(fp.acc - 0.1)
    if (r.fallback.length) expect(r.sensitivity!.length).toBeGreaterThan(0)
  })

  it('refuses a collapsed calibration with a diagnosis, writing nothing', async () => {
    // Entropy (KL) clips BlazeFace's deep activations to a fraction of what faces reach: faces are lost.
    const out = path.join(dir, 'blazeface.collapsed.onnx')
    const e = await quantizeModel({input: MODELS.blazeface, output: out, mode: 'static', calibration: {name: 'calib', path: calib}, method: 'entropy', profile, neverSlower: false}).catch((error: unknown) => error as KilnError)
    expect(e).toBeInstanceOf(KilnError)
    expect((e as KilnError).code).toBe('E_QUANT_COLLAPSE')
    expect((e as KilnError).message).toMatch(/agrees with the float one on \d+(\.\d)?% of predictions/)
    expect((e as KilnError).message).toMatch(/entropy method clipped \d+ activation ranges.*: Conv \S+: seen \[-?[\d.]+, -?[\d.]+\], kept \[-?[\d.]+, -?[\d.]+\]/)
    expect((e as KilnError).tryMessage).toMatch(/--method minmax or --method percentile/)
    expect(fs.existsSync(out)).toBe(false)
    // The same data with percentile ranges passes the check, and the report says how closely.
    const ok = await quantizeModel({input: MODELS.blazeface, output: out, mode: 'static', calibration: {name: 'calib', path: calib}, method: 'percentile', profile, neverSlower: false})
    expect(ok.calibrationCheck!.samples).toBe(12)
    expect(ok.calibrationCheck!.agreement).toBeGreaterThanOrEqual(0.9)
  })

  it('does not let a blank calibration image set the ranges: minmax is refused naming it, the default averages', async () => {
    // LFW non-face 152 is a black crop: deep in the net it reaches 20-40x what the other crops do.
    const idx = [...calibIdx.slice(0, 9), 152, ...calibIdx.slice(9)]
    const cal = path.join(dir, 'lfw-calib-blank.npz')
    await writeLfwNpz(cal, idx)
    const out = path.join(dir, 'blazeface.blank.onnx')
    const e = await quantizeModel({input: MODELS.blazeface, output: out, mode: 'static', calibration: {name: 'calib', path: cal}, method: 'minmax', profile, neverSlower: false}).catch((error: unknown) => error as KilnError)
    expect((e as KilnError).code).toBe('E_QUANT_COLLAPSE')
    expect((e as KilnError).message).toMatch(/A few calibration samples set \d+ activation ranges at more than 4× what the typical sample reaches, most often sample 9 \(/)
    expect((e as KilnError).message).toMatch(/the average sample reaches \[[-\d.]+, [\d.]+\], sample 9 \[[-\d.]+, [\d.e+]+\]/)
    expect((e as KilnError).tryMessage).toMatch(/--method average/)
    expect(fs.existsSync(out)).toBe(false)
    // Without a method chosen, kiln tries both and keeps each sample's own range, averaged, saying why.
    const r = await quantizeModel({input: MODELS.blazeface, output: out, mode: 'static', calibration: {name: 'calib', path: cal}, profile, neverSlower: false})
    expect(r.calibration!.method).toBe('average')
    const [minmax, average] = r.calibration!.compared!
    expect(minmax!.method).toBe('minmax')
    expect(minmax!.agreement).toBeLessThan(0.8)
    expect(average!.method).toBe('average')
    expect(average!.sqnrDb).toBeGreaterThan(minmax!.sqnrDb)
    expect(r.calibrationCheck).toEqual({samples: 13, agreement: average!.agreement, sqnrDb: average!.sqnrDb})
    expect(r.calibrationCheck!.agreement).toBeGreaterThanOrEqual(0.9)
    const fp = await lfwAccuracy(MODELS.blazeface, holdIdx)
    const q = await lfwAccuracy(out, holdIdx)
    expect(fp.preds.filter((p, i) => p === q.preds[i]).length).toBeGreaterThanOrEqual(19)
    // Asked for by name, average gives the same ranges.
    const named = await quantizeModel({input: MODELS.blazeface, output: path.join(dir, 'blazeface.average.onnx'), mode: 'static', calibration: {name: 'calib', path: cal}, method: 'average', profile, neverSlower: false})
    expect(named.calibration!.compared).toBeUndefined()
    expect(fs.readFileSync(path.join(dir, 'blazeface.average.onnx')).equals(fs.readFileSync(out))).toBe(true)
  })

  it('keeps the input, and says so, when int8 is not faster on the profile', async () => {
    const out = path.join(dir, 'blazeface.kept.onnx')
    const r = await quantizeModel({input: MODELS.blazeface, output: out, mode: 'dynamic', profile: {...profile, iterations: 20}})
    // ConvInteger is several times slower than float convolution on x86.
    expect(r.candidates[0]!.latency![0]!.speedup).toBeLessThan(1)
    expect(r.decision).toBe('kept-input')
    expect(r.message).toMatch(/kept the input/)
    expect(fs.readFileSync(out).equals(fs.readFileSync(MODELS.blazeface))).toBe(true)
  })
})

describe('static QDQ on the trained Fashion-MNIST CNN', () => {
  it('keeps accuracy within a point and agrees with fp32 on 98% of 500 test images', async () => {
    const trained = ensureTrainedModels()
    const out = path.join(dir, 'fashion_cnn.int8.onnx')
    const r = await quantizeModel({input: trained.cnn, output: out, mode: 'static', calibration: {name: 'calib', path: trained.calib}, profile, neverSlower: false})
    expect(r.preprocess!.foldedBatchNorm).toBeGreaterThan(0)
    expect(r.quantizedNodes.Conv).toBeGreaterThan(0)
    // No method chosen: both tried; on these images min/max follows the float model closer and is kept.
    const compared = r.calibration!.compared!
    expect(compared.map((c) => c.method)).toEqual(['minmax', 'average'])
    expect(compared[0]!.sqnrDb).toBeGreaterThan(compared[1]!.sqnrDb)
    expect(r.calibration!.method).toBe('minmax')
    expect(r.calibrationCheck!.sqnrDb).toBe(compared[0]!.sqnrDb)
    const test = {name: 'test', path: trained.test, limit: 500}
    const batches = () => readBatches(test, {batchSize: 100})
    const a = await evaluate(trained.cnn, batches, profile)
    const b = await evaluate(out, batches, profile)
    expect(a.accuracy! - b.accuracy!).toBeLessThanOrEqual(0.01)
    expect(agreement(a.predictions, b.predictions)).toBeGreaterThanOrEqual(0.98)
  })
})

/** The trained Fashion-MNIST CNN pre-processed, planned for static QDQ, and its min/max ranges on `samples` images. */
async function plannedCnn(samples: number) {
  const trained = ensureTrainedModels()
  const work = await readModel(trained.cnn)
  preprocessModel(work)
  upgradeOpset(work, 13)
  const meta = await inferTypes(work)
  const opts = {perChannel: true, activations: 'uint8' as const, symmetricActivations: false, reduceRange: false, excluded: () => false}
  const plan = planStatic(work, meta, opts)
  const inputs = [{name: 'input', type: 'float32', dims: ['N', 1, 28, 28] as (string | number)[]}]
  const cal = await calibrate(work, plan.calibrate, readBatches({name: 'calib', path: trained.calib, limit: samples}, {batchSize: 32, inputs}))
  const ranges = new Map([...cal.stats].map(([k, st]) => [k, st.range('minmax')]))
  return {trained, work, meta, opts, plan, inputs, ranges}
}

describe('hardware-aware static quantization', () => {
  it('cuts a convolution out in float and in QDQ form that compute the same thing', async () => {
    const trained = ensureTrainedModels()
    const model = await readModel(trained.cnn)
    const meta = await inferTypes(model)
    const conv = model.graph!.node.find((n) => n.opType === 'Conv')!
    const ranges = new Map([[conv.input[0]!, {min: -1, max: 1}], [conv.output[0]!, {min: -4, max: 4}]])
    const c = cutNode(model, conv, meta, new Map(), ranges, 2, 'uint8', false, false)!
    expect(c.shape).toEqual([2, 1, 28, 28])
    expect(c.int8.graph!.node.map((n) => n.opType)).toContain('QuantizeLinear')
    const ort = await import('onnxruntime-node')
    const x = new Float32Array(2 * 784).map((_, i) => Math.sin(i * 0.37))
    const run = async (m: typeof c.float) => {
      const s = await ort.InferenceSession.create(modelToBytes(m), {logSeverityLevel: 3})
      const out = await s.run({[c.input]: new ort.Tensor('float32', x, c.shape)})
      await s.release()
      return Object.values(out)[0]!.data as Float32Array
    }
    const [f, q] = [await run(c.float), await run(c.int8)]
    expect(f.length).toBe(2 * 16 * 28 * 28)
    // Same op, same weights: only int8 rounding (and the output range) between them.
    expect(cosine(f, q)).toBeGreaterThan(0.999)
  })

  it('with the first convolution kept float, quantizes the pool after it on its own range and pools before the ReLU', async () => {
    // onnxruntime would otherwise run that max pool on uint8 in NCHW layout, its slow path, and the
    // second convolution needs the pool output's own range (the full plan shares the ReLU's).
    const {trained, work, meta, inputs, ranges} = await plannedCnn(64)
    const ctx: ModeContext = {mode: 'static', exclude: [], perChannel: true, activations: 'uint8', symmetric: false, reduceRange: false, blockSize: 32, algorithm: 'rtn', accuracyLevel: 4, keepIOTypes: true, meta, ranges}
    const built = buildCandidate(work, ctx, {mix: {name: 'only the ops that gain', arith: true, keepFloat: new Map([['conv1', 'slower in int8']])}, extraExcluded: new Set()})
    expect(built.quantizedNodes.Conv).toBe(2)
    const nodes = built.model.graph!.node
    const at = (name: string) => nodes.findIndex((n) => n.name === name)
    expect(at('pool1')).toBeLessThan(at('relu1'))
    const conv2 = nodes.find((n) => n.name === 'conv2')!
    expect(conv2.input[0]).toMatch(/DequantizeLinear/)
    // The same answers as fp32 on test images.
    const q = await evaluate(modelToBytes(built.model), () => readBatches({name: 'test', path: trained.test, limit: 512}, {batchSize: 128, inputs}), profile)
    const f = await evaluate(trained.cnn, () => readBatches({name: 'test', path: trained.test, limit: 512}, {batchSize: 128, inputs}), profile)
    expect(agreement(f.predictions, q.predictions)).toBeGreaterThanOrEqual(0.99)
  })

  it('flattens the int8 convolution\'s output channels-last, the dense weight permuted to match: the same outputs', async () => {
    // onnxruntime runs QLinearConv in NHWC and would transpose back to NCHW for the Flatten.
    const {trained, work, meta, opts, plan, inputs, ranges} = await plannedCnn(32)
    applyStatic(work, plan, ranges, opts)
    const before = modelToBytes(work)
    expect(flattenChannelsLast(work, meta)).toBe(1)
    const flat = work.graph!.node.find((n) => n.opType === 'Flatten')!
    const t = work.graph!.node.find((n) => n.output[0] === flat.input[0])!
    expect(t.opType).toBe('Transpose')
    expect(t.attribute.find((a) => a.name === 'perm')!.ints.map(Number)).toEqual([0, 2, 3, 1])
    const batch: Batch[] = []
    for await (const b of readBatches({name: 'test', path: trained.test, limit: 64}, {batchSize: 64, inputs})) batch.push(b)
    const a = await referenceOutputs(before, batch, profile)
    const b = await referenceOutputs(modelToBytes(work), batch, profile)
    expect(b.outputs[0]!.logits!.data).toEqual(a.outputs[0]!.logits!.data)
    // Nothing to do without an int8 convolution before the Flatten: the float model is left alone.
    const float = await readModel(trained.cnn)
    expect(flattenChannelsLast(float, await inferTypes(float))).toBe(0)
  })

  it('times every weighted op alone in float and int8, and offers a candidate keeping the ones that lose in float', async () => {
    const trained = ensureTrainedModels()
    const out = path.join(dir, 'fashion_cnn.aware.onnx')
    const r = await quantizeModel({input: trained.cnn, output: out, mode: 'static', calibration: {name: 'calib', path: trained.calib}, profile: {...profile, iterations: 20}})
    expect(r.nodeTimings!.map((t) => t.node).sort()).toEqual(['conv1', 'conv2', 'conv3', 'fc'])
    for (const t of r.nodeTimings!) expect(t.floatUs > 0 && t.int8Us > 0).toBe(true)
    const losers = r.nodeTimings!.filter((t) => t.int8Us > 0.9 * t.floatUs)
    const offered = r.candidates.some((c) => c.name === 'only the ops that gain')
    expect(offered).toBe(losers.length > 0 && losers.length < r.nodeTimings!.length)
    // Whatever was chosen, the report says why each node it left in float stayed float.
    for (const f of r.leftFloat) expect(f.reason.length).toBeGreaterThan(0)
    if (r.chosen === 'only the ops that gain') for (const l of losers) expect(r.leftFloat.find((f) => f.node === l.node)?.reason).toMatch(/not faster in int8 on cpu-1t \(\d+ µs vs \d+ µs in float\)/)
  })
})

describe('static QDQ inside If branches (Silero: weights in Constant nodes inside subgraphs)', () => {
  it.each(['sileroV5', 'sileroLegacy'] as const)('%s: calibrates on streamed real speech and quantizes the convolutions of the branch that ran', async (key) => {
    const cal = await sileroStream(key, ['cards-001.wav', 'cards-002.wav'], 48, path.join(dir, `${key}-cal.npz`))
    const held = await sileroStream(key, ['cards-004.wav', 'cards-005.wav'], 96, path.join(dir, `${key}-held.npz`))
    const out = path.join(dir, `${key}.static.onnx`)
    const r = await quantizeModel({input: MODELS[key], output: out, mode: 'static', calibration: {name: 'speech', path: cal.npz}, profile, neverSlower: false})
    expect(r.decision).toBe('quantized')
    expect(r.calibration!.samples).toBe(48)
    // Every Conv of the 16 kHz branch is quantized; the 8 kHz branch never ran, so it stays float and says why.
    const convs = [...allNodes(await readModel(MODELS[key]))].filter(({node}) => node.opType === 'Conv')
    expect(r.quantizedNodes.Conv).toBe(convs.length / 2)
    const unseen = r.leftFloat.filter((f) => /never ran/.test(f.reason))
    expect(unseen.length).toBe(convs.length / 2)
    const q = await readModel(out)
    const inBodies = [...allNodes(q)].filter(({node, path: p}) => p.length > 0 && node.opType === 'QuantizeLinear')
    expect(inBodies.length).toBeGreaterThan(0)
    // Speech/no-speech decisions on held-out recordings, each chunk with the float model's state.
    const {agreement, meanAbsError} = await sileroAgreement(out, held)
    expect(agreement).toBeGreaterThanOrEqual(key === 'sileroV5' ? 0.9 : 0.85)
    expect(meanAbsError).toBeLessThan(0.1)
    // The float 8 kHz branch answers exactly as before.
    const ort = await import('onnxruntime-node')
    const at8k = (await feedsFor(key)) as Record<string, import('onnxruntime-node').Tensor>
    const input = new ort.Tensor('float32', (at8k.input!.data as Float32Array).slice(0, 256), [1, 256])
    const f8 = {...at8k, input, sr: new ort.Tensor('int64', BigInt64Array.of(8000n), [])}
    const a = await runModel(MODELS[key], f8)
    const b = await runModel(out, f8)
    expect(Math.abs(a.output![0]! - b.output![0]!)).toBeLessThan(1e-5)
  })

  it('times a model whose inputs have no batch axis at batch 1 when the profile asks for larger batches too', async () => {
    const cal = await sileroStream('sileroV5', ['cards-001.wav'], 16, path.join(dir, 'v5-timing-cal.npz'))
    const r = await quantizeModel({input: MODELS.sileroV5, output: path.join(dir, 'v5.timed.onnx'), mode: 'static', calibration: {name: 'speech', path: cal.npz}, profile: {...profile, batch: [1, 4], iterations: 20}})
    expect(r.candidates.length).toBeGreaterThan(0)
    for (const c of r.candidates.filter((c) => c.latency)) expect(c.latency!.map((l) => l.batch)).toEqual([1])
    expect(r.candidates.every((c) => !/latency not measured/.test(c.reason))).toBe(true)
  })

  it('accuracy-aware on Silero legacy: measures each unit alone and falls back only the few that matter', async () => {
    const cal = await sileroStream('sileroLegacy', ['cards-001.wav', 'cards-002.wav'], 64, path.join(dir, 'legacy-aware-cal.npz'))
    const evalStream = await sileroStream('sileroLegacy', ['cards-004.wav', 'cards-005.wav'], 96, path.join(dir, 'legacy-aware-eval.npz'))
    const out = path.join(dir, 'legacy.aware.onnx')
    const r = await quantizeModel({
      input: MODELS.sileroLegacy, output: out, mode: 'static', calibration: {name: 'speech', path: cal.npz},
      eval: {name: 'speech-eval', path: evalStream.npz}, maxAccuracyDrop: 0.02, profile, neverSlower: false,
    })
    // No labels: the drop is the share of speech/no-speech decisions that differ from fp32.
    expect(r.accuracy!.agreement).toBeGreaterThanOrEqual(0.98)
    expect((await sileroAgreement(out, evalStream)).agreement).toBe(r.accuracy!.agreement)
    const table = r.sensitivity!
    expect(table.length).toBeGreaterThan(20)
    for (let i = 1; i < table.length; i++) expect(table[i]!.sqnrDb).toBeGreaterThanOrEqual(table[i - 1]!.sqnrDb)
    // A handful of units in float, most convolutions still int8.
    expect(r.fallback.length).toBeGreaterThan(0)
    expect(r.fallback.length).toBeLessThanOrEqual(table.length / 4)
    expect(r.quantizedNodes.Conv).toBeGreaterThanOrEqual(12)
  })

  it('calibrates a Loop body over all its iterations, carried value included, and quantizes its MatMul', async () => {
    // y = three times v ← ReLU(v · W + b), with W and b in Constant nodes inside the body.
    const d = 16
    const rnd = uniform(5, 0.6)
    const body = makeGraph({
      name: 'body',
      node: [
        makeNode('Identity', ['cond_in'], ['cond_out']),
        constantNode('W', [d, d], rnd),
        constantNode('b', [d], rnd),
        makeNode('MatMul', ['v_in', 'W'], ['h'], {}, {name: 'body_matmul'}),
        makeNode('Add', ['h', 'b'], ['hb']),
        makeNode('Relu', ['hb'], ['v_out']),
      ],
      input: [makeValueInfo('i', DataType.INT64, []), makeValueInfo('cond_in', DataType.BOOL, []), makeValueInfo('v_in', DataType.FLOAT, ['n', d])],
      output: [makeValueInfo('cond_out', DataType.BOOL, []), makeValueInfo('v_out', DataType.FLOAT, ['n', d])],
    })
    const main = makeGraph({
      name: 'loop',
      node: [makeNode('Loop', ['M', '', 'x'], ['y'], {body}, {name: 'loop'})],
      initializer: [makeTensor('M', DataType.INT64, [], BigInt64Array.of(3n))],
      input: [makeValueInfo('x', DataType.FLOAT, ['n', d])],
      output: [makeValueInfo('y', DataType.FLOAT, ['n', d])],
    })
    const n = 64
    const x = Float32Array.from({length: n * d}, () => rnd() * 3)
    const {r, q, cos} = await quantizeGenerated('loop', main, {x: {dtype: '<f4', shape: [n, d], data: x}}, {x: [x.slice(0, 8 * d), [8, d]]})
    expect(r.quantizedNodes.MatMul).toBe(1)
    expect(r.leftFloat).toEqual([])
    expect([...allNodes(q)].filter(({node, path: p}) => p.length === 1 && node.opType === 'QuantizeLinear').length).toBeGreaterThanOrEqual(2)
    expect(cos).toBeGreaterThan(0.999)
  })

  it('calibrates a Scan body over every step and quantizes its MatMul', async () => {
    // y[t] = ReLU(x[t] · W) for each row t of an unbatched [T, d] input, W in a Constant node inside the body.
    const d = 8
    const rnd = uniform(11, 0.8)
    const body = makeGraph({
      name: 'step',
      node: [
        constantNode('Ws', [d, d], rnd),
        makeNode('MatMul', ['x_t', 'Ws'], ['h_t'], {}, {name: 'step_matmul'}),
        makeNode('Relu', ['h_t'], ['y_t']),
      ],
      input: [makeValueInfo('x_t', DataType.FLOAT, [d])],
      output: [makeValueInfo('y_t', DataType.FLOAT, [d])],
    })
    const main = makeGraph({
      name: 'scan',
      node: [makeNode('Scan', ['xs'], ['ys'], {body, num_scan_inputs: 1}, {name: 'scan'})],
      input: [makeValueInfo('xs', DataType.FLOAT, ['T', d])],
      output: [makeValueInfo('ys', DataType.FLOAT, ['T', d])],
    })
    const n = 24
    const steps = 5
    const xs = Float32Array.from({length: n * steps * d}, () => rnd() * 3)
    // Each sample is a whole [T, d] input: the model has no batch axis.
    const {r, cos} = await quantizeGenerated('scan', main, {xs: {dtype: '<f4', shape: [n, steps, d], data: xs}}, {xs: [xs.slice(0, steps * d), [steps, d]]})
    expect(r.calibration!.batches).toBe(n)
    expect(r.quantizedNodes.MatMul).toBe(1)
    expect(r.leftFloat).toEqual([])
    expect(cos).toBeGreaterThan(0.999)
  })

  it('never lets onnxruntime move a DequantizeLinear through a Transpose into a branch (it aborts the process)', async () => {
    // Silero legacy: Conv → ReLU → Transpose, read inside the LSTM's If. With only the weighted ops
    // quantized, onnxruntime's QDQ propagation would push the DequantizeLinear past the Transpose
    // onto the branch's implicit input and abort while loading.
    const work = await readModel(MODELS.sileroLegacy)
    preprocessModel(work)
    upgradeOpset(work, 13)
    const meta = await inferTypes(work)
    const ctx: ModeContext = {mode: 'static', exclude: [], perChannel: true, activations: 'uint8', symmetric: false, reduceRange: false, blockSize: 32, algorithm: 'rtn', accuracyLevel: 4, keepIOTypes: true, meta}
    const plan = planStatic(work, meta, {perChannel: true, activations: 'uint8', symmetricActivations: false, reduceRange: false, excluded: () => false})
    ctx.ranges = new Map(plan.calibrate.map((t) => [t, {min: -1, max: 1}]))
    const built = buildCandidate(work, ctx, {mix: {name: 'weighted ops only', arith: false}, extraExcluded: new Set()})
    expect(built.quantizedNodes.Conv).toBeGreaterThan(0)
    const transposes = [...allNodes(built.model)].filter(({node}) => node.opType === 'Transpose' && node.name === 'Transpose_175')
    expect(transposes[0]!.node.input[0]).not.toMatch(/DequantizeLinear/)
    const feeds = (await feedsFor('sileroLegacy')) as Record<string, import('onnxruntime-node').Tensor>
    expect((await runModel(modelToBytes(built.model), feeds)).output!.length).toBe(1)
  })
})

describe('calibration statistics', () => {
  it('finds the tensors that are the answer: outputs and what reaches them through layout ops only', async () => {
    const m = await readModel(MODELS.blazeface)
    const g = m.graph!
    const answers = answerTensors(m)
    // Each score/box head: Conv → Transpose → Reshape → output. The Conv output is the answer; its input is not.
    for (const o of g.output) expect(answers.has(o.name)).toBe(true)
    const heads = g.node.filter((n) => n.opType === 'Conv' && answers.has(n.output[0]!))
    expect(heads.length).toBe(4)
    for (const h of heads) expect(answers.has(h.input[0]!)).toBe(false)
    expect(answers.size).toBe(12)
  })

  it('reads tensors from inside If branches: the branch taken hands out values, the other nothing, the model unchanged', async () => {
    const m = await readModel(MODELS.sileroV5)
    const before = modelToBytes(m)
    const conv = (branch: string) => [...allNodes(m)].find(({node, path: p}) => node.opType === 'Conv' && p.length === 1 && p[0]!.endsWith(branch))!.node.output[0]!
    const [t16, t8] = [conv('then_branch'), conv('else_branch')]
    const exposed = await exposedSession(m, [t16, t8])
    expect(Buffer.from(modelToBytes(m)).equals(before)).toBe(true)
    const s = exposed.session
    const out = await s.run((await feedsFor('sileroV5')) as Record<string, import('onnxruntime-node').Tensor>)
    expect(out[exposed.outputs.get(t16)!]!.data.length).toBeGreaterThan(0)
    expect(out[exposed.outputs.get(t8)!]!.data.length).toBe(0)
    await s.release()
    const types = await inferTypes(m)
    expect(types.get(t16)?.type).toBe('float32')
  })

  it('average: each sample\'s own range, averaged, and the sample reaching furthest', () => {
    const s = new TensorStats()
    // Two batches of 3 samples × 4 values; sample 4 (second batch, middle) reaches 100.
    s.add(Float32Array.from([0, 1, 2, 3, -1, 0, 1, 2, 0, 0, 0, 4]), [3, 4], {offset: 0, size: 3})
    s.add(Float32Array.from([0, 1, 1, 2, -2, 100, 0, 0, 0, 1, 3, 2]), [3, 4], {offset: 3, size: 3})
    expect(s.samples).toBe(6)
    expect(s.range('minmax')).toEqual({min: -2, max: 100})
    const r = s.range('average')
    expect(r.min).toBeCloseTo(-3 / 6, 6)
    expect(r.max).toBeCloseTo((3 + 2 + 4 + 2 + 100 + 3) / 6, 6)
    expect(s.peak).toEqual({sample: 4, min: -2, max: 100})
    // A tensor whose first axis is not the batch's (a reshape of it) counts the batch as one range.
    const t = new TensorStats()
    t.add(Float32Array.from([1, 2, 3, 4, 5, 6]), [6, 1], {offset: 0, size: 2})
    expect(t.samples).toBe(1)
    expect(t.range('average')).toEqual({min: 0, max: 6})
  })

  it('percentile and entropy clip rare outliers that min/max keeps', () => {
    const s = new TensorStats()
    let seed = 3
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) * 2 - 1
    for (let b = 0; b < 4; b++) {
      const x = Float32Array.from({length: 50000}, rnd)
      if (b === 2) x[7] = 500
      s.add(x)
    }
    expect(s.range('minmax').max).toBe(500)
    expect(s.range('percentile', 99.99).max).toBeLessThan(2)
    // KL search runs over 128+ of 2048 histogram bins: it clips to at most 1/16 of the observed |x| range.
    expect(s.range('entropy').max).toBeLessThanOrEqual(500 / 16 + 1e-3)
    expect(s.range('entropy').max).toBeGreaterThan(1)
    expect(s.range('percentile', 99.99).min).toBeLessThan(-0.9)
  })
})

describe('pre-processing', () => {
  it('folds BatchNormalization and raises opset 9 to 13 without changing outputs', async () => {
    const m = await readModel(MODELS.ocrCls)
    const bn = [...allNodes(m)].filter((n) => n.node.opType === 'BatchNormalization').length
    const r = preprocessModel(m)
    expect(r.foldedBatchNorm).toBeGreaterThan(0)
    expect([...allNodes(m)].filter((n) => n.node.opType === 'BatchNormalization').length).toBe(bn - r.foldedBatchNorm)
    upgradeOpset(m, 13)
    const feeds = await feedsFor('ocrCls')
    const a = await runModel(MODELS.ocrCls, feeds)
    const b = await runModel(modelToBytes(m), feeds)
    const k = Object.keys(a)[0]!
    expect(cosine(a[k]!, b[k]!)).toBeGreaterThan(0.99999)
    const rec = await readModel(MODELS.ocrRec)
    upgradeOpset(rec, 13)
    const fr = await feedsFor('ocrRec')
    const ra = await runModel(MODELS.ocrRec, fr)
    const rb = await runModel(modelToBytes(rec), fr)
    const kr = Object.keys(ra)[0]!
    expect(cosine(ra[kr]!, rb[kr]!)).toBeGreaterThan(0.99999)
  })
})

describe('sessions on models with large weights', () => {
  it('go to onnxruntime as a file with external data (Constant nodes in If branches included), give the same outputs, and leave nothing behind', async () => {
    const model = await readModel(MODELS.sileroV5)
    const before = modelToBytes(model)
    const feeds = await feedsFor('sileroV5')
    const leftovers = () => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('kiln-session-')).length
    const had = leftovers()
    const fromBytes = await sessionFor(model, {threads: 1})
    // A threshold of 0 sends even this small model through the file path.
    const fromFile = await sessionFor(model, {threads: 1}, undefined, 0)
    try {
      const a = await fromBytes.run(feeds)
      const b = await fromFile.run(feeds)
      for (const k of Object.keys(a)) expect(Array.from(b[k]!.data as Float32Array)).toEqual(Array.from(a[k]!.data as Float32Array))
    } finally {
      await fromBytes.release()
      await fromFile.release()
    }
    expect(modelToBytes(model)).toEqual(before)
    expect(leftovers()).toBe(had)
  })
})
