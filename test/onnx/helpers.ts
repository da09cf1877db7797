import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sharp from 'sharp'
import {loadOrt} from '../../src/runtime/ort.js'
import {MODELS, fixture} from '../helpers/fixtures.js'

export type ModelKey = keyof typeof MODELS
export type Feed = {type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[]}
export type Feeds = Record<string, Feed>

export function tmpDir(prefix = 'kiln-onnx-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

/** RGB pixels of a real photo, resized (fill) to h×w, as float32 HWC in [0,1]. */
async function photo(name: string, h: number, w: number): Promise<Float32Array> {
  const {data} = await sharp(fixture(`data/images/${name}`)).removeAlpha().resize(w, h, {fit: 'fill'}).raw().toBuffer({resolveWithObject: true})
  return Float32Array.from(data, (v) => v / 255)
}

function hwcToChw(hwc: Float32Array, h: number, w: number, norm: (v: number) => number): Float32Array {
  const out = new Float32Array(3 * h * w)
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) out[c * h * w + y * w + x] = norm(hwc[(y * w + x) * 3 + c]!)
  return out
}

/** 512 samples (32 ms) of real 16 kHz speech at a fraction of a recording, as float32 in [-1,1]. */
function speech(at: number, samples = 512): Float32Array {
  const wav = fs.readFileSync(fixture('data/speech/cards-001.wav'))
  const dataAt = wav.indexOf('data') + 8
  const pcm = new Int16Array(wav.buffer.slice(wav.byteOffset + dataAt, wav.byteOffset + wav.length - ((wav.length - dataAt) % 2)))
  const offset = Math.floor((pcm.length - samples) * at)
  return Float32Array.from(pcm.subarray(offset, offset + samples), (v) => v / 32768)
}

const f32 = (data: Float32Array, dims: number[]): Feed => ({type: 'float32', data, dims})

/**
 * Realistic inputs for each real model: photos for the vision models (OCR at two input sizes, as its
 * H/W are dynamic), real speech plus state and sample rate for Silero, at 16 kHz and at 8 kHz (256
 * samples): the sample rate selects the If branch, so both branches run.
 */
export async function realFeeds(key: ModelKey): Promise<Feeds[]> {
  const rate = (hz: number): Feed => ({type: 'int64', data: BigInt64Array.of(BigInt(hz)), dims: []})
  const chunks = [
    {samples: speech(0.3), sr: rate(16000)},
    {samples: speech(0.6), sr: rate(16000)},
    {samples: speech(0.5, 256), sr: rate(8000)},
  ]
  switch (key) {
    case 'blazeface':
      return [{'input:0': f32(Float32Array.from(await photo('astronaut.png', 128, 128), (v) => v * 2 - 1), [1, 128, 128, 3])}]
    case 'sileroV5':
      return chunks.map((c) => ({input: f32(c.samples, [1, c.samples.length]), state: f32(new Float32Array(2 * 128), [2, 1, 128]), sr: c.sr}))
    case 'sileroLegacy':
      return chunks.map((c) => ({input: f32(c.samples, [1, c.samples.length]), sr: c.sr, h: f32(new Float32Array(2 * 64), [2, 1, 64]), c: f32(new Float32Array(2 * 64), [2, 1, 64])}))
    case 'ocrDet': {
      const sizes = [
        [64, 96],
        [96, 128],
      ]
      return Promise.all(sizes.map(async ([h, w]) => ({x: f32(hwcToChw(await photo('page.png', h!, w!), h!, w!, (v) => (v - 0.5) / 0.5), [1, 3, h!, w!])})))
    }
    case 'ocrRec':
      return [{x: f32(hwcToChw(await photo('text.png', 48, 160), 48, 160, (v) => (v - 0.5) / 0.5), [1, 3, 48, 160])}]
    case 'ocrCls':
      return [{x: f32(hwcToChw(await photo('text.png', 48, 192), 48, 192, (v) => (v - 0.5) / 0.5), [1, 3, 48, 192])}]
  }
}

/** Run a model file once per feed set in one single-threaded session (deterministic kernels). */
export async function runModel(file: string | Uint8Array, feedSets: Feeds[]): Promise<Record<string, {dims: readonly number[]; data: Float32Array}>[]> {
  const ort = await loadOrt()
  const options = {logSeverityLevel: 3, intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all'} as const
  const session = typeof file === 'string' ? await ort.InferenceSession.create(file, options) : await ort.InferenceSession.create(file, options)
  try {
    const results = []
    for (const feeds of feedSets) {
      const input = Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new ort.Tensor(f.type, f.data, f.dims)]))
      const out = await session.run(input)
      // Integer outputs (TopK indices...) are compared as float32: exact for the small values here.
      results.push(Object.fromEntries(Object.entries(out).map(([k, t]) => [k, {dims: t.dims, data: Float32Array.from(t.data as ArrayLike<number>, Number)}])))
    }
    return results
  } finally {
    await session.release()
  }
}

/** Largest |a-b| over all outputs, relative to the output's own scale. */
export function maxRelativeDiff(a: Awaited<ReturnType<typeof runModel>>, b: Awaited<ReturnType<typeof runModel>>): number {
  let worst = 0
  a.forEach((outs, i) => {
    for (const [name, x] of Object.entries(outs)) {
      const y = b[i]![name]!
      if (x.data.length !== y.data.length) return (worst = Number.POSITIVE_INFINITY)
      let scale = 1e-6
      for (const v of x.data) scale = Math.max(scale, Math.abs(v))
      for (let j = 0; j < x.data.length; j++) worst = Math.max(worst, Math.abs(x.data[j]! - y.data[j]!) / scale)
    }
  })
  return worst
}

export function bytesOf(outs: Awaited<ReturnType<typeof runModel>>): Buffer[] {
  return outs.flatMap((o) => Object.keys(o).sort().map((k) => Buffer.from(o[k]!.data.buffer)))
}
