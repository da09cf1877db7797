import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type * as TfNs from '@tensorflow/tfjs'
import {parseNpy} from '../../src/data/npy.js'
import {fixture} from '../helpers/fixtures.js'

export const IMAGES = fixture('data/images')
export const HUMAN = (name: string): string => fixture(`tfjs/human/${name}.json`)
export const NSFW = fixture('tfjs/nsfwjs-mobilenet_v2/model.json')

export async function tempDir(prefix = 'kiln-tfjs-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Save a TF.js model as model.json + one weights file in `dir`, the way `model.save('file://')` would. */
export async function saveLayersModel(tf: typeof TfNs, model: TfNs.LayersModel, dir: string): Promise<string> {
  await fsp.mkdir(dir, {recursive: true})
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weights = artifacts.weightData ? new Uint8Array(artifacts.weightData as ArrayBuffer) : new Uint8Array(0)
      await fsp.writeFile(path.join(dir, 'weights.bin'), weights)
      const json = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{paths: ['weights.bin'], weights: artifacts.weightSpecs}],
      }
      await fsp.writeFile(path.join(dir, 'model.json'), JSON.stringify(json))
      return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}}
    }),
  )
  return path.join(dir, 'model.json')
}

/** Copy a fixture model.json and its shards into a fresh folder, to damage them in a test. */
export async function copyModel(modelJson: string): Promise<{dir: string; json: any; file: string}> {
  const dir = await tempDir()
  const json = JSON.parse(await fsp.readFile(modelJson, 'utf8'))
  for (const g of json.weightsManifest) for (const p of g.paths) await fsp.copyFile(path.join(path.dirname(modelJson), p), path.join(dir, p))
  const file = path.join(dir, 'model.json')
  await fsp.writeFile(file, JSON.stringify(json))
  return {dir, json, file}
}

/**
 * BlazeFace input from the LFW subset (first 100 faces, last 100 not): each 25×25 grey crop
 * stretched over the whole 128×128 frame with half-pixel bilinear sampling in float (no 8-bit
 * rounding, no anti-aliasing: both cost accuracy on such tiny crops), grey on 3 channels, [-1, 1].
 */
export function lfwInput(index: number): Float32Array {
  const arr = parseNpy(fs.readFileSync(fixture('data/lfw_subset.npy')))
  const [, h, w] = arr.shape as [number, number, number]
  const src = (arr.data as Float64Array).subarray(index * h * w, (index + 1) * h * w)
  const S = 128
  const out = new Float32Array(S * S * 3)
  const coord = (o: number, n: number): [number, number, number] => {
    const f = Math.min(n - 1, Math.max(0, ((o + 0.5) * n) / S - 0.5))
    const i0 = Math.floor(f)
    return [i0, Math.min(n - 1, i0 + 1), f - i0]
  }
  for (let y = 0; y < S; y++) {
    const [y0, y1, fy] = coord(y, h)
    for (let x = 0; x < S; x++) {
      const [x0, x1, fx] = coord(x, w)
      const top = src[y0 * w + x0]! + (src[y0 * w + x1]! - src[y0 * w + x0]!) * fx
      const bottom = src[y1 * w + x0]! + (src[y1 * w + x1]! - src[y1 * w + x0]!) * fx
      const v = (top + (bottom - top) * fy) * 2 - 1
      out.set([v, v, v], (y * S + x) * 3)
    }
  }
  return out
}

export const isFace = (index: number): boolean => index < 100

/** Face when the largest raw score logit over both anchor heads is above 0 (sigmoid 0.5). */
export function faceLogit(outputs: Record<string, {data: unknown; dims: readonly number[]}>): number {
  let m = Number.NEGATIVE_INFINITY
  for (const t of Object.values(outputs)) if (t.dims.at(-1) === 1) for (const v of t.data as Float32Array) m = Math.max(m, v)
  return m
}

/** Non-trivial weights (fresh layers have zero biases and unit batch-norm statistics). */
export function randomizeWeights(tf: typeof TfNs, model: TfNs.LayersModel, seed: number): void {
  let s = seed
  for (const layer of model.layers) {
    const ws = layer.weights
    if (!ws.length) continue
    layer.setWeights(ws.map((w) => (w.name.includes('moving_variance') ? tf.randomUniform(w.shape, 0.5, 1.5, 'float32', s++) : tf.randomUniform(w.shape, -0.5, 0.5, 'float32', s++))))
  }
}
