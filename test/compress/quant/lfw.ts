/**
 * BlazeFace input from the LFW subset: each 25×25 grey crop (first 100 faces, last 100 not)
 * upscaled bilinearly to fill the 128×128 NHWC input, grey copied to 3 channels, scaled to [-1, 1].
 */
import * as fs from 'node:fs'
import {parseNpy} from '../../../src/data/npy.js'
import {writeNpz} from '../../../src/data/npz-write.js'
import {fixture} from '../../helpers/fixtures.js'

export function lfwSamples(indices: number[]): {input: Float32Array; labels: BigInt64Array; n: number} {
  const arr = parseNpy(fs.readFileSync(fixture('data/lfw_subset.npy')))
  const [, h, w] = arr.shape as [number, number, number]
  const src = arr.data as Float64Array
  const S = 128
  const input = new Float32Array(indices.length * S * S * 3)
  indices.forEach((idx, k) => {
    const base = idx * h * w
    for (let y = 0; y < S; y++) {
      const fy = Math.min(h - 1, Math.max(0, ((y + 0.5) * h) / S - 0.5))
      const y0 = Math.floor(fy)
      const y1 = Math.min(h - 1, y0 + 1)
      const dy = fy - y0
      for (let x = 0; x < S; x++) {
        const fx = Math.min(w - 1, Math.max(0, ((x + 0.5) * w) / S - 0.5))
        const x0 = Math.floor(fx)
        const x1 = Math.min(w - 1, x0 + 1)
        const dx = fx - x0
        const v =
          src[base + y0 * w + x0]! * (1 - dx) * (1 - dy) +
          src[base + y0 * w + x1]! * dx * (1 - dy) +
          src[base + y1 * w + x0]! * (1 - dx) * dy +
          src[base + y1 * w + x1]! * dx * dy
        const o = ((k * S + y) * S + x) * 3
        input[o] = input[o + 1] = input[o + 2] = v * 2 - 1
      }
    }
  })
  const labels = BigInt64Array.from(indices.map((i) => (i < 100 ? 1n : 0n)))
  return {input, labels, n: indices.length}
}

/** Write an NPZ with `input:0` (BlazeFace's input name) and `labels`. */
export async function writeLfwNpz(file: string, indices: number[]): Promise<void> {
  const {input, labels, n} = lfwSamples(indices)
  await writeNpz(file, {'input:0': {dtype: '<f4', shape: [n, 128, 128, 3], data: input}, labels: {dtype: '<i8', shape: [n], data: labels}})
}

/** Face if the highest raw score logit of either head is above 0 (sigmoid 0.5). */
export function faceScore(outputs: Record<string, {data: ArrayLike<number>}>): number {
  let m = Number.NEGATIVE_INFINITY
  for (const k of ['Identity:0', 'Identity_1:0']) for (const v of Array.from(outputs[k]!.data)) m = Math.max(m, v)
  return m
}
