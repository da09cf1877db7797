import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {pathToFileURL} from 'node:url'
import ort from 'onnxruntime-node'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import {modelToBytes} from '../../src/onnx/model.js'
import {fixture, MODELS} from '../helpers/fixtures.js'
import {binaryBody, logLines, readBinaryResponse, type ServeProcess, startServe} from './helpers.js'
import {blazefaceInput, maxAbsDiff, runDirect, speechWindow} from './inputs.js'

const TOKEN = 'serve-test-token-0123456789'
let server: ServeProcess
let repo: string

const post = (url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(url, {method: 'POST', body: typeof body === 'string' || Buffer.isBuffer(body) ? (body as string) : JSON.stringify(body), headers: {'content-type': 'application/json', ...headers}})
const auth = {authorization: `Bearer ${TOKEN}`}

beforeAll(async () => {
  repo = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-repo-'))
  await fsp.copyFile(MODELS.blazeface, path.join(repo, 'blazeface.onnx'))
  await fsp.copyFile(MODELS.sileroV5, path.join(repo, 'vad.onnx'))
  await fsp.mkdir(path.join(repo, 'cls', '1'), {recursive: true})
  await fsp.mkdir(path.join(repo, 'cls', '2'), {recursive: true})
  await fsp.copyFile(MODELS.ocrCls, path.join(repo, 'cls', '1', 'model.onnx'))
  await fsp.copyFile(MODELS.ocrCls, path.join(repo, 'cls', '2', 'model.onnx'))
  server = await startServe([repo, '--max-body', String(4 * 1024 * 1024), '--threads', '2'], {KILN_SERVE_TOKEN: TOKEN})
})

afterAll(async () => {
  await server?.stop()
  if (repo) await fsp.rm(repo, {recursive: true, force: true})
})

describe('kiln serve: health and metadata', () => {
  it('answers health, server metadata and model metadata with -1 for dynamic dims', async () => {
    expect((await fetch(`${server.url}/v2/health/live`)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)
    const meta = await (await fetch(`${server.url}/v2`)).json()
    expect(meta).toMatchObject({name: 'kiln', extensions: expect.arrayContaining(['binary_tensor_data', 'model_repository'])})

    const face = await (await fetch(`${server.url}/v2/models/blazeface`)).json()
    expect(face).toMatchObject({name: 'blazeface', versions: ['1'], platform: 'onnxruntime_onnx', inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3]}]})
    expect(face.outputs).toHaveLength(4)
    const vad = await (await fetch(`${server.url}/v2/models/vad`)).json()
    expect(vad.inputs).toEqual([
      {name: 'input', datatype: 'FP32', shape: [-1, -1]},
      {name: 'state', datatype: 'FP32', shape: [2, -1, 128]},
      {name: 'sr', datatype: 'INT64', shape: []},
    ])
    const cls = await (await fetch(`${server.url}/v2/models/cls`)).json()
    expect(cls.versions).toEqual(['1', '2'])
    expect(cls.inputs[0].shape).toEqual([-1, 3, -1, -1])
    expect((await fetch(`${server.url}/v2/models/cls/versions/1`)).status).toBe(200)
  })

  it('answers model readiness by status code', async () => {
    expect((await fetch(`${server.url}/v2/models/vad/ready`)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/models/cls/versions/2/ready`)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/models/cls/versions/7/ready`)).status).toBe(404)
    const unknown = await fetch(`${server.url}/v2/models/nope/ready`)
    expect(unknown.status).toBe(404)
    expect(await unknown.json()).toEqual({error: "unknown model 'nope'"})
  })
})

