import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {DEFAULT_TOLERANCE, convertTfjs} from '../../src/convert/tfjs/index.js'
import type {VerifyReport} from '../../src/convert/tfjs/index.js'
import {readModel} from '../../src/onnx/model.js'
import {createSession, loadOrt} from '../../src/runtime/ort.js'
import {loadTfjs} from '../../src/runtime/tfjs.js'
import {KilnError} from '../../src/errors.js'
import {MODELS} from '../helpers/fixtures.js'
import {HUMAN, IMAGES, NSFW, copyModel, faceLogit, isFace, lfwInput, tempDir} from './helpers.js'

const REAL = ['blazeface-front', 'emotion', 'facemesh-detection-short', 'age', 'liveness', 'antispoof']

describe('real TF.js models convert and match TF.js on real images', () => {
  for (const name of REAL) {
    it(name, async () => {
      const dir = await tempDir()
      const out = path.join(dir, `${name}.onnx`)
      const {metrics} = await convertTfjs(HUMAN(name), out, {verify: {images: IMAGES, samples: 2}})
      const verify = metrics.verify as VerifyReport
      expect(verify.passed).toBe(true)
      expect(verify.inputSource).toMatch(/real image/)
      expect(['wasm', 'tensorflow', 'cpu']).toContain(verify.backend)
      for (const o of verify.outputs) {
        expect(o.relError).toBeLessThanOrEqual(DEFAULT_TOLERANCE)
        expect(o.scale).toBeGreaterThan(0)
      }
      // Interface names are what TF.js users know the model's tensors by.
      const {tf} = await loadTfjs()
      const json = JSON.parse(await fsp.readFile(HUMAN(name), 'utf8'))
      const g = await tf.loadGraphModel(tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: json.weightsManifest.flatMap((w: any) => w.weights), weightData: await fsp.readFile(HUMAN(name).replace(/\.json$/, '.bin')).then((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), signature: json.signature} as never))
      const model = await readModel(out)
      expect(model.graph!.input.map((i) => i.name).sort()).toEqual([...g.inputNodes].sort())
      expect(model.graph!.output.map((o) => o.name).sort()).toEqual([...g.outputNodes].sort())
      g.dispose()
    })
  }
})

describe('layout', () => {
  it('keeps NHWC at the interface with few inner Transposes, and exposes NCHW on request', async () => {
    const dir = await tempDir()
    const nhwc = await convertTfjs(HUMAN('blazeface-front'), path.join(dir, 'a.onnx'), {verify: {images: IMAGES, samples: 1}})
    const nchw = await convertTfjs(HUMAN('blazeface-front'), path.join(dir, 'b.onnx'), {layout: 'nchw', verify: {images: IMAGES, samples: 1}})
    // 37 convolutions, 11 pads, 3 pools: one Transpose in, one before each of the 4 reshape heads.
    expect(nhwc.metrics.transposes).toBeLessThanOrEqual(5)
    expect(nchw.metrics.transposes).toBeLessThan(nhwc.metrics.transposes as number)
    const a = await createSession(path.join(dir, 'a.onnx'))
    const b = await createSession(path.join(dir, 'b.onnx'))
    const shapeOf = (s: typeof a) => (s.inputMetadata[0] as {shape: unknown[]}).shape
    expect(shapeOf(a)).toEqual([1, 128, 128, 3])
    expect(shapeOf(b)).toEqual([1, 3, 128, 128])
    expect((nchw.metrics.verify as VerifyReport).passed).toBe(true)
  })

  it('converts the uint8-quantized nsfwjs layers model (Keras 2.2.4, 162 layers) in NCHW too', async () => {
    const dir = await tempDir()
    const r = await convertTfjs(NSFW, path.join(dir, 'nsfw.onnx'), {layout: 'nchw', verify: {images: IMAGES, samples: 2}})
    const v = r.metrics.verify as VerifyReport
    expect(v.passed).toBe(true)
    expect(v.outputs.map((o) => o.name)).toEqual(['dense_3'])
    // The only layout change (pooled 1×1 map → Flatten) moves size-1 dims: a Reshape, no Transpose.
    expect(r.metrics.transposes).toBe(0)
  })
})

