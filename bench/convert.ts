/**
 * TF.js → ONNX conversion benchmark: conversion time per real model against TF.js's own load time
 * (same run), the converted models' error against TF.js on real photos, conversion of a ~20 MB
 * layers model, and BlazeFace LFW accuracy (all 200 crops) for the vendor ONNX, the converted model
 * and the TF.js source.   Run: npx tsx bench/convert.ts
 */
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {convertTfjs} from '../src/convert/tfjs/index.js'
import type {VerifyReport} from '../src/convert/tfjs/index.js'
import {loadTfjsModel} from '../src/convert/tfjs/manifest.js'
import {createSession, loadOrt} from '../src/runtime/ort.js'
import {loadTfjs} from '../src/runtime/tfjs.js'
import {MODELS, ensureFixtures} from '../test/helpers/fixtures.js'
import {HUMAN, IMAGES, NSFW, faceLogit, isFace, lfwInput, randomizeWeights, saveLayersModel, tempDir} from '../test/convert/helpers.js'

const REAL: [string, string][] = [
  ...['blazeface-front', 'emotion', 'facemesh-detection-short', 'age', 'liveness', 'antispoof'].map((n): [string, string] => [n, HUMAN(n)]),
  ['nsfwjs-mobilenet_v2', NSFW],
]

async function best<T>(runs: number, fn: () => Promise<T>): Promise<{seconds: number; value: T}> {
  let seconds = Number.POSITIVE_INFINITY
  let value!: T
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    value = await fn()
    seconds = Math.min(seconds, (performance.now() - t) / 1000)
  }
  return {seconds, value}
}

/** TF.js's own cost to load the same model from memory and run it once: the baseline. */
async function tfjsLoadSeconds(file: string): Promise<number> {
  const {tf} = await loadTfjs()
  const m = await loadTfjsModel(file)
  const handler = () => tf.io.fromMemory({modelTopology: m.json.modelTopology, weightSpecs: m.weightSpecs as never, weightData: m.weightData, format: m.json.format, signature: m.json.signature} as never)
  return (
    await best(3, async () => {
      const model = m.kind === 'graph' ? await tf.loadGraphModel(handler()) : await tf.loadLayersModel(handler())
      const inputs = 'inputs' in model ? model.inputs : []
      const feed = inputs.map((i) => tf.zeros(i.shape!.map((d) => (d === null || d < 0 ? 1 : d)) as number[], i.dtype as 'float32'))
      const out = 'executeAsync' in model ? await model.executeAsync(feed.length === 1 ? feed[0]! : feed) : model.predict(feed.length === 1 ? feed[0]! : feed)
      tf.dispose([...feed, ...(Array.isArray(out) ? out : [out])])
      model.dispose()
    })
  ).seconds
}

async function bigModel(dir: string): Promise<string> {
  const {tf} = await loadTfjs()
  const L = tf.layers
  const layers: any[] = [L.conv2d({inputShape: [32, 32, 3], filters: 256, kernelSize: 3, padding: 'same', activation: 'relu'})]
  for (let i = 0; i < 8; i++) layers.push(L.conv2d({filters: 256, kernelSize: 3, padding: 'same', activation: 'relu'}), L.batchNormalization())
  layers.push(L.globalAveragePooling2d({}), L.dense({units: 10}))
  const model = tf.sequential({layers})
  randomizeWeights(tf, model, 1)
  return saveLayersModel(tf, model, path.join(dir, 'big'))
}

async function main(): Promise<void> {
  ensureFixtures()
  const {backend} = await loadTfjs()
  const dir = await tempDir('kiln-bench-convert-')
  console.log(`TF.js backend: ${backend}\n`)
  console.log('model                      weights   convert s  tfjs load+run s  ratio  transposes  max rel error vs TF.js (4 photos)')
  const rows: [string, string][] = [...REAL, ['synthetic-20MB (layers)', await bigModel(dir)]]
  for (const [name, file] of rows) {
    const m = await loadTfjsModel(file)
    const mb = m.weightData.byteLength / 2 ** 20
    const out = path.join(dir, `${name}.onnx`)
    const conv = await best(3, () => convertTfjs(file, out, {verify: false}))
    const base = await tfjsLoadSeconds(file)
    const verified = await convertTfjs(file, out, {verify: {images: IMAGES, samples: 4}})
    const v = verified.metrics.verify as VerifyReport
    const err = Math.max(...v.outputs.map((o) => o.relError))
    console.log(
      `${name.padEnd(26)} ${mb.toFixed(1).padStart(5)} MB ${conv.seconds.toFixed(2).padStart(9)} ${base.toFixed(2).padStart(16)} ${(conv.seconds / base).toFixed(2).padStart(6)} ${String(conv.value.metrics.transposes).padStart(11)}  ${err.toExponential(2)} (${v.passed ? 'pass' : 'FAIL'})`,
    )
  }

  // LFW: 100 faces then 100 non-faces; face when the best anchor logit is above 0.
  const ort = await loadOrt()
  const converted = path.join(dir, 'blazeface-front.onnx')
  const vendor = await createSession(MODELS.blazeface)
  const ours = await createSession(converted)
  const {tf} = await loadTfjs()
  const src = await loadTfjsModel(HUMAN('blazeface-front'))
  const g = await tf.loadGraphModel(tf.io.fromMemory({modelTopology: src.json.modelTopology, weightSpecs: src.weightSpecs as never, weightData: src.weightData, signature: src.json.signature} as never))
  const correct = {vendor: 0, converted: 0, tfjs: 0}
  let maxDiff = 0
  const latency = {vendor: 0, converted: 0}
  for (let i = 0; i < 200; i++) {
    const x = lfwInput(i)
    const t0 = performance.now()
    const a = faceLogit(await vendor.run({[vendor.inputNames[0]!]: new ort.Tensor('float32', x, [1, 128, 128, 3])}))
    const t1 = performance.now()
    const b = faceLogit(await ours.run({[ours.inputNames[0]!]: new ort.Tensor('float32', x, [1, 128, 128, 3])}))
    const t2 = performance.now()
    latency.vendor += t1 - t0
    latency.converted += t2 - t1
    const outs = g.execute(tf.tensor(x, [1, 128, 128, 3])) as TfTensor[]
    const c = Math.max(...(await Promise.all(outs.filter((t) => t.shape.at(-1) === 1).map(async (t) => Math.max(...((await t.data()) as Float32Array))))))
    tf.dispose(outs)
    maxDiff = Math.max(maxDiff, Math.abs(a - b))
    if (a > 0 === isFace(i)) correct.vendor++
    if (b > 0 === isFace(i)) correct.converted++
    if (c > 0 === isFace(i)) correct.tfjs++
  }
  console.log(`\nBlazeFace on LFW (200 crops): accuracy vendor ONNX ${(correct.vendor / 200).toFixed(3)}, converted ${(correct.converted / 200).toFixed(3)}, TF.js source ${(correct.tfjs / 200).toFixed(3)}; max |logit diff| converted vs vendor ${maxDiff.toExponential(2)}`)
  console.log(`onnxruntime latency converted/vendor: ${(latency.converted / latency.vendor).toFixed(2)} (${(latency.converted / 200).toFixed(2)} ms vs ${(latency.vendor / 200).toFixed(2)} ms per image)`)
  await fsp.rm(dir, {recursive: true, force: true})
}

type TfTensor = {shape: number[]; data: () => Promise<unknown>}

await main()
