import * as fs from 'node:fs'
import sharp from 'sharp'
import {parseNpy} from '../../src/data/npy.js'
import {fixture} from '../helpers/fixtures.js'
import {readModel} from '../../src/onnx/model.js'
import {valueInfoShape} from '../../src/onnx/build.js'
import {DataType} from '../../src/onnx/proto.js'
import {createSession, loadOrt} from '../../src/runtime/ort.js'
import {seededRandom} from '../../src/data/random.js'
import {cosine} from '../../src/compress/quant/math.js'

/** Deterministic pseudo-random numbers, so every run feeds the same samples. */
export const rng = seededRandom

/** Sizes for symbolic dims of the real models (batch 1, a short audio window, a small image). */
const SYMBOLIC: Record<string, number> = {batch: 1, sequence: 512}

/**
 * Inputs for a model from its declared input shapes: uniform [0, 1) floats, the 16 kHz sample rate
 * for Silero's `sr`, zero recurrent state. Symbolic dims take a plausible small size.
 */
export async function sampleFeeds(file: string, seed: number): Promise<Record<string, unknown>> {
  const ort = await loadOrt()
  const model = await readModel(file)
  const init = new Set(model.graph!.initializer.map((t) => t.name))
  const random = rng(seed)
  const feeds: Record<string, unknown> = {}
  for (const input of model.graph!.input) {
    if (init.has(input.name)) continue
    const info = valueInfoShape(input)!
    const state = /state|^h$|^c$/.test(input.name)
    const shape = (info.shape ?? []).map((d, i) =>
      typeof d === 'number' && d > 0 ? d : (SYMBOLIC[String(d)] ?? (i === 0 || state ? 1 : i === 1 && info.shape!.length === 2 ? 512 : 64)),
    )
    const n = shape.reduce((a, b) => a * b, 1)
    if (info.elemType === DataType.INT64) feeds[input.name] = new ort.Tensor('int64', BigInt64Array.from({length: n}, () => 16000n), shape)
    else if (state) feeds[input.name] = new ort.Tensor('float32', new Float32Array(n), shape)
    else feeds[input.name] = new ort.Tensor('float32', Float32Array.from({length: n}, () => random()), shape)
  }
  return feeds
}

/** Run a model file on feeds; every output as float32. */
export async function runModel(file: string, feeds: Record<string, unknown>): Promise<Record<string, Float32Array>> {
  const session = await createSession(file, {threads: 2})
  try {
    const out = await session.run(feeds as never)
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, Float32Array.from(t.data as ArrayLike<number>, Number)]))
  } finally {
    await session.release()
  }
}

/** Cosine similarity of two outputs (1 = same direction). */
export {cosine}

/**
 * Real inputs for each real model (a few samples): LFW faces for BlazeFace, a speech recording for
 * Silero, a scanned page for the PaddleOCR models. Random noise says little about a detector.
 */
export async function realFeeds(key: string, file: string): Promise<Record<string, unknown>[]> {
  const ort = await loadOrt()
  const feeds = await sampleFeeds(file, 1)
  if (key === 'blazeface') {
    const lfw = parseNpy(fs.readFileSync(fixture('data/lfw_subset.npy')))
    return [0, 1].map((s) => {
      const img = new Float32Array(128 * 128 * 3)
      for (let y = 0; y < 128; y++) {
        for (let x = 0; x < 128; x++) {
          const v = Number(lfw.data[s * 625 + Math.floor((y * 25) / 128) * 25 + Math.floor((x * 25) / 128)])
          for (let c = 0; c < 3; c++) img[(y * 128 + x) * 3 + c] = v * 2 - 1
        }
      }
      return {...feeds, [Object.keys(feeds)[0]!]: new ort.Tensor('float32', img, [1, 128, 128, 3])}
    })
  }
  if (key.startsWith('silero')) {
    const wav = fs.readFileSync(fixture('data/speech/cards-001.wav'))
    const pcm = new Int16Array(wav.buffer.slice(wav.byteOffset + 44, wav.byteOffset + wav.length - (wav.length % 2)))
    return [8000, 16000].map((at) => ({...feeds, input: new ort.Tensor('float32', Float32Array.from(pcm.subarray(at, at + 512), (v) => v / 32768), [1, 512])}))
  }
  const [h, w] = key === 'ocrDet' ? [320, 320] : key === 'ocrRec' ? [48, 320] : [48, 192]
  const out: Record<string, unknown>[] = []
  for (const name of ['page.png', 'text.png']) {
    const {data} = await sharp(fixture(`data/images/${name}`)).removeAlpha().resize(w, h, {fit: 'fill'}).raw().toBuffer({resolveWithObject: true})
    const x = new Float32Array(3 * h * w)
    for (let i = 0; i < h * w; i++) for (let c = 0; c < 3; c++) x[c * h * w + i] = (data[i * 3 + c]! / 255 - 0.5) / 0.5
    out.push({x: new ort.Tensor('float32', x, [1, 3, h, w])})
  }
  return out
}

/**
 * How closely `b` follows `a`: top-1 agreement over rows of the last axis for class scores
 * (probabilities summing to one), cosine similarity otherwise.
 */
export function agreement(a: Float32Array, b: Float32Array, classes: number): number {
  if (classes <= 1) return cosine(a, b)
  const rows = a.length / classes
  let same = 0
  for (let r = 0; r < rows; r++) {
    let ia = 0
    let ib = 0
    for (let c = 1; c < classes; c++) {
      if (a[r * classes + c]! > a[r * classes + ia]!) ia = c
      if (b[r * classes + c]! > b[r * classes + ib]!) ib = c
    }
    if (ia === ib) same++
  }
  return same / rows
}
