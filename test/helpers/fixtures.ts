import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
// @ts-expect-error plain JS script without types
import {FIXTURES_DIR, fetchFixtures} from '../../scripts/fetch-fixtures.js'

/** Absolute path of a fixture file (fetched by `npm run fixtures`, which `npm test` runs first). */
export function fixture(rel: string): string {
  return path.join(FIXTURES_DIR as string, rel)
}

/** Make sure fixtures are present (cheap when they are). */
export function ensureFixtures(): void {
  ;(fetchFixtures as (o: {quiet: boolean}) => void)({quiet: true})
}

export const MODELS = {
  blazeface: fixture('onnx/blazeface_front_128.onnx'),
  sileroV5: fixture('onnx/silero_vad_v5.onnx'),
  sileroLegacy: fixture('onnx/silero_vad_legacy.onnx'),
  ocrDet: fixture('onnx/ppocr_det_v4.onnx'),
  ocrRec: fixture('onnx/ppocr_rec_v4.onnx'),
  ocrCls: fixture('onnx/ppocr_cls_v2.onnx'),
}

/** Paths of the trained Fashion-MNIST example models and data (see scripts/train-fashion-mnist.ts). */
export interface TrainedModels {
  /** MLP 784-256-128-10: input `input` float32 [N,1,28,28] in [0,1], output `logits` [N,10]. */
  mlp: string
  /** Small CNN with BatchNormalization nodes, same input and output. */
  cnn: string
  /** Full 10k test set: `input` float32 [10000,1,28,28], `labels` int64 [10000]. */
  test: string
  /** 256 training images: `input` float32 [256,1,28,28]. */
  calib: string
  /** Training record, incl. each model's test accuracy measured with onnxruntime. */
  meta: string
}

/**
 * The trained Fashion-MNIST example models, training them first (about a minute) when they are
 * missing or were made by another version of the training script.
 */
export function ensureTrainedModels(): TrainedModels {
  const dir = fixture('trained')
  const paths: TrainedModels = {
    mlp: path.join(dir, 'fashion_mlp.onnx'),
    cnn: path.join(dir, 'fashion_cnn.onnx'),
    test: path.join(dir, 'fashion_test.npz'),
    calib: path.join(dir, 'fashion_calib.npz'),
    meta: path.join(dir, 'meta.json'),
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
  const script = path.join(root, 'scripts', 'train-fashion-mnist.ts')
  const hash = createHash('sha256').update(fs.readFileSync(script)).digest('hex')
  const current = (): boolean => {
    try {
      return Object.values(paths).every((p) => fs.existsSync(p)) && JSON.parse(fs.readFileSync(paths.meta, 'utf8')).scriptHash === hash
    } catch {
      return false
    }
  }
  if (current()) return paths
  // Test files run in parallel workers: one trains, the others wait for it.
  fs.mkdirSync(dir, {recursive: true})
  const lock = path.join(dir, '.training.lock')
  const deadline = Date.now() + 10 * 60_000
  for (;;) {
    try {
      fs.mkdirSync(lock)
      break
    } catch {
      if (current()) return paths
      const since = fs.statSync(lock, {throwIfNoEntry: false})?.mtimeMs
      if (since !== undefined && Date.now() - since > 10 * 60_000) fs.rmSync(lock, {recursive: true, force: true})
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500)
    }
  }
  try {
    if (!current()) execFileSync(path.join(root, 'node_modules', '.bin', 'tsx'), [script], {cwd: root, stdio: ['ignore', 'ignore', 'inherit']})
  } finally {
    fs.rmSync(lock, {recursive: true, force: true})
  }
  return paths
}
