#!/usr/bin/env tsx
// Quantization targets, each ratio against a baseline measured in the same run:
//  - static int8 accuracy and top-1 agreement: BlazeFace on the full LFW subset (200), the trained
//    Fashion-MNIST MLP and CNN on the full 10k test set, with int4 (RTN, HQQ, GPTQ) on their Gemm layers;
//  - fp16 size ratio and output cosine on a deterministic input per model (agreement on real inputs,
//    every mode: bench/real-modes.ts);
//  - int8 vs fp32 latency A/B at batch 1 and 32 (and what the never-slower choice ships);
//  - Silero (its network inside If branches) static int8 on real speech: agreement and latency;
//  - a generated ≥400 MB transformer-shaped model through dynamic, int4 (RTN) and int4 GPTQ (block
//    128, 32 calibration sequences of 16 tokens): time and peak RSS (each in its own process, so the
//    RSS is that run's alone).
//
//   npx tsx bench/quantize.ts            everything (several minutes on 2 cores)
//   npx tsx bench/quantize.ts --quick    fewer test images, no large model
//   npx tsx bench/quantize.ts --large    only the large generated model
import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describeComparison, quantizeModel} from '../src/compress/quant/index.js'
import type {CalibrationMethod} from '../src/compress/quant/options.js'
import type {QuantizeOptions} from '../src/compress/quant/index.js'
import {cosine} from '../src/compress/quant/math.js'
import {agreement, evaluate} from '../src/compress/quant/measure.js'
import {readBatches} from '../src/data/dataset.js'
import {writeNpz} from '../src/data/npz-write.js'
import {writeModel} from '../src/onnx/model.js'
import {benchmarkAB} from '../src/runtime/bench.js'
import {getProfile} from '../src/runtime/profiles.js'
import {MODELS, ensureTrainedModels} from '../test/helpers/fixtures.js'
import {writeLfwNpz} from '../test/compress/quant/lfw.js'
import {feedsFor, runModel, sileroAgreement, sileroStream, transformerModel} from '../test/compress/quant/models.js'
import type {ModelKey} from '../test/compress/quant/models.js'

// Child mode: quantize one file and report time and peak RSS.
if (process.argv[2] === '--child') {
  const [, , , mode, input, output, algorithm, calibration] = process.argv
  const t = performance.now()
  const r = await quantizeModel({
    input: input!, output: output!, mode: mode as 'dynamic', profile: getProfile('cpu-2t'), neverSlower: false,
    ...(algorithm ? {algorithm: algorithm as 'gptq', blockSize: 128, calibration: calibration ? {name: 'calib', path: calibration} : undefined} : {}),
  })
  const seconds = (performance.now() - t) / 1000
  const usage = process.resourceUsage()
  // CPU seconds alongside wall time: on a shared, loaded machine the wall clock mostly measures the neighbours.
  const cpuSeconds = (usage.userCPUTime + usage.systemCPUTime) / 1e6
  process.stdout.write(JSON.stringify({seconds, cpuSeconds, maxRssBytes: usage.maxRSS * 1024, sizeRatio: r.sizeRatio, quantizedNodes: r.quantizedNodes}))
  process.exit(0)
}

const quick = process.argv.includes('--quick')
const largeOnly = process.argv.includes('--large')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-quant-'))
const profile = getProfile('cpu-2t')
const out = (name: string) => path.join(dir, name)
const pct = (x?: number) => (x === undefined ? '-' : `${(x * 100).toFixed(2)}%`)

async function accuracyRow(label: string, model: string, opts: Omit<QuantizeOptions, 'input' | 'output' | 'profile'>, test: {name: string; path: string; limit?: number}) {
  const file = out(`${label.replace(/\W+/g, '_')}.onnx`)
  let r: Awaited<ReturnType<typeof quantizeModel>>
  try {
    r = await quantizeModel({input: model, output: file, profile, neverSlower: false, ...opts})
  } catch (error) {
    // A collapsed calibration is refused with its diagnosis: that is the result for this row.
    if ((error as {code?: string}).code !== 'E_QUANT_COLLAPSE') throw error
    console.log(`${label}: refused, ${(error as Error).message}`)
    return {label, refused: (error as Error).message}
  }
  const batchSize = model === MODELS.blazeface ? 1 : 256
  const batches = () => readBatches(test, {batchSize, inputs: undefined})
  const a = await evaluate(model, batches, profile)
  const b = await evaluate(file, batches, profile)
  const row = {label, samples: a.samples, fp32: a.accuracy, int8: b.accuracy, drop: (a.accuracy ?? 0) - (b.accuracy ?? 0), agreement: agreement(a.predictions, b.predictions), fallback: r.fallback.length, seconds: r.seconds, calibratedWith: r.calibration?.compared ? r.calibration.method : undefined}
  console.log(`${label}: fp32 ${pct(row.fp32)} → ${pct(row.int8)} (drop ${(row.drop * 100).toFixed(2)} points), agreement ${pct(row.agreement)}, ${row.fallback} fallback, quantized in ${row.seconds.toFixed(1)} s${row.calibratedWith ? ` (${describeComparison(r.calibration!.compared!, row.calibratedWith as CalibrationMethod)})` : ''}`)
  return row
}

