import {describe, expect, it} from 'vitest'
import type {IncomingMessage} from 'node:http'
import {Readable} from 'node:stream'
import {BufferPool, MAX_POOLED} from '../../src/util/buffer-pool.js'
import {readBody} from '../../src/delivery/serve/http-util.js'
import {decodeBytesElements, encodeBytesElements} from '../../src/delivery/serve/datatypes.js'
import {decodeInferRequest, type ModelSignature, splitBody} from '../../src/delivery/serve/infer-request.js'
import {encodeInferResponse} from '../../src/delivery/serve/infer-response.js'
import {decodeLoadRequest} from '../../src/delivery/serve/load-request.js'
import {HttpError} from '../../src/delivery/serve/http-error.js'

// The signature onnxruntime reports for the legacy Silero VAD (symbolic 'batch' shared by three inputs).
const SILERO: ModelSignature = {
  inputs: [
    {name: 'input', datatype: 'FP32', shape: [-1, -1], symbols: ['batch', 'sequence']},
    {name: 'sr', datatype: 'INT64', shape: [], symbols: []},
    {name: 'h', datatype: 'FP32', shape: [2, -1, 64], symbols: [undefined, 'batch', undefined]},
    {name: 'c', datatype: 'FP32', shape: [2, -1, 64], symbols: [undefined, 'batch', undefined]},
  ],
  outputs: [
    {name: 'output', datatype: 'FP32', shape: [-1, 1], symbols: ['batch', undefined]},
    {name: 'hn', datatype: 'FP32', shape: [2, -1, 64], symbols: [undefined, 'batch', undefined]},
  ],
}

function request(overrides: Record<string, unknown> = {}, batch = 1): Record<string, unknown> {
  return {
    inputs: [
      {name: 'input', datatype: 'FP32', shape: [batch, 4], data: Array.from({length: batch * 4}, (_, i) => i / 10)},
      {name: 'sr', datatype: 'INT64', shape: [], data: [16000]},
      {name: 'h', datatype: 'FP32', shape: [2, batch, 64], data: new Array(2 * batch * 64).fill(0)},
      {name: 'c', datatype: 'FP32', shape: [2, batch, 64], data: new Array(2 * batch * 64).fill(0)},
    ],
    ...overrides,
  }
}

function refusal(fn: () => unknown): HttpError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(HttpError)
    return error as HttpError
  }
  throw new Error('expected a refusal')
}

