import {readdir} from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import {readBatches} from '../../data/dataset.js'
import type {DatasetSpec} from '../../stages/types.js'
import {DataType} from '../../onnx/proto.js'
import {TO_NCHW, TO_NHWC, permuteData} from './builder.js'

/** A model input as the converter describes it: source (channels-last) shape, -1 for unknown dims. */
export interface SampleInputSpec {
  name: string
  dtype: number
  shape: number[]
  /** Integer inputs (e.g. Embedding indices) are drawn from [0, intHigh). */
  intHigh?: number
}

/** One sample: input name → values in the source layout, batch 1. */
export type Sample = Record<string, {data: Float32Array | Int32Array; shape: number[]}>

/** Deterministic uniform [0,1) numbers, so a failing comparison can be reproduced. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 2 ** 32
  }
}

function isImage(spec: SampleInputSpec): boolean {
  const c = spec.shape[3]
  return spec.dtype === DataType.FLOAT && spec.shape.length === 4 && (c === 1 || c === 3 || c === 4)
}

/**
 * Real photographs resized (cover-crop) to an image input, scaled to [0,1]; for other inputs,
 * seeded pseudo-random values. `imageDir` holds the PNG/JPEG files to use.
 */
export async function sampleInputs(specs: SampleInputSpec[], count: number, imageDir: string | undefined): Promise<{samples: Sample[]; source: string}> {
  const images = imageDir ? (await readdir(imageDir).catch(() => [] as string[])).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort() : []
  const sharp = specs.some(isImage) && images.length ? (await import('sharp')).default : undefined
  const rand = prng(20261128)
  const samples: Sample[] = []
  for (let i = 0; i < count; i++) {
    const sample: Sample = {}
    for (const spec of specs) {
      const shape = spec.shape.map((d, j) => (d >= 0 ? d : j === 0 ? 1 : isImage(spec) ? 128 : 8))
      const n = shape.reduce((a, b) => a * b, 1)
      if (sharp && isImage(spec)) {
        const [, h, w, c] = shape as [number, number, number, number]
        let img = sharp(path.join(imageDir!, images[i % images.length]!)).resize(w, h, {fit: 'cover'})
        img = c === 1 ? img.greyscale() : c === 3 ? img.removeAlpha() : img.ensureAlpha()
        const raw = await img.raw().toBuffer()
        const data = new Float32Array(n)
        // sharp may keep an extra channel for greyscale input; take the first c of each pixel.
        const stride = raw.length / (h * w)
        for (let p = 0; p < h * w; p++) for (let k = 0; k < c; k++) data[p * c + k] = raw[p * stride + k]! / 255
        sample[spec.name] = {data, shape}
      } else if (spec.intHigh !== undefined || spec.dtype === DataType.INT32 || spec.dtype === DataType.INT64) {
        // Index inputs (Embedding) need whole numbers in range, even when declared float32.
        const high = spec.intHigh ?? 10
        const ints = Array.from({length: n}, () => Math.floor(rand() * high))
        sample[spec.name] = {data: spec.dtype === DataType.FLOAT ? Float32Array.from(ints) : Int32Array.from(ints), shape}
      } else {
        sample[spec.name] = {data: Float32Array.from({length: n}, () => rand()), shape}
      }
    }
    samples.push(sample)
  }
  const source = specs.some(isImage) && sharp ? `${Math.min(count, images.length)} real image(s) from ${imageDir}` : 'seeded random values'
  return {samples, source}
}

/**
 * Samples from a dataset file (npz/npy, fields named like the ONNX inputs), in the converted
 * model's interface layout (`nchw` says whether rank-4 inputs are channels-first there).
 */
export async function datasetInputs(dataset: string | DatasetSpec, specs: SampleInputSpec[], count: number, nchw: boolean, signal?: AbortSignal): Promise<Sample[]> {
  const samples: Sample[] = []
  const spec: DatasetSpec = typeof dataset === 'string' ? {name: path.basename(dataset), path: dataset} : dataset
  const file = spec.path
  const batches = readBatches({...spec, limit: Math.min(count, spec.limit ?? count)}, {batchSize: 1, signal, inputs: specs.map((s) => ({name: s.name, type: '', dims: nchw && s.shape.length === 4 ? TO_NCHW.map((p) => s.shape[p]!) : s.shape}))})
  for await (const batch of batches) {
    const sample: Sample = {}
    for (const spec of specs) {
      const t = batch.inputs[spec.name]
      if (!t) throw new KilnError(`dataset ${file} has no field for model input '${spec.name}'`, {code: 'E_DATASET', tryMessage: 'Name the npz arrays like the model inputs.'})
      let data: Float32Array | Int32Array = spec.dtype === DataType.FLOAT ? Float32Array.from(t.data as ArrayLike<number>, Number) : Int32Array.from(t.data as ArrayLike<number>, Number)
      let shape = [...t.dims]
      if (nchw && shape.length === 4) {
        data = permuteData(data, shape, TO_NHWC)
        shape = TO_NHWC.map((p) => shape[p]!)
      }
      sample[spec.name] = {data, shape}
    }
    samples.push(sample)
    if (samples.length >= count) break
  }
  if (!samples.length) throw new KilnError(`dataset ${file} holds no samples`, {code: 'E_DATASET'})
  return samples
}
