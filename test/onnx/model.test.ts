import * as fs from 'node:fs'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {ModelError} from '../../src/errors.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import {allNodes, walkGraphs, weights} from '../../src/onnx/graph.js'
import {modelToBytes, readModel, writeModel} from '../../src/onnx/model.js'
import {DataType, StringStringEntryProtoSchema, TensorProtoSchema, create} from '../../src/onnx/proto.js'
import {makeTensor, tensorData} from '../../src/onnx/tensor.js'
import {MODELS, ensureFixtures} from '../helpers/fixtures.js'
import {bytesOf, realFeeds, runModel, tmpDir, type ModelKey} from './helpers.js'

beforeAll(() => ensureFixtures())

const KEYS = Object.keys(MODELS) as ModelKey[]

describe('read → write round trip on the real models', () => {
  it.each(KEYS)('%s: unchanged model gives bit-identical onnxruntime outputs, inline and with external data', async (key) => {
    const dir = tmpDir()
    const model = await readModel(MODELS[key])
    const inline = path.join(dir, 'inline.onnx')
    const external = path.join(dir, 'external.onnx')
    await writeModel(model, inline)
    const ext = await writeModel(model, external, {externalData: 'always', externalThreshold: 256})
    expect(ext.externalFile).toBe(path.join(dir, 'external.onnx.data'))
    // Writing must leave the in-memory model as it was (tensors back in raw_data).
    expect(Buffer.from(modelToBytes(model)).equals(fs.readFileSync(inline))).toBe(true)
    expect(fs.statSync(external).size).toBeLessThan(fs.statSync(inline).size / 2)

    const feeds = await realFeeds(key)
    const [original, viaInline, viaExternal] = await Promise.all([MODELS[key], inline, external].map((f) => runModel(f, feeds)))
    const want = bytesOf(original!)
    expect(want.length).toBeGreaterThan(0)
    for (const got of [bytesOf(viaInline!), bytesOf(viaExternal!)]) {
      expect(got.length).toBe(want.length)
      got.forEach((b, i) => expect(b.equals(want[i]!)).toBe(true))
    }

    // kiln reads its own external-data output back to the same weights and the same opset imports.
    const back = await readModel(external)
    expect(back.opsetImport.map((o) => `${o.domain}:${o.version}`)).toEqual(model.opsetImport.map((o) => `${o.domain}:${o.version}`))
    const a = [...weights(model)]
    const b = [...weights(back)]
    expect(b.map((w) => w.name)).toEqual(a.map((w) => w.name))
    b.forEach((w, i) => expect(Buffer.from(w.tensor.rawData).equals(Buffer.from(a[i]!.tensor.rawData))).toBe(true))
  })

  it('keeps unknown opset domains (com.ms.internal.nhwc, ai.onnx.training...)', async () => {
    const model = await readModel(MODELS.sileroLegacy)
    const domains = model.opsetImport.map((o) => o.domain)
    expect(domains).toContain('com.ms.internal.nhwc')
    const file = path.join(tmpDir(), 'm.onnx')
    await writeModel(model, file)
    expect((await readModel(file)).opsetImport.map((o) => o.domain)).toEqual(domains)
  })
})

describe('streamed encoding', () => {
  it('writes exactly the protobuf runtime bytes: typed-field tensors, doc strings, metadata, unknown fields', async () => {
    const raw = makeTensor('raw_w', DataType.FLOAT, [3], Float32Array.of(1, -2, 3))
    raw.docString = 'raw weights'
    const typed = create(TensorProtoSchema, {name: 'typed_w', dataType: DataType.FLOAT, dims: [2n], floatData: [0.5, 0]})
    const empty = makeTensor('empty_w', DataType.INT64, [0], new BigInt64Array(0))
    const model = makeModel(
      makeGraph({
        name: 'g',
        node: [makeNode('Add', ['x', 'raw_w'], ['y'])],
        initializer: [raw, typed, empty],
        input: [makeValueInfo('x', DataType.FLOAT, [3])],
        output: [makeValueInfo('y', DataType.FLOAT, [3])],
      }),
    )
    model.docString = 'doc'
    model.metadataProps = [create(StringStringEntryProtoSchema, {key: 'author', value: 'kiln'})]
    // Field 1000 is unknown to ONNX: a varint 7 after the known fields, kept by the reader.
    const withUnknown = Buffer.concat([Buffer.from(modelToBytes(model)), Buffer.from([0xc0, 0x3e, 0x07])])
    const dir = tmpDir()
    fs.writeFileSync(path.join(dir, 'in.onnx'), withUnknown)
    const back = await readModel(path.join(dir, 'in.onnx'))
    const out = path.join(dir, 'out.onnx')
    const written = await writeModel(back, out)
    expect(fs.readFileSync(out).equals(withUnknown)).toBe(true)
    expect(written.bytes).toBe(withUnknown.length)
  })
})

