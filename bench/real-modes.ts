#!/usr/bin/env tsx
// Every real ONNX model in every quantization mode: quantized (never-slower off, so the quantized
// graph is what gets measured), loaded, run on real inputs, and compared with the fp32 model.
//  - BlazeFace: face / no-face decisions on the 200 LFW crops (accuracy too: the crops are labelled);
//    calibrated on 32 of them.
//  - Silero v5 and legacy: speech / no-speech decisions on 205 chunks of three recordings, each with
//    the float model's state; calibrated on two other recordings.
//  - PP-OCR detection: text-probability maps of crops of a scanned page and a photo of text (cosine,
//    and pixels on the same side of DB's 0.3 threshold).
//  - PP-OCR recognition: the character chosen at each time step for text-line strips of the page.
//  - PP-OCR direction: 0° / 180° for the same strips, upright and turned over.
// The OCR models are calibrated on other crops and strips than they are scored on.
//
//   npx tsx bench/real-modes.ts
//   MODES=static METHOD=entropy npx tsx bench/real-modes.ts    some modes; static with a named method
//   KEEP=1 npx tsx bench/real-modes.ts                         keep the models and data (prints where)
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sharp from 'sharp'
import {quantizeModel} from '../src/compress/quant/index.js'
import type {QuantizeOptions} from '../src/compress/quant/index.js'
import {cosine} from '../src/compress/quant/math.js'
import {agreement, evaluate} from '../src/compress/quant/measure.js'
import {readBatches} from '../src/data/dataset.js'
import {writeNpz} from '../src/data/npz-write.js'
import {loadOrt} from '../src/runtime/ort.js'
import {getProfile} from '../src/runtime/profiles.js'
import {MODELS, fixture} from '../test/helpers/fixtures.js'
import {writeLfwNpz} from '../test/compress/quant/lfw.js'
import {sileroAgreement, sileroStream} from '../test/compress/quant/models.js'
import {agreement as rowsAgreement} from '../test/compress/prune-helpers.js'

const ort = await loadOrt()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-real-'))
const out = (name: string) => path.join(dir, name)
const profile = getProfile('cpu-2t')
const MODES = (process.env.MODES?.split(',') ?? ['dynamic', 'static', 'fp16', 'int4']) as ('dynamic' | 'static' | 'fp16' | 'int4')[]
const pct = (x: number) => `${(x * 100).toFixed(2)}%`

/** A region of a greyscale fixture image, resized to h×w, as a 3×h×w tensor normalised to [-1, 1] (PaddleOCR's). */
async function region(name: string, box: {left: number; top: number; width: number; height: number}, h: number, w: number, turn = false): Promise<Float32Array> {
  let img = sharp(fixture(`data/images/${name}`)).extract(box).resize(w, h, {fit: 'fill'})
  if (turn) img = img.rotate(180)
  const {data, info} = await img.raw().toBuffer({resolveWithObject: true})
  const x = new Float32Array(3 * h * w)
  for (let i = 0; i < h * w; i++) for (let c = 0; c < 3; c++) x[c * h * w + i] = (data[i * info.channels + Math.min(c, info.channels - 1)]! / 255 - 0.5) / 0.5
  return x
}

async function npzOf(name: string, samples: Float32Array[], dims: number[]): Promise<string> {
  const data = new Float32Array(samples.length * samples[0]!.length)
  samples.forEach((s, i) => data.set(s, i * s.length))
  await writeNpz(out(name), {x: {dtype: '<f4', shape: [samples.length, ...dims], data}})
  return out(name)
}

/** Both models' first output on each sample, concatenated over the samples (fp32's, then the test model's). */
async function outputsOn(fp32: string, test: string, samples: Float32Array[], dims: number[]): Promise<[Float32Array, Float32Array]> {
  const opts = {logSeverityLevel: 3 as const, intraOpNumThreads: 2}
  const [a, b] = await Promise.all([ort.InferenceSession.create(fp32, opts), ort.InferenceSession.create(test, opts)])
  const ra: Float32Array[] = []
  const rb: Float32Array[] = []
  for (const s of samples) {
    const x = new ort.Tensor('float32', s, [1, ...dims])
    ra.push((await a.run({x}))[a.outputNames[0]!]!.data as Float32Array)
    rb.push((await b.run({x}))[b.outputNames[0]!]!.data as Float32Array)
  }
  await Promise.all([a.release(), b.release()])
  const cat = (xs: Float32Array[]) => {
    const out = new Float32Array(xs.reduce((n, v) => n + v.length, 0))
    let at = 0
    for (const v of xs) out.set(v, (at += v.length) - v.length)
    return out
  }
  return [cat(ra), cat(rb)]
}

interface Subject {
  key: keyof typeof MODELS
  calibration: QuantizeOptions['calibration']
  /** Agreement figures of a quantized model against fp32, in words. */
  measure: (file: string) => Promise<string>
}

// BlazeFace on LFW.
const lfwAll = out('lfw.npz')
await writeLfwNpz(lfwAll, [...Array(200).keys()])
const lfwCalib = out('lfw-calib.npz')
await writeLfwNpz(lfwCalib, [...Array(32)].map((_, i) => (i < 16 ? i * 6 + 2 : 100 + (i - 16) * 6 + 2)))
const lfwBatches = () => readBatches({name: 'lfw', path: lfwAll, inputs: {'input:0': 'input:0'}}, {batchSize: 1})
const lfwFp32 = await evaluate(MODELS.blazeface, lfwBatches, profile)

