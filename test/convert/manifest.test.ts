import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {convertTfjs} from '../../src/convert/tfjs/index.js'
import {loadTfjsModel} from '../../src/convert/tfjs/manifest.js'
import {KilnError} from '../../src/errors.js'
import {loadTfjs} from '../../src/runtime/tfjs.js'
import {HUMAN, NSFW, copyModel, tempDir} from './helpers.js'

describe('TF.js weights manifest', () => {
  it('dequantizes uint8 (nsfwjs) and float16 (facemesh) weights bit-exactly as TF.js does', async () => {
    const {tf} = await loadTfjs()
    for (const file of [NSFW, HUMAN('facemesh-detection-short'), HUMAN('antispoof')]) {
      const m = await loadTfjsModel(file)
      const quantized = m.weightSpecs.filter((w) => w.quantization)
      expect(quantized.length).toBeGreaterThan(0)
      const ref = tf.io.decodeWeights(m.weightData, m.weightSpecs as never)
      for (const spec of m.weightSpecs) {
        const ours = m.weights.get(spec.name)!
        const theirs = ref[spec.name]!.dataSync()
        expect(ours.shape).toEqual(spec.shape)
        expect(Buffer.from(ours.data.buffer, ours.data.byteOffset, ours.data.byteLength).equals(Buffer.from(theirs.buffer, theirs.byteOffset, theirs.byteLength)), spec.name).toBe(true)
      }
      tf.dispose(Object.values(ref))
    }
  })

  it('names a missing shard', async () => {
    const {dir, file, json} = await copyModel(HUMAN('liveness'))
    await fsp.rm(path.join(dir, json.weightsManifest[0].paths[0]))
    const err = await loadTfjsModel(file).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.code).toBe('E_TFJS_SHARD_MISSING')
    expect(err.message).toContain('liveness.bin')
    expect(err.tryMessage).toBeTruthy()
  })

  it('rejects a shard of the wrong size with both sizes', async () => {
    const {dir, file, json} = await copyModel(HUMAN('liveness'))
    const shard = path.join(dir, json.weightsManifest[0].paths[0])
    const bytes = await fsp.readFile(shard)
    await fsp.writeFile(shard, bytes.subarray(0, bytes.length - 100))
    const err = await loadTfjsModel(file).catch((e) => e)
    expect(err.code).toBe('E_TFJS_SHARD_SIZE')
    expect(err.message).toContain(String(bytes.length - 100))
    expect(err.message).toContain(String(bytes.length))
  })

  it('rejects malformed manifests with what is wrong', async () => {
    const dir = await tempDir()
    const cases: [unknown, RegExp][] = [
      ['not json at all {', /not JSON/],
      [[1, 2], /JSON object/],
      [{weightsManifest: []}, /modelTopology/],
      [{modelTopology: {node: []}}, /weightsManifest/],
      [{modelTopology: {node: []}, weightsManifest: [{paths: 'a.bin', weights: []}]}, /paths/],
      [{modelTopology: {node: []}, weightsManifest: [{paths: [], weights: [{name: 'w', shape: [2], dtype: 'float64'}]}]}, /unknown dtype 'float64'/],
      [{modelTopology: {node: []}, weightsManifest: [{paths: [], weights: [{name: 'w', shape: [2], dtype: 'float32', quantization: {dtype: 'uint8'}}]}]}, /without numeric min and scale/],
      [{modelTopology: {node: []}, weightsManifest: [{paths: [], weights: [{name: 'w', shape: [-1], dtype: 'float32'}]}]}, /invalid shape/],
      [{modelTopology: {foo: 1}, weightsManifest: []}, /neither a layers model/],
      [{modelTopology: {node: []}, weightsManifest: [{paths: ['../../etc/passwd'], weights: []}]}, /outside the model's folder/],
    ]
    for (const [content, re] of cases) {
      const file = path.join(dir, 'model.json')
      await fsp.writeFile(file, typeof content === 'string' ? content : JSON.stringify(content))
      const err = await loadTfjsModel(file).catch((e) => e)
      expect(err, JSON.stringify(content)).toBeInstanceOf(KilnError)
      expect(err.code).toBe('E_TFJS_MANIFEST')
      expect(err.message).toMatch(re)
    }
  })

  it('lists every unknown layer class with its count in one error', async () => {
    const {file, json} = await copyModel(NSFW)
    const layers = json.modelTopology.model_config.config.layers
    const relus = layers.filter((l: any) => l.class_name === 'ReLU')
    relus.slice(0, 3).forEach((l: any) => (l.class_name = 'FancyActivation'))
    layers.find((l: any) => l.class_name === 'Flatten').class_name = 'MysteryFlatten'
    await fsp.writeFile(file, JSON.stringify(json))
    const err = await convertTfjs(file, path.join(path.dirname(file), 'out.onnx'), {verify: false}).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.code).toBe('E_TFJS_UNSUPPORTED_LAYERS')
    expect(err.message).toContain('FancyActivation ×3')
    expect(err.message).toContain('MysteryFlatten ×1')
    expect(err.message).toContain('2 unsupported layer classes')
  })
})
