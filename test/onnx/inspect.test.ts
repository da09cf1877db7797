import * as fs from 'node:fs'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {compressedSize} from '../../src/delivery/compress.js'
import {allNodes, weights} from '../../src/onnx/graph.js'
import {inspectModel} from '../../src/onnx/inspect.js'
import {readModel, writeModel} from '../../src/onnx/model.js'
import {DataType} from '../../src/onnx/proto.js'
import {elementCount, tensorData} from '../../src/onnx/tensor.js'
import {kiln} from '../helpers/cli.js'
import {MODELS, ensureFixtures} from '../helpers/fixtures.js'
import {tmpDir} from './helpers.js'

beforeAll(() => ensureFixtures())

describe('inspectModel on real models', () => {
  it('Silero v5: weights in Constant nodes inside If subgraphs are counted', async () => {
    const r = await inspectModel(MODELS.sileroV5, {compressedSize: false})
    const model = await readModel(MODELS.sileroV5)
    const nodes = [...allNodes(model)]
    const ifs = nodes.filter((n) => n.node.opType === 'If').length
    expect(r.subgraphs).toBe(2 * ifs)
    expect(r.nodes).toBe(nodes.length)
    expect(r.ops.reduce((a, o) => a + o.count, 0)).toBe(nodes.length)
    expect(r.ops.find((o) => o.op === 'Constant')!.count).toBe(nodes.filter((n) => n.node.opType === 'Constant').length)
    // No initializers at all: every parameter lives in a Constant node.
    expect(r.parameters.count).toBeGreaterThan(300_000)
    expect(r.parameters.inConstantNodes).toEqual({tensors: r.parameters.tensors, count: r.parameters.count})
    const f32 = r.parameters.byDtype.find((d) => d.dtype === 'float32')!
    expect(f32.bytes).toBe(f32.params * 4)
    expect(r.parameters.byDtype.reduce((a, d) => a + d.params, 0)).toBe(r.parameters.count)
    expect(r.sparsity.largest.some((l) => l.graph !== 'main')).toBe(true)
    expect(r.inputs.map((i) => `${i.name}:${i.dtype}`)).toEqual(['input:float32', 'state:float32', 'sr:int64'])
    expect(r.inputs[1]!.shape).toEqual([2, -1, 128])
  })

  it('Silero legacy: every opset domain is reported', async () => {
    const r = await inspectModel(MODELS.sileroLegacy, {compressedSize: false})
    const model = await readModel(MODELS.sileroLegacy)
    expect(r.opsets).toHaveLength(model.opsetImport.length)
    expect(r.opsets).toContainEqual({domain: 'com.ms.internal.nhwc', version: 1})
    expect(r.opsets).toContainEqual({domain: '', version: 16})
  })

  it('sparsity counts exact zeros, per layer and overall; zstd size matches the delivery compressor', async () => {
    const dir = tmpDir()
    const model = await readModel(MODELS.ocrCls)
    const base = await inspectModel(MODELS.ocrCls, {compressedSize: false})
    const largest = [...weights(model)].filter((w) => w.tensor.dataType === DataType.FLOAT).sort((a, b) => elementCount(b.tensor) - elementCount(a.tensor))[0]!
    const data = tensorData(largest.tensor) as Float32Array
    const before = data.filter((v) => v === 0).length
    const copy = Float32Array.from(data)
    for (let i = 0; i < copy.length; i += 2) copy[i] = 0
    largest.tensor.rawData = new Uint8Array(copy.buffer)
    const after = copy.filter((v) => v === 0).length
    const file = path.join(dir, 'half.onnx')
    await writeModel(model, file)

    const r = await inspectModel(file, {largest: 3})
    const layer = r.sparsity.largest.find((l) => l.name === largest.name)!
    expect(layer.sparsity).toBeCloseTo(after / copy.length, 12)
    expect(r.sparsity.zeros - base.sparsity.zeros).toBe(after - before)
    expect(r.sparsity.overall).toBeCloseTo(r.sparsity.zeros / r.sparsity.floatParams, 12)
    expect(r.sparsity.largest).toHaveLength(3)
    expect(r.fileBytes).toBe(fs.statSync(file).size)
    expect(r.compressedBytes).toBe(await compressedSize(file))
    expect(r.compressedBytes!).toBeLessThan(r.fileBytes)
  })

  it('a model with external data: both files sized, same parameters', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'ext.onnx')
    await writeModel(await readModel(MODELS.ocrDet), file, {externalData: 'always', externalThreshold: 1024})
    const [inline, ext] = await Promise.all([inspectModel(MODELS.ocrDet, {compressedSize: false}), inspectModel(file)])
    expect(ext.externalDataFiles).toEqual([`${file}.data`])
    expect(ext.fileBytes).toBe(fs.statSync(file).size + fs.statSync(`${file}.data`).size)
    expect(ext.parameters).toEqual(inline.parameters)
    expect(ext.sparsity).toEqual(inline.sparsity)
    expect(ext.compressedBytes).toBe((await compressedSize(file)) + (await compressedSize(`${file}.data`)))
  })
})

describe('kiln inspect (built CLI)', () => {
  it('--json returns the typed result; the human table has no ANSI codes', async () => {
    const json = await kiln(['inspect', MODELS.blazeface, '--json', '--top', '2'])
    expect(json.exitCode).toBe(0)
    expect(json.json).toMatchObject({irVersion: 7, opsets: [{domain: '', version: 12}], subgraphs: 0})
    expect(json.json.sparsity.largest).toHaveLength(2)
    expect(json.json.compressedBytes).toBeGreaterThan(0)
    const human = await kiln(['inspect', MODELS.blazeface, '--no-compressed-size'])
    expect(human.exitCode).toBe(0)
    expect(human.stdout).toMatch(/IR version\s+7/)
    expect(human.stdout).toMatch(/Conv\s+ai\.onnx\s+37/)
    expect(human.stdout).toMatch(/zstd size\s+not measured/)
    expect(human.stdout).not.toMatch(/\u001b\[/)
  })

  it('bad models exit 1 with a clear error, also under --json', async () => {
    const dir = tmpDir()
    const missing = await kiln(['inspect', path.join(dir, 'none.onnx'), '--json'])
    expect(missing.exitCode).toBe(1)
    expect(missing.json.error).toMatchObject({code: 'E_MODEL_MISSING', exitCode: 1})
    const isDir = await kiln(['inspect', dir])
    expect(isDir.exitCode).toBe(1)
    expect(isDir.stderr).toMatch(/is a directory/)
    fs.writeFileSync(path.join(dir, 'cut.onnx'), fs.readFileSync(MODELS.blazeface).subarray(0, 200_000))
    const cut = await kiln(['inspect', path.join(dir, 'cut.onnx'), '--json'])
    expect(cut.exitCode).toBe(1)
    expect(cut.json.error.code).toBe('E_MODEL_CORRUPT')
    expect(cut.json.error.try).toBeTruthy()
  })
})