// OCR: detection crops (page: 128×128 windows; photo of text: its 172×172 squares), both at 256×256.
const pageBox = (left: number, top: number) => ({left, top, width: 128, height: 128})
const textBox = (left: number) => ({left, top: 0, width: 172, height: 172})
const detCalib = await Promise.all([pageBox(0, 0), pageBox(128, 0), pageBox(256, 0)].map((b) => region('page.png', b, 256, 256)).concat([region('text.png', textBox(0), 256, 256)]))
const detEval = await Promise.all([pageBox(0, 63), pageBox(128, 63), pageBox(256, 63)].map((b) => region('page.png', b, 256, 256)).concat([textBox(138), textBox(276)].map((b) => region('text.png', b, 256, 256))))
// Recognition and direction: strips 128 wide, 24 high, across the page; alternate rows calibrate.
const strips = [] as {box: {left: number; top: number; width: number; height: number}; row: number}[]
for (let top = 0, row = 0; top + 24 <= 191; top += 12, row++) for (const left of [0, 128, 256]) strips.push({box: {left, top, width: 128, height: 24}, row})
const recOf = (turn: boolean) => (s: (typeof strips)[number]) => region('page.png', s.box, 48, 256, turn)
const clsOf = (turn: boolean) => (s: (typeof strips)[number]) => region('page.png', s.box, 48, 192, turn)
const calibStrips = strips.filter((s) => s.row % 2 === 0)
const evalStrips = strips.filter((s) => s.row % 2 === 1)
const recCalib = await Promise.all(calibStrips.map(recOf(false)))
const recEval = await Promise.all(evalStrips.map(recOf(false)))
const clsCalib = await Promise.all([...calibStrips.map(clsOf(false)), ...calibStrips.map(clsOf(true))])
const clsEval = await Promise.all([...evalStrips.map(clsOf(false)), ...evalStrips.map(clsOf(true))])

const subjects: Subject[] = [
  {
    key: 'blazeface',
    calibration: {name: 'lfw', path: lfwCalib},
    measure: async (file) => {
      const q = await evaluate(file, lfwBatches, profile)
      return `LFW decisions ${pct(agreement(lfwFp32.predictions, q.predictions))} the same on 200 crops, accuracy ${pct(lfwFp32.accuracy!)} → ${pct(q.accuracy!)}`
    },
  },
  {
    key: 'ocrDet',
    calibration: {name: 'det', path: await npzOf('det.npz', detCalib, [3, 256, 256])},
    measure: async (file) => {
      // Over all crops at once: a crop with no text has an all-zero map, whose own cosine means nothing.
      const [a, b] = await outputsOn(MODELS.ocrDet, file, detEval, [3, 256, 256])
      const side = a.filter((v, i) => v > 0.3 === b[i]! > 0.3).length / a.length
      return `text map cosine ${cosine(a, b).toFixed(5)}, ${pct(side)} of pixels on the same side of 0.3, on ${detEval.length} crops`
    },
  },
  {
    key: 'ocrRec',
    calibration: {name: 'rec', path: await npzOf('rec.npz', recCalib, [3, 48, 256])},
    measure: async (file) => `same character at ${pct(rowsAgreement(...(await outputsOn(MODELS.ocrRec, file, recEval, [3, 48, 256])), 6625))} of time steps on ${recEval.length} text-line strips`,
  },
  {
    key: 'ocrCls',
    calibration: {name: 'cls', path: await npzOf('cls.npz', clsCalib, [3, 48, 192])},
    measure: async (file) => `same direction on ${pct(rowsAgreement(...(await outputsOn(MODELS.ocrCls, file, clsEval, [3, 48, 192])), 2))} of ${clsEval.length} strips (half turned over)`,
  },
]
for (const key of ['sileroV5', 'sileroLegacy'] as const) {
  const cal = await sileroStream(key, ['cards-001.wav', 'cards-002.wav'], 1000, out(`${key}-cal.npz`))
  const held = await sileroStream(key, ['cards-003.wav', 'cards-004.wav', 'cards-005.wav'], 1000, out(`${key}-held.npz`))
  subjects.push({
    key,
    calibration: {name: 'speech', path: cal.npz},
    measure: async (file) => {
      const r = await sileroAgreement(file, held)
      return `speech / no-speech ${pct(r.agreement)} the same on ${held.feeds.length} chunks, mean |Δp| ${r.meanAbsError.toFixed(4)}`
    },
  })
}

console.log(`every real model in every mode, against fp32 (never-slower off; ${profile.name})\n`)
for (const s of subjects) {
  for (const mode of MODES) {
    const file = out(`${s.key}.${mode}.onnx`)
    const label = `${s.key.padEnd(12)} ${mode.padEnd(7)}`
    try {
      const r = await quantizeModel({input: MODELS[s.key], output: file, mode, profile, neverSlower: false, calibration: mode === 'static' || mode === 'fp16' ? s.calibration : undefined, ...(mode === 'static' && process.env.METHOD ? {method: process.env.METHOD as 'minmax'} : {})})
      const nodes = Object.entries(r.quantizedNodes).map(([op, n]) => `${n} ${op}`).join(', ')
      const how = r.calibration?.compared ? `, ${r.calibration.method} ranges` : ''
      console.log(`${label} ${(r.sizeRatio).toFixed(3)}× size, ${nodes || 'no nodes'} quantized${how} in ${r.seconds.toFixed(1)} s: ${await s.measure(file)}`)
    } catch (error) {
      const e = error as {code?: string; message: string}
      console.log(`${label} refused (${e.code}): ${e.message.split('\n')[0]}`)
    }
  }
}
if (!process.env.KEEP) fs.rmSync(dir, {recursive: true, force: true})
else console.log(dir)
