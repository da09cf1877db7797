import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {writeNpz} from '../../src/data/npz-write.js'
import {convertTfjs} from '../../src/convert/tfjs/index.js'
import type {VerifyReport} from '../../src/convert/tfjs/index.js'
import {AbortedError, KilnError} from '../../src/errors.js'
import {loadTfjs} from '../../src/runtime/tfjs.js'
import {HUMAN, lfwInput, tempDir} from './helpers.js'

describe('TF.js backend selection', () => {
  it('uses tfjs-node when installed, else wasm, and says why', async () => {
    let nodeInstalled = true
    try {
      await import('@tensorflow/tfjs-node' as string)
    } catch {
      nodeInstalled = false
    }
    const {backend, notes, tf} = await loadTfjs()
    expect(backend).toBe(nodeInstalled ? 'tensorflow' : 'wasm')
    expect(tf.getBackend()).toBe(backend)
    if (!nodeInstalled) expect(notes.join(' ')).toMatch(/tfjs-node is not installed/)
  })

  it('refuses a forced tensorflow backend it cannot load, with what to try', async () => {
    let nodeInstalled = true
    try {
      await import('@tensorflow/tfjs-node' as string)
    } catch {
      nodeInstalled = false
    }
    if (nodeInstalled) return expect((await loadTfjs({backend: 'tensorflow'})).backend).toBe('tensorflow')
    const err = await loadTfjs({backend: 'tensorflow'}).catch((e) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect(err.tryMessage).toMatch(/wasm/)
  })
})

describe('verification on a dataset', () => {
  it('feeds the npz arrays named like the inputs and reports it', async () => {
    const dir = await tempDir()
    const x = new Float32Array(2 * 128 * 128 * 3)
    x.set(lfwInput(0), 0)
    x.set(lfwInput(150), 128 * 128 * 3)
    await writeNpz(path.join(dir, 'faces.npz'), {input: {dtype: '<f4', shape: [2, 128, 128, 3], data: x}})
    const r = await convertTfjs(HUMAN('blazeface-front'), path.join(dir, 'bf.onnx'), {verify: {dataset: path.join(dir, 'faces.npz'), samples: 2}})
    const v = r.metrics.verify as VerifyReport
    expect(v.inputSource).toContain('faces.npz')
    expect(v.samples).toBe(2)
    expect(v.passed).toBe(true)
  })
})

describe('cancellation', () => {
  it('stops with AbortedError when the signal fires', async () => {
    const dir = await tempDir()
    const ctrl = new AbortController()
    ctrl.abort()
    const err = await convertTfjs(HUMAN('liveness'), path.join(dir, 'l.onnx'), {signal: ctrl.signal}).catch((e) => e)
    expect(err).toBeInstanceOf(AbortedError)
  })
})