const results: Record<string, unknown> = {}

if (!largeOnly) {
// 1. Accuracy: BlazeFace on LFW.
const lfwAll = out('lfw-all.npz')
const lfwCalib = out('lfw-calib.npz')
const lfwEval = out('lfw-eval.npz')
await writeLfwNpz(lfwAll, [...Array(200).keys()])
await writeLfwNpz(lfwCalib, [...Array(32)].map((_, i) => (i < 16 ? i * 6 + 2 : 100 + (i - 16) * 6 + 2)))
await writeLfwNpz(lfwEval, [...Array(40)].map((_, i) => (i < 20 ? i * 5 + 1 : 100 + (i - 20) * 5 + 1)))
const lfw = {name: 'lfw', path: lfwAll, inputs: {'input:0': 'input:0'}}
const calibLfw = {name: 'calib', path: lfwCalib}
results.blazeface = [
  await accuracyRow('BlazeFace static minmax', MODELS.blazeface, {mode: 'static', calibration: calibLfw, method: 'minmax'}, lfw),
  await accuracyRow('BlazeFace static percentile', MODELS.blazeface, {mode: 'static', calibration: calibLfw, method: 'percentile'}, lfw),
  await accuracyRow('BlazeFace static entropy', MODELS.blazeface, {mode: 'static', calibration: calibLfw, method: 'entropy'}, lfw),
  await accuracyRow('BlazeFace static average', MODELS.blazeface, {mode: 'static', calibration: calibLfw, method: 'average'}, lfw),
  await accuracyRow('BlazeFace static accuracy-aware (0.5 pt on 40 held-out samples)', MODELS.blazeface, {mode: 'static', calibration: calibLfw, method: 'percentile', eval: {name: 'eval', path: lfwEval}, maxAccuracyDrop: 0.005}, lfw),
]
// How much the result depends on which crops calibrate: four disjoint sets of 32 (16 faces, 16 not;
// set 2 is the crops above). Sets 1 and 4 hold a black crop (non-faces 137 and 152), whose activations reach 20-40x the others'.
const subsetRows = []
for (let s = 1; s <= 4; s++) {
  const file = out(`lfw-calib-${s}.npz`)
  await writeLfwNpz(file, [...Array(32)].map((_, i) => (i < 16 ? i * 6 + s : 100 + (i - 16) * 6 + s)))
  for (const method of [undefined, 'minmax', 'percentile', 'average'] as const) {
    subsetRows.push({set: s, method: method ?? 'default', ...(await accuracyRow(`BlazeFace static ${method ?? 'default (minmax or average, whichever follows fp32 closer on the calibration crops)'}, calibration set ${s}`, MODELS.blazeface, {mode: 'static', calibration: {name: 'calib', path: file}, method}, lfw))})
  }
}
results.blazefaceSubsets = subsetRows

// 2. Accuracy: trained Fashion-MNIST models on the full test set.
const trained = ensureTrainedModels()
const fashionTest = {name: 'test', path: trained.test, limit: quick ? 1000 : undefined}
const fashionCalib = {name: 'calib', path: trained.calib}
const fashionRows = [
  await accuracyRow('Fashion MLP static', trained.mlp, {mode: 'static', calibration: fashionCalib}, fashionTest),
  await accuracyRow('Fashion CNN static', trained.cnn, {mode: 'static', calibration: fashionCalib}, fashionTest),
  await accuracyRow('Fashion MLP dynamic', trained.mlp, {mode: 'dynamic'}, fashionTest),
]
// int4 on the Gemm layers (the MLP's first, K=784, is not a multiple of the block): RTN, HQQ and GPTQ.
for (const [name, model, exclude] of [['MLP', trained.mlp, ['fc1']], ['CNN', trained.cnn, []]] as const) {
  for (const algorithm of ['rtn', 'hqq', 'gptq'] as const) {
    const symmetric = algorithm !== 'hqq'
    fashionRows.push(await accuracyRow(`Fashion ${name} int4 ${algorithm} block 64`, model, {mode: 'int4', algorithm, symmetric, blockSize: 64, exclude: [...exclude], calibration: fashionCalib}, fashionTest))
  }
}
results.fashion = fashionRows

// 3. fp16: size and cosine on each model's deterministic input (real inputs: bench/real-modes.ts).
const fp16Rows = []
for (const key of Object.keys(MODELS) as ModelKey[]) {
  const file = out(`${key}.fp16.onnx`)
  const r = await quantizeModel({input: MODELS[key], output: file, mode: 'fp16', profile})
  const feeds = await feedsFor(key)
  const a = await runModel(MODELS[key], feeds)
  const b = await runModel(file, feeds)
  const k = Object.keys(a)[0]!
  fp16Rows.push({model: key, sizeRatio: r.sizeRatio, cosine: cosine(a[k]!, b[k]!)})
}
{
  const file = out('cnn.fp16.onnx')
  const r = await quantizeModel({input: trained.cnn, output: file, mode: 'fp16', profile})
  const ort = await import('onnxruntime-node')
  let first: {data: Float32Array; dims: number[]} | undefined
  for await (const b of readBatches({name: 'test', path: trained.test, limit: 256}, {batchSize: 256})) first ??= b.inputs.input as never
  const x = new ort.Tensor('float32', first!.data, first!.dims)
  const a = await runModel(trained.cnn, {input: x})
  const b = await runModel(file, {input: x})
  fp16Rows.push({model: 'fashion_cnn (256 test images)', sizeRatio: r.sizeRatio, cosine: cosine(a.logits!, b.logits!)})
}
for (const r of fp16Rows) console.log(`fp16 ${r.model}: size ${r.sizeRatio.toFixed(3)}×, cosine ${r.cosine.toFixed(6)}`)
results.fp16 = fp16Rows

// 4. Latency A/B, int8 vs fp32, batch 1 and 32, plus what never-slower ships.
const latency = []
const abProfile = {...profile, batch: [1, 32]}
// The PP-OCR models get synthetic calibration inputs (smooth patterns in [-0.8, 0.8]): these rows are
// about speed; their accuracy is not measured here.
const ocrCalib = async (name: string, shape: number[]) => {
  const per = shape.reduce((a, b) => a * b, 1)
  const data = new Float32Array(8 * per).map((_, i) => Math.sin(i * 0.013 + (i % 977) * 0.07) * 0.8)
  await writeNpz(out(`${name}.npz`), {x: {dtype: '<f4', shape: [8, ...shape], data}})
  return {name, path: out(`${name}.npz`)}
}
const detCalib = await ocrCalib('det-calib', [3, 320, 320])
const recCalib = await ocrCalib('rec-calib', [3, 48, 320])
for (const [label, model, mode, calibration] of [
  ['Fashion CNN static', trained.cnn, 'static', fashionCalib],
  ['Fashion MLP static', trained.mlp, 'static', fashionCalib],
  ['Fashion MLP dynamic', trained.mlp, 'dynamic', undefined],
  ['PP-OCR rec dynamic', MODELS.ocrRec, 'dynamic', undefined],
  ['PP-OCR rec static', MODELS.ocrRec, 'static', recCalib],
  ['PP-OCR det static (320×320)', MODELS.ocrDet, 'static', detCalib],
] as const) {
  const raw = out(`${label.replace(/\W+/g, '_')}.raw.onnx`)
  await quantizeModel({input: model, output: raw, mode, calibration, profile, neverSlower: false})
  const batches = model === MODELS.ocrRec ? [1, 8] : model === MODELS.ocrDet ? [1] : [1, 32]
  const dims = model === MODELS.ocrDet ? {'p2o.DynamicDimension.1': 320, 'p2o.DynamicDimension.2': 320} : {'p2o.DynamicDimension.1': 320}
  const ab = await benchmarkAB({baseline: model, candidate: raw}, {...abProfile, batch: batches}, {rounds: quick ? 6 : 12, iterations: quick ? 60 : 200, compressedSize: false, dims})
  const shipped = await quantizeModel({input: model, output: out(`${label.replace(/\W+/g, '_')}.shipped.onnx`), mode, calibration, profile: {...profile, batch: batches}})
  const row = {label, ab: ab.comparisons.map((c) => ({batch: c.batch, speedup: c.speedup, low: c.low, high: c.high, verdict: c.verdict})), shipped: shipped.decision, chosen: shipped.chosen, message: shipped.message}
  console.log(`${label}: int8 (all ops) vs fp32 ${row.ab.map((c) => `batch ${c.batch}: ${c.speedup.toFixed(2)}× [${c.low.toFixed(2)}–${c.high.toFixed(2)}]`).join(', ')}; never-slower ships: ${shipped.message}`)
  latency.push(row)
}
{
  const r = await quantizeModel({input: MODELS.blazeface, output: out('bf.shipped.onnx'), mode: 'static', calibration: calibLfw, profile})
  console.log(`BlazeFace static, never-slower: ${r.message}; ${r.candidates.map((c) => `${c.name}: ${c.reason}`).join('; ')}`)
  latency.push({label: 'BlazeFace static', shipped: r.decision, candidates: r.candidates.map((c) => ({name: c.name, latency: c.latency, reason: c.reason}))})
}
// Silero: the whole network inside If branches, weights in Constant nodes. Calibrated on two streamed
// recordings (each chunk with the state the float model carried into it), scored on three others.
for (const key of ['sileroV5', 'sileroLegacy'] as const) {
  const cal = await sileroStream(key, ['cards-001.wav', 'cards-002.wav'], 1000, out(`${key}-cal.npz`))
  const held = await sileroStream(key, ['cards-003.wav', 'cards-004.wav', 'cards-005.wav'], 1000, out(`${key}-held.npz`))
  for (const method of [undefined, 'minmax', 'entropy'] as const) {
    const raw = out(`${key}.${method ?? 'default'}.onnx`)
    const r = await quantizeModel({input: MODELS[key], output: raw, mode: 'static', method, calibration: {name: 'speech', path: cal.npz}, profile, neverSlower: false})
    const {agreement: agree, meanAbsError} = await sileroAgreement(raw, held)
    const feeds = held.feeds[0]!
    const ab = await benchmarkAB({baseline: MODELS[key], candidate: raw}, {...profile, batch: [1]}, {rounds: quick ? 6 : 12, iterations: quick ? 100 : 400, compressedSize: false, feeds: () => feeds})
    const c = ab.comparisons[0]!
    const row = {label: `${key} static ${method ?? `default (kept ${r.calibration!.method})`}`, chunks: held.feeds.length, agreement: agree, meanAbsError, quantizedNodes: r.quantizedNodes, speedup: c.speedup, low: c.low, high: c.high}
    console.log(`${row.label}: ${JSON.stringify(r.quantizedNodes)} in ${r.seconds.toFixed(1)} s; speech/no-speech agreement with fp32 ${pct(row.agreement)} on ${row.chunks} held-out chunks, mean |Δp| ${row.meanAbsError.toFixed(4)}; batch 1 ${c.speedup.toFixed(2)}× [${c.low.toFixed(2)}–${c.high.toFixed(2)}]`)
    latency.push(row)
  }
}
results.latency = latency
}

