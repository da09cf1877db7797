import {KilnError} from '../errors.js'
import {readNpz} from './npy.js'
import type {NpyArray} from './npy.js'
import {writeNpz} from './npz-write.js'
import {resizeBilinear} from './preprocess.js'

/** Options of {@link lfwFaceArrays}. */
export interface LfwOptions {
  /** Side of the square model input (BlazeFace front: 128). */
  size?: number
  /** Layout of the written images (BlazeFace ONNX: NHWC). */
  layout?: 'NHWC' | 'NCHW'
  /** Input name in the NPZ (BlazeFace ONNX: `input:0`). */
  inputName?: string
  /** Take only the first `count` faces and `count` non-faces (default all 100 of each). */
  perClass?: number
}

/**
 * The LFW face/non-face subset (`lfw_subset.npy`: float64 [200,25,25] in [0,1], the first 100
 * faces, the last 100 not) prepared for a face detector: each crop upscaled (bilinear) to fill
 * the square input, grey copied to three channels, and scaled to [-1, 1] as BlazeFace expects.
 * Labels: 1 = face, 0 = non-face.
 */
export async function lfwFaceArrays(npyFile: string, options: LfwOptions = {}): Promise<Record<string, NpyArray>> {
  const size = options.size ?? 128
  const nchw = options.layout === 'NCHW'
  const arrays = await readNpz(npyFile)
  const src = [...arrays.values()][0]!
  if (src.shape.length !== 3 || src.shape[0]! < 2) throw new KilnError(`${npyFile}: expected [N,H,W] crops, got [${src.shape.join(',')}]`, {code: 'E_DATA'})
  const [total, h, w] = src.shape as [number, number, number]
  const half = total / 2
  const per = Math.min(options.perClass ?? half, half)
  const picks = [...Array.from({length: per}, (_, i) => i), ...Array.from({length: per}, (_, i) => half + i)]
  const out = new Float32Array(picks.length * size * size * 3)
  const labels = new BigInt64Array(picks.length)
  picks.forEach((k, j) => {
    const crop = Float32Array.from(src.data.subarray(k * h * w, (k + 1) * h * w) as ArrayLike<number>, Number)
    const big = resizeBilinear(crop, 1, h, w, size, size, true)
    const base = j * size * size * 3
    for (let p = 0; p < size * size; p++) {
      const v = big[p]! * 2 - 1
      for (let c = 0; c < 3; c++) out[nchw ? base + c * size * size + p : base + p * 3 + c] = v
    }
    labels[j] = k < half ? 1n : 0n
  })
  return {
    [options.inputName ?? 'input:0']: {dtype: '<f4', shape: nchw ? [picks.length, 3, size, size] : [picks.length, size, size, 3], data: out},
    labels: {dtype: '<i8', shape: [picks.length], data: labels},
  }
}

/** Write the prepared LFW set as an NPZ that `kiln eval` reads without any mapping. */
export async function writeLfwNpz(npyFile: string, outFile: string, options: LfwOptions = {}): Promise<string> {
  await writeNpz(outFile, await lfwFaceArrays(npyFile, options))
  return outFile
}

/** How to score BlazeFace on this set: a face when the highest sigmoid score over all anchors is ≥ 0.5. */
export const BLAZEFACE_LFW_TASK = {
  task: 'binary',
  outputs: ['Identity:0', 'Identity_1:0'],
  reduce: 'max',
  activation: 'sigmoid',
  positiveClass: 1,
  threshold: 0.5,
} as const
