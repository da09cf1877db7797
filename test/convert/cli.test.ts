import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {kiln} from '../helpers/cli.js'
import {HUMAN, IMAGES, copyModel, tempDir} from './helpers.js'
import {MODELS} from '../helpers/fixtures.js'

describe('kiln convert', () => {
  let dir: string
  beforeAll(async () => {
    dir = await tempDir()
  })

  it('converts a TF.js graph model, verifies it and reports per-output errors as JSON', async () => {
    const out = path.join(dir, 'liveness.onnx')
    const r = await kiln(['convert', HUMAN('liveness'), '-o', out, '--layout', 'nchw', '--images', IMAGES, '--samples', '2', '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.from).toBe('tfjs')
    expect(r.json.metrics.layout).toBe('nchw')
    expect(r.json.metrics.verify.passed).toBe(true)
    expect(r.json.metrics.verify.outputs[0].name).toBe('activation_6')
    expect(r.json.metrics.verify.outputs[0].relError).toBeLessThan(1e-4)
    expect(r.stderr).toMatch(/verified against TF\.js \((wasm|tensorflow|cpu)\)/)
    expect((await fsp.stat(out)).size).toBeGreaterThan(100_000)
  })

  it('skips verification with --no-verify', async () => {
    const out = path.join(dir, 'antispoof.onnx')
    const r = await kiln(['convert', HUMAN('antispoof'), '-o', out, '--no-verify', '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.metrics.verify).toEqual({skipped: 'disabled'})
    // Verification settings with verification off would be read by nothing.
    const both = await kiln(['convert', HUMAN('antispoof'), '-o', path.join(dir, 'z.onnx'), '--no-verify', '--samples', '3', '--json'])
    expect(both.exitCode).toBe(2)
    expect(both.json.error.message).toMatch(/--samples sets up verification, which --no-verify turns off/)
  })

  it('exits 1 naming a missing shard, with what to try', async () => {
    const {dir: d, file, json} = await copyModel(HUMAN('emotion'))
    await fsp.rm(path.join(d, json.weightsManifest[0].paths[0]))
    const r = await kiln(['convert', file, '-o', path.join(d, 'x.onnx'), '--json'])
    expect(r.exitCode).toBe(1)
    expect(r.json.error.code).toBe('E_TFJS_SHARD_MISSING')
    expect(r.json.error.message).toContain('emotion.bin')
    expect(r.json.error.try).toBeTruthy()
  })

  it('rejects a bad tolerance as a usage error', async () => {
    const r = await kiln(['convert', HUMAN('emotion'), '-o', path.join(dir, 'y.onnx'), '--tolerance', 'abc'])
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toMatch(/--tolerance/)
  })

  it('upgrades an ONNX input to the requested opset', async () => {
    const out = path.join(dir, 'bf17.onnx')
    const r = await kiln(['convert', MODELS.blazeface, '-o', out, '--opset', '17', '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.from).toBe('onnx')
    expect(r.json.metrics.toOpset).toBe(17)
  })
})

describe('kiln convert flags that only fit TF.js input', () => {
  it('refuses them for an ONNX input instead of ignoring them', async () => {
    const dir = await tempDir()
    const r = await kiln(['convert', MODELS.blazeface, '-o', path.join(dir, 'x.onnx'), '--tolerance', '1e-3', '--no-verify'])
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toMatch(/--tolerance, --no-verify apply only to TF\.js input/)
  })
})