describe('converted BlazeFace scores LFW like the vendor ONNX', () => {
  it('agrees with the vendor model on a few faces and non-faces', async () => {
    const dir = await tempDir()
    const out = path.join(dir, 'bf.onnx')
    await convertTfjs(HUMAN('blazeface-front'), out, {verify: false})
    const ort = await loadOrt()
    const ours = await createSession(out)
    const vendor = await createSession(MODELS.blazeface)
    const samples = [0, 1, 2, 3, 100, 101, 102, 103]
    let agree = 0
    let correct = 0
    for (const i of samples) {
      const x = lfwInput(i)
      const a = faceLogit(await ours.run({[ours.inputNames[0]!]: new ort.Tensor('float32', x, [1, 128, 128, 3])}))
      const b = faceLogit(await vendor.run({[vendor.inputNames[0]!]: new ort.Tensor('float32', x, [1, 128, 128, 3])}))
      expect(Math.abs(a - b)).toBeLessThan(1e-3 * Math.max(1, Math.abs(b)))
      if (a > 0 === b > 0) agree++
      if (a > 0 === isFace(i)) correct++
    }
    expect(agree).toBe(samples.length)
    expect(correct).toBeGreaterThanOrEqual(samples.length - 1)
  })
})

describe('unsupported ops', () => {
  async function withFakeOps(): Promise<{file: string}> {
    const {file, json} = await copyModel(HUMAN('liveness'))
    const nodes = json.modelTopology.node
    const relabel = (from: string, to: string, n: number) => nodes.filter((x: any) => x.op === from).slice(0, n).forEach((x: any) => (x.op = to))
    relabel('Mul', 'FancyMul', 2)
    relabel('MaxPool', 'WeirdPool', 1)
    await fsp.writeFile(file, JSON.stringify(json))
    return {file}
  }

  it('lists every unsupported op with its count in one error', async () => {
    const {file} = await withFakeOps()
    const err = await convertTfjs(file, path.join(path.dirname(file), 'o.onnx'), {verify: false}).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.code).toBe('E_TFJS_UNSUPPORTED_OPS')
    expect(err.message).toContain('FancyMul ×2')
    expect(err.message).toContain('WeirdPool ×1')
    expect(err.tryMessage).toMatch(/custom-op-domain/)
  })

  it('marks them for a custom-op domain when asked', async () => {
    const {file} = await withFakeOps()
    const out = path.join(path.dirname(file), 'o.onnx')
    const r = await convertTfjs(file, out, {customOpDomain: 'com.example.tfjs'})
    expect(r.metrics.customOps).toEqual({FancyMul: 2, WeirdPool: 1})
    expect((r.metrics.verify as {skipped: string}).skipped).toMatch(/custom-domain/)
    const model = await readModel(out)
    const custom = model.graph!.node.filter((n) => n.domain === 'com.example.tfjs')
    expect(custom.map((n) => n.opType).sort()).toEqual(['FancyMul', 'FancyMul', 'WeirdPool'])
    expect(model.opsetImport.some((o) => o.domain === 'com.example.tfjs')).toBe(true)
  })
})

describe('verification', () => {
  it('fails when the tolerance is below the real error, naming the output', async () => {
    const dir = await tempDir()
    const out = path.join(dir, 'e.onnx')
    const err = await convertTfjs(HUMAN('emotion'), out, {verify: {images: IMAGES, samples: 1, tolerance: 1e-12}}).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.code).toBe('E_TFJS_VERIFY')
    expect(err.message).toContain('Identity')
    await expect(fsp.stat(out)).rejects.toThrow()
  })
})

describe('opset', () => {
  it('targets opsets 13 to 21 (reduction axes move to inputs at 18) and refuses older ones', async () => {
    const dir = await tempDir()
    for (const opset of [13, 18, 21]) {
      const out = path.join(dir, `e${opset}.onnx`)
      const r = await convertTfjs(HUMAN('emotion'), out, {opset, verify: {images: IMAGES, samples: 1}})
      expect((r.metrics.verify as VerifyReport).passed).toBe(true)
      const model = await readModel(out)
      expect(model.opsetImport.find((o) => o.domain === '')!.version).toBe(BigInt(opset))
    }
    const err = await convertTfjs(HUMAN('emotion'), path.join(dir, 'x.onnx'), {opset: 11}).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.exitCode).toBe(2)
  })
})