describe('weights wherever they live', () => {
  it('finds every Constant-node weight in Silero If subgraphs, and PaddleOCR Constant nodes', async () => {
    for (const key of ['sileroV5', 'ocrRec'] as const) {
      const model = await readModel(MODELS[key])
      const constantsInAllGraphs = [...allNodes(model)].filter((n) => n.node.opType === 'Constant').length
      const found = [...weights(model)]
      expect(model.graph!.initializer.length).toBe(0)
      expect(found.length).toBe(constantsInAllGraphs)
      if (key === 'sileroV5') expect(found.some((w) => w.path.length > 0)).toBe(true)
    }
  })

  it('walks If, Loop and Scan bodies and yields their initializers and Constant nodes', () => {
    const w = (name: string, v: number) => makeTensor(name, DataType.FLOAT, [2], Float32Array.of(v, v))
    const scanBody = makeGraph({
      node: [makeNode('Add', ['s_in', 'scan_w'], ['s_out'])],
      initializer: [w('scan_w', 3)],
      input: [makeValueInfo('s_in', DataType.FLOAT, [2])],
      output: [makeValueInfo('s_out', DataType.FLOAT, [2])],
    })
    const loopBody = makeGraph({
      node: [makeNode('Constant', [], ['loop_w'], {value: w('loop_w', 2)}), makeNode('Scan', ['x'], ['y'], {body: scanBody, num_scan_inputs: 1})],
      input: [makeValueInfo('i', DataType.INT64, []), makeValueInfo('cond', DataType.BOOL, [])],
      output: [makeValueInfo('cond', DataType.BOOL, [])],
    })
    const thenBranch = makeGraph({node: [makeNode('Constant', [], ['then_w'], {value: w('then_w', 1)})], output: [makeValueInfo('then_w', DataType.FLOAT, [2])]})
    const model = makeModel(
      makeGraph({
        node: [makeNode('If', ['c'], ['o'], {then_branch: thenBranch, else_branch: makeGraph({})}), makeNode('Loop', ['', ''], [], {body: loopBody})],
        initializer: [w('main_w', 0)],
      }),
    )
    expect([...walkGraphs(model)].map((g) => g.path.join('/'))).toEqual(['', 'If.then_branch', 'If.else_branch', 'Loop.body', 'Loop.body/Scan.body'])
    const found = [...weights(model)]
    expect(found.map((x) => `${x.name}:${x.kind}`).sort()).toEqual(['loop_w:constant', 'main_w:initializer', 'scan_w:initializer', 'then_w:constant'])
    expect(Array.from(tensorData(found.find((x) => x.name === 'scan_w')!.tensor) as Float32Array)).toEqual([3, 3])
  })
})

describe('bad model files', () => {
  const code = async (file: string) => {
    try {
      await readModel(file)
    } catch (error) {
      expect(error).toBeInstanceOf(ModelError)
      expect((error as ModelError).message).toContain(file)
      return (error as ModelError).code
    }
    throw new Error(`reading ${file} did not fail`)
  }

  it('missing file, directory, empty file', async () => {
    const dir = tmpDir()
    expect(await code(path.join(dir, 'nope.onnx'))).toBe('E_MODEL_MISSING')
    expect(await code(dir)).toBe('E_MODEL_IS_DIR')
    fs.writeFileSync(path.join(dir, 'empty.onnx'), '')
    expect(await code(path.join(dir, 'empty.onnx'))).toBe('E_MODEL_CORRUPT')
  })

  it('truncated and corrupt files', async () => {
    const dir = tmpDir()
    const bytes = fs.readFileSync(MODELS.blazeface)
    for (const [name, data] of [
      ['truncated.onnx', bytes.subarray(0, Math.floor(bytes.length * 0.6))],
      ['text.onnx', Buffer.from('<html><body>404 Not Found</body></html>\n')],
      ['garbage.onnx', Buffer.from(Array.from({length: 4096}, (_, i) => (i * 2654435761) >>> 24))],
    ] as const) {
      fs.writeFileSync(path.join(dir, name), data)
      expect(await code(path.join(dir, name))).toBe('E_MODEL_CORRUPT')
    }
  })

  it('missing, truncated or escaping external data', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'm.onnx')
    await writeModel(await readModel(MODELS.ocrCls), file, {externalData: 'always', externalThreshold: 1024})
    const data = fs.readFileSync(`${file}.data`)
    fs.writeFileSync(`${file}.data`, data.subarray(0, data.length - 100))
    await expect(readModel(file)).rejects.toThrow(/truncated/)
    fs.rmSync(`${file}.data`)
    await expect(readModel(file)).rejects.toThrow(/external data file not found/)

    const escaping = path.join(dir, 'escape.onnx')
    const model = await readModel(MODELS.ocrCls)
    await writeModel(model, escaping, {externalData: 'always', location: 'escape.data'})
    const bytes = fs.readFileSync(escaping)
    fs.writeFileSync(escaping, Buffer.from(bytes.toString('latin1').replaceAll('escape.data', '../ape.data'), 'latin1'))
    await expect(readModel(escaping)).rejects.toThrow(/leaves the model's directory/)
  })
})