// 5. A generated transformer-shaped model of at least 400 MB: dynamic and int4, each in its own process.
if (!quick) {
  const big = out('transformer.onnx')
  await writeModel(transformerModel({d: 1024, layers: 13}), big, {externalData: 'never'})
  const bytes = fs.statSync(big).size
  const rows = []
  // Hidden states for GPTQ: a few dominant directions plus noise, as a transformer's are.
  const calib = out('transformer-calib.npz')
  const d = 1024
  const x = new Float32Array(32 * 16 * d)
  for (let r = 0; r < 32 * 16; r++) for (let i = 0; i < d; i++) x[r * d + i] = Math.sin(r * 0.7 + i * 0.013) + 0.3 * Math.cos(i * (r % 5)) + 0.05 * Math.sin(r * i)
  await writeNpz(calib, {x: {dtype: '<f4', shape: [32, 16, d], data: x}})
  for (const [mode, algorithm] of [['dynamic'], ['int4'], ['int4', 'gptq']] as const) {
    const label = algorithm ? `${mode} ${algorithm}` : mode
    const o = out(`transformer.${mode}${algorithm ? `.${algorithm}` : ''}.onnx`)
    const res = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', process.argv[1]!, '--child', mode, big, o, ...(algorithm ? [algorithm, calib] : [])], {encoding: 'utf8', maxBuffer: 1 << 20}))
    rows.push({mode: label, modelMB: bytes / 2 ** 20, ...res, rssOverModel: res.maxRssBytes / bytes})
    console.log(`${(bytes / 2 ** 20).toFixed(0)} MB transformer ${label}: ${res.seconds.toFixed(1)} s wall (${res.cpuSeconds.toFixed(1)} s CPU, whole process), peak RSS ${(res.maxRssBytes / 2 ** 20).toFixed(0)} MB (${(res.maxRssBytes / bytes).toFixed(2)}× the model), size ${res.sizeRatio.toFixed(3)}×`)
  }
  results.large = rows
}

fs.writeFileSync(path.join(dir, 'results.json'), JSON.stringify(results, null, 1))
console.log(`results: ${path.join(dir, 'results.json')}`)
