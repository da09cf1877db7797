import * as fsp from 'node:fs/promises'
import ort from 'onnxruntime-node'
import {parseNpy} from '../../src/data/npy.js'
import {fixture} from '../helpers/fixtures.js'

/**
 * BlazeFace inputs from real faces: LFW crops (25×25 grey, skimage's lfw_subset) upscaled to the
 * model's 128×128 RGB input in [0, 1].
 */
export async function blazefaceInput(index = 0): Promise<Float32Array> {
  const faces = parseNpy(await fsp.readFile(fixture('data/lfw_subset.npy')), 'lfw_subset')
  const [, h, w] = faces.shape as [number, number, number]
  const src = faces.data as Float64Array
  const out = new Float32Array(128 * 128 * 3)
  for (let y = 0; y < 128; y++) {
    for (let x = 0; x < 128; x++) {
      const v = src[index * h * w + Math.floor((y * h) / 128) * w + Math.floor((x * w) / 128)]!
      for (let c = 0; c < 3; c++) out[(y * 128 + x) * 3 + c] = v
    }
  }
  return out
}

/** A real speech window for Silero VAD: 512 samples of a 16 kHz PCM16 recording, as float in [-1, 1]. */
export async function speechWindow(file: string, offsetSamples = 8000): Promise<Float32Array> {
  const wav = await fsp.readFile(file)
  const dataAt = wav.indexOf('data') + 8
  const out = new Float32Array(512)
  for (let i = 0; i < 512; i++) out[i] = wav.readInt16LE(dataAt + (offsetSamples + i) * 2) / 32768
  return out
}

/** Run a model directly with onnxruntime, as the reference a served answer must match. */
export async function runDirect(model: string, feeds: Record<string, ort.Tensor>, threads = 2): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(model, {logSeverityLevel: 3, intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential'})
  try {
    return await session.run(feeds)
  } finally {
    await session.release()
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}