describe('kiln serve: infer', () => {
  it('returns what onnxruntime returns directly, in JSON and with the binary extension', async () => {
    const input = await blazefaceInput(3)
    const direct = await runDirect(MODELS.blazeface, {'input:0': new ort.Tensor('float32', input, [1, 128, 128, 3])})

    const res = await post(`${server.url}/v2/models/blazeface/infer`, {id: 'face-3', inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3], data: Array.from(input)}]})
    expect(res.status).toBe(200)
    const json = await res.json()
    expect(json).toMatchObject({model_name: 'blazeface', model_version: '1', id: 'face-3'})
    expect(json.outputs.map((o: any) => o.name)).toEqual(['Identity:0', 'Identity_1:0', 'Identity_2:0', 'Identity_3:0'])
    for (const o of json.outputs) {
      const want = direct[o.name]!
      expect(o.shape).toEqual([...want.dims])
      expect(maxAbsDiff(o.data, want.data as Float32Array)).toBeLessThanOrEqual(1e-5)
    }

    // Binary in, one output binary and one inline.
    const {body, headerLength} = binaryBody(
      {inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3], parameters: {binary_data_size: input.byteLength}}], outputs: [{name: 'Identity:0', parameters: {binary_data: true}}, {name: 'Identity_2:0'}]},
      [input],
    )
    const bin = await fetch(`${server.url}/v2/models/blazeface/versions/1/infer`, {method: 'POST', body, headers: {'inference-header-content-length': String(headerLength), 'content-type': 'application/octet-stream'}})
    expect(bin.status).toBe(200)
    const {header, tail} = await readBinaryResponse(bin)
    expect(header.outputs[0]).toEqual({name: 'Identity:0', datatype: 'FP32', shape: [1, 512, 1], parameters: {binary_data_size: 512 * 4}})
    const scores = new Float32Array(tail.buffer.slice(tail.byteOffset, tail.byteOffset + tail.length))
    expect(Array.from(scores)).toEqual(json.outputs[0].data)
    expect(header.outputs[1].data).toEqual(json.outputs[2].data)
  })

  it('runs a model with an int64 scalar input and state, on real speech', async () => {
    const audio = await speechWindow(fixture('data/speech/cards-001.wav'))
    const state = new Float32Array(2 * 1 * 128)
    const direct = await runDirect(MODELS.sileroV5, {input: new ort.Tensor('float32', audio, [1, 512]), state: new ort.Tensor('float32', state, [2, 1, 128]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), [])})
    const res = await post(`${server.url}/v2/models/vad/infer`, {
      inputs: [
        {name: 'input', datatype: 'FP32', shape: [1, 512], data: Array.from(audio)},
        {name: 'state', datatype: 'FP32', shape: [2, 1, 128], data: Array.from(state)},
        {name: 'sr', datatype: 'INT64', shape: [], data: [16000]},
      ],
      parameters: {binary_data_output: false},
    })
    expect(res.status).toBe(200)
    const json = await res.json()
    const out = json.outputs.find((o: any) => o.name === 'output')
    expect(out.shape).toEqual([1, 1])
    expect(maxAbsDiff(out.data, direct.output!.data as Float32Array)).toBeLessThanOrEqual(1e-6)
    expect(json.outputs.find((o: any) => o.name === 'stateN').shape).toEqual([2, 1, 128])
  })

  it('refuses malformed requests with a precise 400 and keeps serving', async () => {
    const url = `${server.url}/v2/models/vad/infer`
    const cases: Array<[unknown, RegExp]> = [
      ['{"inputs": [', /not valid JSON/],
      [{inputs: [{name: 'input', datatype: 'FP32', shape: [1, 512], data: [1, 2]}]}, /'input': shape \[1, 512\] needs 512 elements but "data" has 2/],
      [{inputs: [{name: 'input', datatype: 'INT32', shape: [1, 2], data: [1, 2]}]}, /'input': datatype INT32 does not match the model's FP32/],
      [{inputs: [{name: 'state', datatype: 'FP32', shape: [3, 1, 128], data: []}]}, /'state': dim 0 is 3 but the model expects 2/],
      [{inputs: [{name: 'input', datatype: 'FP32', shape: [1, 2], data: [1, 2]}]}, /missing inputs 'state', 'sr'/],
    ]
    for (const [body, message] of cases) {
      const res = await post(url, body)
      expect(res.status).toBe(400)
      expect((await res.json()).error).toMatch(message)
    }
    // A binary body cut short.
    const {body, headerLength} = binaryBody({inputs: [{name: 'input', datatype: 'FP32', shape: [1, 512], parameters: {binary_data_size: 2048}}]}, [new Float32Array(100)])
    const cut = await fetch(url, {method: 'POST', body, headers: {'inference-header-content-length': String(headerLength)}})
    expect(cut.status).toBe(400)
    expect((await cut.json()).error).toMatch(/runs past the end of the binary data/)
    // Valid by metadata (dynamic H and W) but empty: onnxruntime's Conv refuses it.
    const tiny = await post(`${server.url}/v2/models/cls/infer`, {inputs: [{name: 'x', datatype: 'FP32', shape: [1, 3, 0, 192], data: []}]})
    expect(tiny.status).toBe(400)
    expect((await tiny.json()).error).toMatch(/^the model refused the inputs: /)
    expect((await fetch(`${server.url}/v2/health/live`)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/nothing`)).status).toBe(404)
    const wrongMethod = await fetch(`${server.url}/v2/models/vad/infer`)
    expect(wrongMethod.status).toBe(405)
  })

  it('refuses an oversized body with 413 and huge headers with 431', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 0x20)
    const res = await fetch(`${server.url}/v2/models/blazeface/infer`, {method: 'POST', body: big, headers: {'content-type': 'application/json'}})
    expect(res.status).toBe(413)
    expect((await res.json()).error).toMatch(/exceeds the limit of 4194304 bytes/)
    const huge = await fetch(`${server.url}/v2/health/live`, {headers: {'x-padding': 'a'.repeat(64 * 1024)}}).catch((e: Error) => e)
    // Node answers 431 and closes; some clients see only the closed socket.
    if (huge instanceof Response) expect(huge.status).toBe(431)
    expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)
  })
})

describe('kiln serve: model repository API', () => {
  it('refuses requests without the token or with a wrong one, and changes nothing', async () => {
    expect((await post(`${server.url}/v2/repository/index`, {})).status).toBe(401)
    expect((await post(`${server.url}/v2/repository/models/vad/unload`, {}, {authorization: 'Bearer wrong-token-xyz'})).status).toBe(401)
    const push = await post(`${server.url}/v2/repository/models/intruder/load`, {parameters: {config: '{}', 'file:1/model.onnx': (await fsp.readFile(MODELS.ocrCls)).toString('base64')}}, {'x-api-key': 'nope-nope-nope'})
    expect(push.status).toBe(401)
    expect((await fetch(`${server.url}/v2/models/vad/ready`)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/models/intruder`)).status).toBe(404)
    const index = await (await post(`${server.url}/v2/repository/index`, {}, {'x-api-key': TOKEN})).json()
    expect(index.map((e: any) => `${e.name}/${e.version}/${e.state}`)).toEqual(['blazeface/1/READY', 'cls/1/READY', 'cls/2/READY', 'vad/1/READY'])
  })

  it('unloads, reloads from the repository, and loads pushed files', async () => {
    expect((await post(`${server.url}/v2/repository/models/vad/unload`, {}, auth)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/models/vad/ready`)).status).toBe(400)
    const idx = await (await post(`${server.url}/v2/repository/index`, {}, auth)).json()
    expect(idx.find((e: any) => e.name === 'vad')).toEqual({name: 'vad', state: 'UNAVAILABLE', reason: 'unloaded'})
    expect((await post(`${server.url}/v2/repository/models/vad/load`, {}, auth)).status).toBe(200)
    expect((await fetch(`${server.url}/v2/models/vad/ready`)).status).toBe(200)

    const bytes = await fsp.readFile(MODELS.ocrCls)
    const load = await post(`${server.url}/v2/repository/models/pushed/load`, {parameters: {config: JSON.stringify({name: 'pushed', backend: 'onnxruntime'}), 'file:3/model.onnx': bytes.toString('base64')}}, auth)
    expect(load.status).toBe(200)
    const meta = await (await fetch(`${server.url}/v2/models/pushed`)).json()
    expect(meta.versions).toEqual(['3'])
    const x = new Float32Array(3 * 48 * 192).map((_, i) => (i % 97) / 97)
    const res = await post(`${server.url}/v2/models/pushed/versions/3/infer`, {inputs: [{name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192], data: Array.from(x)}]})
    expect(res.status).toBe(200)
    const direct = await runDirect(MODELS.ocrCls, {x: new ort.Tensor('float32', x, [1, 3, 48, 192])})
    expect(maxAbsDiff((await res.json()).outputs[0].data, direct['softmax_0.tmp_0']!.data as Float32Array)).toBeLessThanOrEqual(1e-6)

    // A model that declares no input shape at all: any rank goes, where a scalar would need [].
    const rankless = modelToBytes(makeModel(makeGraph({node: [makeNode('Neg', ['x'], ['y'])], input: [makeValueInfo('x', 1)], output: [makeValueInfo('y', 1)]}), {'': 13}))
    expect((await post(`${server.url}/v2/repository/models/neg/load`, {parameters: {config: '{}', 'file:1/model.onnx': Buffer.from(rankless).toString('base64')}}, auth)).status).toBe(200)
    expect((await (await fetch(`${server.url}/v2/models/neg`)).json()).inputs).toEqual([{name: 'x', datatype: 'FP32', shape: [-1]}])
    const neg = await post(`${server.url}/v2/models/neg/infer`, {inputs: [{name: 'x', datatype: 'FP32', shape: [2, 1, 2], data: [1, -2, 3.5, 0.25]}]})
    expect(await neg.json()).toMatchObject({outputs: [{name: 'y', datatype: 'FP32', shape: [2, 1, 2], data: [-1, 2, -3.5, -0.25]}]})

    const garbage = await post(`${server.url}/v2/repository/models/broken/load`, {parameters: {config: '{}', 'file:1/model.onnx': Buffer.from('not a model').toString('base64')}}, auth)
    expect(garbage.status).toBe(400)
    expect((await garbage.json()).error).toMatch(/failed to load 'broken'/)
    const missing = await post(`${server.url}/v2/repository/models/ghost/load`, {}, auth)
    expect(missing.status).toBe(404)
  })
})

describe('kiln serve: observability', () => {
  it('exposes Prometheus metrics and writes JSON logs without secrets', async () => {
    // Requests for models that do not exist are counted without their made-up names: they must
    // not add series without end.
    for (const name of ['no-such-model-1', 'no-such-model-2']) {
      expect((await fetch(`${server.url}/v2/models/${name}/ready`)).status).toBe(404)
      expect((await fetch(`${server.url}/v2/models/${name}/infer`, {method: 'POST', body: '{}'})).status).toBe(404)
    }
    const text = await (await fetch(`${server.url}/metrics`)).text()
    expect(text).not.toContain('no-such-model')
    expect(text).toMatch(/^kiln_serve_infer_requests_total\{model="",version="",status="404"\} 2$/m)
    expect(text).toMatch(/^# TYPE kiln_serve_infer_requests_total counter$/m)
    expect(text).toMatch(/^kiln_serve_infer_requests_total\{model="blazeface",version="1",status="200"\} 2$/m)
    expect(text).toMatch(/^kiln_serve_infer_requests_total\{model="vad",version="",status="400"\} [1-9]\d*$/m)
    expect(text).toMatch(/^kiln_serve_request_duration_seconds_bucket\{model="blazeface",version="1",le="\+Inf"\} 2$/m)
    expect(text).toMatch(/^kiln_serve_queue_depth 0$/m)
    expect(text).toMatch(/^kiln_serve_requests_total\{route="repository",model="",status="401"\} [1-9]/m)
    const lines = logLines(server.stderr())
    expect(lines[0]).toMatchObject({level: 'info', msg: 'listening', url: server.url, pool: 1, threads: 2})
    expect(lines.find((l) => l.msg === 'ready')).toMatchObject({models: 3})
    expect(lines.filter((l) => l.msg === 'model ready').map((l) => l.model)).toEqual(expect.arrayContaining(['blazeface', 'vad', 'cls', 'pushed']))
    expect(lines.some((l) => l.msg === 'request' && l.status === 401)).toBe(true)
    expect(server.stderr()).not.toContain(TOKEN)
  })
})

describe('kiln serve: a file:// repository, and no token', () => {
  it('serves a file:// URL with escaped characters, and disables the repository API without a token (403)', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln serve repo '))
    await fsp.copyFile(MODELS.blazeface, path.join(dir, 'face.onnx'))
    const url = pathToFileURL(dir).href
    expect(url).toContain('%20')
    const plain = await startServe([url])
    try {
      expect((await fetch(`${plain.url}/v2/models/face/ready`)).status).toBe(200)
      const index = await post(`${plain.url}/v2/repository/index`, {}, auth)
      expect(index.status).toBe(403)
      expect((await index.json()).error).toMatch(/disabled: the server was started without a token/)
      const push = await post(`${plain.url}/v2/repository/models/intruder/load`, {parameters: {config: '{}', 'file:1/model.onnx': (await fsp.readFile(MODELS.ocrCls)).toString('base64')}}, auth)
      expect(push.status).toBe(403)
      expect((await fetch(`${plain.url}/v2/models/intruder`)).status).toBe(404)
    } finally {
      await plain.stop()
      await fsp.rm(dir, {recursive: true, force: true})
    }
  })
})