describe('infer request decoding', () => {
  it('decodes JSON tensors into typed arrays of the model types', () => {
    const r = decodeInferRequest(request({id: 'a1'}), Buffer.alloc(0), SILERO)
    expect(r.id).toBe('a1')
    const input = r.inputs.find((t) => t.name === 'input')!
    expect(input.type).toBe('float32')
    expect(input.data).toBeInstanceOf(Float32Array)
    expect(Array.from(input.data as Float32Array)).toEqual([0, 0.1, 0.2, 0.3].map((v) => Math.fround(v)))
    expect(r.inputs.find((t) => t.name === 'sr')!.data).toEqual(new BigInt64Array([16000n]))
    expect(r.outputs).toEqual([
      {name: 'output', binary: false},
      {name: 'hn', binary: false},
    ])
  })

  it('accepts data nested along the shape, and refuses nesting that does not follow it', () => {
    const body = request()
    ;(body.inputs as any[])[0].data = [[1, 2, 3, 4]]
    const r = decodeInferRequest(body, Buffer.alloc(0), SILERO)
    expect(Array.from(r.inputs[0]!.data as Float32Array)).toEqual([1, 2, 3, 4])
    const batch2 = request({}, 2)
    ;(batch2.inputs as any[])[0].data = [
      [1, 2, 3, 4],
      [5, 6, 7, 8],
    ]
    expect(Array.from(decodeInferRequest(batch2, Buffer.alloc(0), SILERO).inputs[0]!.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    // Eight numbers, but not two rows of four.
    ;(batch2.inputs as any[])[0].data = [[1, 2, 3, 4, 5], [6, 7, 8]]
    expect(refusal(() => decodeInferRequest(batch2, Buffer.alloc(0), SILERO)).message).toBe(`input 'input': "data", entry 0 has 5 elements but shape [2, 4] needs 4 there`)
    ;(batch2.inputs as any[])[0].data = [[1, 2, 3, 4], 5, 6, 7, 8]
    expect(refusal(() => decodeInferRequest(batch2, Buffer.alloc(0), SILERO)).message).toBe(`input 'input': "data" has 5 entries but shape [2, 4] needs 2`)
    // Deeper levels are checked too.
    const h = request()
    ;(h.inputs as any[])[2].data = [[new Array(64).fill(0)], [new Array(63).fill(0)]]
    expect(refusal(() => decodeInferRequest(h, Buffer.alloc(0), SILERO)).message).toBe(`input 'h': "data" at depth 1, entry 1 has 63 elements but shape [2, 1, 64] needs 64 there`)
    ;(h.inputs as any[])[2].data = [[new Array(64).fill(0)], [new Array(63).fill(0), [0]]]
    expect(refusal(() => decodeInferRequest(h, Buffer.alloc(0), SILERO)).message).toBe(`input 'h': "data", entry 1 has 2 elements but shape [2, 1, 64] needs 1 there`)
  })

  it('names the tensor and the problem for every kind of mismatch', () => {
    const cases: Array<[string, (b: any) => void, RegExp]> = [
      ['unknown input', (b) => (b.inputs[0].name = 'audio'), /unknown input 'audio'.*input, sr, h, c/],
      ['duplicate', (b) => b.inputs.push(b.inputs[1]), /'sr' is given more than once/],
      ['missing', (b) => b.inputs.pop(), /missing input 'c'/],
      ['datatype', (b) => (b.inputs[0].datatype = 'FP64'), /'input': datatype FP64 does not match the model's FP32/],
      ['bad datatype', (b) => (b.inputs[0].datatype = 'FLOAT'), /datatype must be one of BOOL/],
      ['rank', (b) => (b.inputs[2].shape = [2, 64]), /'h': shape \[2, 64\] has rank 2 but the model expects rank 3/],
      ['fixed dim', (b) => (b.inputs[2].shape = [3, 1, 64]), /'h': dim 0 is 3 but the model expects 2/],
      ['negative dim', (b) => (b.inputs[0].shape = [-1, 4]), /shape must be an array of non-negative integers/],
      ['element count', (b) => b.inputs[0].data.pop(), /'input': shape \[1, 4\] needs 4 elements but "data" has 3/],
      ['element type', (b) => (b.inputs[0].data[2] = 'x'), /'input': element 2 is "x": expected a number for FP32/],
      ['integer type', (b) => (b.inputs[1].data = [1.5]), /'sr': element 0 is 1.5: expected an integer for INT64/],
      ['no data', (b) => delete b.inputs[1].data, /'sr': missing "data"/],
      ['unknown output', (b) => (b.outputs = [{name: 'cn'}]), /unknown output 'cn'; the model's outputs are: output, hn/],
      ['inputs not array', (b) => (b.inputs = {}), /"inputs" must be a non-empty array/],
      ['binary beyond body', (b) => (b.inputs[1] = {name: 'sr', datatype: 'INT64', shape: [], parameters: {binary_data_size: 8}}), /binary_data_size 8 at offset 0 runs past the end/],
    ]
    for (const [what, mutate, message] of cases) {
      const body = request()
      mutate(body)
      const e = refusal(() => decodeInferRequest(body, Buffer.alloc(0), SILERO))
      expect(e.status, what).toBe(400)
      expect(e.message, what).toMatch(message)
    }
  })

  it('checks that inputs agree on a shared symbolic dim', () => {
    const body = request()
    ;(body.inputs as any[])[2] = {name: 'h', datatype: 'FP32', shape: [2, 3, 64], data: new Array(2 * 3 * 64).fill(0)}
    const e = refusal(() => decodeInferRequest(body, Buffer.alloc(0), SILERO))
    expect(e.message).toMatch(/'h': dim 1 \('batch'\) is 3 but input 'input' gives 'batch' = 1/)
  })

  it('decodes the binary extension and refuses truncated or surplus bytes', () => {
    const data = new Float32Array([0.5, 1.5, 2.5, 3.5])
    const header = request()
    ;(header.inputs as any[])[0] = {name: 'input', datatype: 'FP32', shape: [1, 4], parameters: {binary_data_size: 16}}
    const json = Buffer.from(JSON.stringify(header))
    const body = Buffer.concat([json, Buffer.from(data.buffer)])
    const {json: parsed, binary} = splitBody(body, String(json.length))
    const r = decodeInferRequest(parsed, binary, SILERO)
    expect(Array.from(r.inputs[0]!.data as Float32Array)).toEqual([0.5, 1.5, 2.5, 3.5])

    const truncated = splitBody(body.subarray(0, body.length - 3), String(json.length))
    expect(refusal(() => decodeInferRequest(truncated.json, truncated.binary, SILERO)).message).toMatch(/runs past the end of the binary data \(13 bytes\)/)
    const surplus = splitBody(Buffer.concat([body, Buffer.alloc(4)]), String(json.length))
    expect(refusal(() => decodeInferRequest(surplus.json, surplus.binary, SILERO)).message).toMatch(/4 bytes of binary data that no input claims/)
    ;(header.inputs as any[])[0].parameters.binary_data_size = 12
    const short = Buffer.from(JSON.stringify(header))
    const wrong = splitBody(Buffer.concat([short, Buffer.alloc(12)]), String(short.length))
    expect(refusal(() => decodeInferRequest(wrong.json, wrong.binary, SILERO)).message).toMatch(/needs 16 bytes but binary_data_size is 12/)
    expect(refusal(() => splitBody(body, String(body.length + 1))).message).toMatch(/Inference-Header-Content-Length is \d+ but the body has only/)
    expect(refusal(() => splitBody(Buffer.from('{"inputs": ['), undefined)).message).toMatch(/not valid JSON/)
  })

  it('keeps aligned binary tensors in the request body in place, copies unaligned ones, and recycles buffers within a bound', () => {
    const data = new Float32Array([0.5, 1.5, 2.5, 3.5])
    const header = request()
    ;(header.inputs as any[])[0] = {name: 'input', datatype: 'FP32', shape: [1, 4], parameters: {binary_data_size: 16}}
    const buffers = new BufferPool(64 * 1024)
    for (const pad of [0, 1, 2, 3]) {
      // Spaces after the JSON header move the binary part to each alignment in turn.
      const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad))
      const body = Buffer.from(buffers.take(json.length + 16), 0, json.length + 16)
      json.copy(body)
      Buffer.from(data.buffer).copy(body, json.length)
      const {json: parsed, binary} = splitBody(body, String(json.length))
      const t = decodeInferRequest(parsed, binary, SILERO, {inPlace: true, buffers}).inputs[0]!.data as Float32Array
      expect(Array.from(t)).toEqual([0.5, 1.5, 2.5, 3.5])
      expect(t.buffer === body.buffer).toBe(json.length % 4 === 0)
      buffers.give(body.buffer as ArrayBuffer)
      if (t.buffer !== body.buffer) buffers.give(t.buffer as ArrayBuffer)
    }
    // A returned buffer is handed out again; idle memory never exceeds the bound.
    const a = buffers.take(5000)
    expect(a.byteLength).toBe(8192)
    buffers.give(a)
    expect(buffers.take(6000)).toBe(a)
    for (let i = 0; i < 20; i++) buffers.give(new ArrayBuffer(16384))
    expect(buffers.idle).toBeLessThanOrEqual(64 * 1024)
    buffers.give(new ArrayBuffer(5000))
    expect(buffers.idle).toBeLessThanOrEqual(64 * 1024)
    // A large body gets a buffer of exactly its size, which is not kept.
    const big = new BufferPool()
    const b = big.take(MAX_POOLED + 1)
    expect(b.byteLength).toBe(MAX_POOLED + 1)
    big.give(b)
    expect(big.idle).toBe(0)
  })

  it('reads a body into a recycled buffer where the binary tensors after its JSON header fall 8-byte aligned', async () => {
    const buffers = new BufferPool()
    for (const headerLength of [0, 1, 5, 8, 13, 133]) {
      const body = Buffer.from(Array.from({length: headerLength + 40}, (_, i) => i % 251))
      // Delivered in uneven chunks, as a socket would.
      const req = Object.assign(Readable.from([body.subarray(0, 7), body.subarray(7, 30), body.subarray(30)]), {headers: {'content-length': String(body.length)}})
      const read = await readBody(req as unknown as IncomingMessage, 1 << 20, buffers, headerLength)
      expect(read.pooled).toBe(true)
      expect(read.bytes.equals(body)).toBe(true)
      expect(read.bytes.subarray(headerLength).byteOffset % 8).toBe(0)
      buffers.give(read.bytes.buffer as ArrayBuffer)
    }
  })

  it('round-trips BYTES elements and refuses a malformed length prefix', () => {
    const enc = encodeBytesElements(['héllo', '', 'x'])
    expect(decodeBytesElements(enc)).toEqual(['héllo', '', 'x'])
    expect(decodeBytesElements(enc.subarray(0, enc.length - 1))).toMatch(/element 2 claims 1 bytes but only 0 remain/)
  })
})

describe('infer response encoding', () => {
  it('puts binary_data outputs after the JSON header and the rest inline', () => {
    const outputs = new Map([
      ['output', {name: 'output', type: 'float32' as const, dims: [1, 1], data: new Float32Array([0.25])}],
      ['hn', {name: 'hn', type: 'float32' as const, dims: [1, 2], data: new Float32Array([1, Number.NaN])}],
    ])
    const r = encodeInferResponse({modelName: 'vad', modelVersion: '3', id: 'q'}, [
      {name: 'hn', binary: false},
      {name: 'output', binary: true},
    ], outputs)
    const n = Number(r.headers['inference-header-content-length'])
    const body = Buffer.concat(r.chunks)
    const header = JSON.parse(body.subarray(0, n).toString())
    expect(header).toEqual({
      model_name: 'vad',
      model_version: '3',
      id: 'q',
      outputs: [
        {name: 'hn', datatype: 'FP32', shape: [1, 2], data: [1, null]},
        {name: 'output', datatype: 'FP32', shape: [1, 1], parameters: {binary_data_size: 4}},
      ],
    })
    expect(body.subarray(n).readFloatLE(0)).toBe(0.25)
  })
})

describe('repository load request', () => {
  it('groups file: entries by version and requires a config with them', () => {
    const model = Buffer.from('not really onnx')
    const body = Buffer.from(JSON.stringify({parameters: {config: JSON.stringify({name: 'm', backend: 'onnxruntime'}), 'file:2/model.onnx': model.toString('base64'), 'file:2/model.sig': 'e30='}}))
    const versions = decodeLoadRequest('m', body)
    expect(versions.map((v) => v.version)).toEqual(['2'])
    const origin = versions[0]!.origin as {kind: 'memory'; files: Map<string, Uint8Array>}
    expect([...origin.files.keys()]).toEqual(['model.onnx', 'model.sig'])
    expect(Buffer.from(origin.files.get('model.onnx')!).equals(model)).toBe(true)

    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {'file:1/model.onnx': 'AAAA'}})))).message).toMatch(/config" is required/)
    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {config: '{"name":"other"}'}})))).message).toMatch(/does not match the model 'm'/)
    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {config: '{"max_batch_size":8}'}})))).message).toMatch(/max_batch_size not supported/)
    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {config: '{}', 'file:../model.onnx': 'AAAA'}})))).message).toMatch(/no empty, '\.' or '\.\.' segments/)
    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {config: '{}', 'file:1/model.onnx': '***'}})))).message).toMatch(/must be a base64 string/)
    expect(refusal(() => decodeLoadRequest('m', Buffer.from(JSON.stringify({parameters: {config: '{}', unload_dependents: true}})))).message).toMatch(/load parameter unload_dependents not supported/)
  })
})
