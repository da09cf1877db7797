import * as fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {MODELS} from '../helpers/fixtures.js'
import {binaryBody, logLines, readBinaryResponse, startServe} from './helpers.js'
import {blazefaceInput} from './inputs.js'

let repo: string

/** A PP-OCR detection request big enough to keep a single worker busy for a while (binary extension). */
function detectionRequest(side: number): {body: Buffer; headers: Record<string, string>} {
  const x = new Float32Array(3 * side * side).map((_, i) => ((i * 7919) % 255) / 255)
  const {body, headerLength} = binaryBody({inputs: [{name: 'x', datatype: 'FP32', shape: [1, 3, side, side], parameters: {binary_data_size: x.byteLength}}], parameters: {binary_data_output: true}}, [x])
  return {body, headers: {'inference-header-content-length': String(headerLength), 'content-type': 'application/octet-stream'}}
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text)
  return m ? Number(m[1]) : Number.NaN
}

beforeAll(async () => {
  repo = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-load-'))
  await fsp.copyFile(MODELS.ocrDet, path.join(repo, 'det.onnx'))
  await fsp.copyFile(MODELS.blazeface, path.join(repo, 'face.onnx'))
})

afterAll(async () => {
  if (repo) await fsp.rm(repo, {recursive: true, force: true})
})

// With one inference worker, and with inference on the HTTP thread itself (--pool 0).
describe.each(['1', '0'])('kiln serve under load, --pool %s', (pool) => {
  it('answers 429 with Retry-After once the queue is full, and serves the rest', async () => {
    const server = await startServe([repo, '--pool', pool, '--threads', '1', '--max-queue', '1'])
    try {
      const req = detectionRequest(480)
      const responses = await Promise.all(Array.from({length: 8}, () => fetch(`${server.url}/v2/models/det/infer`, {method: 'POST', ...req})))
      const statuses = responses.map((r) => r.status)
      expect(statuses.every((s) => s === 200 || s === 429), statuses.join(',')).toBe(true)
      const refused = responses.filter((r) => r.status === 429)
      expect(refused.length).toBeGreaterThanOrEqual(1)
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2)
      // Room for one run (inline) or two in the worker's hands (a slow model), and one queued: the
      // refusals come before a body is read, counting bodies still being read as queued.
      const room = pool === '0' ? 2 : 3
      for (const r of refused) {
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
        const m = /^too many requests: (\d+) in progress and (\d+) queued$/.exec((await r.json()).error)
        expect(m).not.toBeNull()
        expect(Number(m![1]) + Number(m![2])).toBe(room)
      }
      const text = await (await fetch(`${server.url}/metrics`)).text()
      expect(text).toContain(`kiln_serve_infer_requests_total{model="det",version="",status="429"} ${refused.length}`)
    } finally {
      await server.stop()
    }
  })

  it('counts bodies still being read as queued, and refuses before reading a body', async () => {
    const server = await startServe([repo, '--pool', pool, '--threads', '1', '--max-queue', '1'])
    const sockets: net.Socket[] = []
    /** An infer request that sends its headers and `bodyBytes` of a declared 5 MB body, and the first answer line, if any comes in `ms`. */
    const upload = (bodyBytes: number, ms: number) =>
      new Promise<string>((resolve, reject) => {
        const {port, hostname} = new URL(server.url)
        const socket = net.connect(Number(port), hostname, () => {
          socket.write(`POST /v2/models/det/infer HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/octet-stream\r\ncontent-length: 5000000\r\n\r\n`)
          if (bodyBytes > 0) socket.write(Buffer.alloc(bodyBytes, 32))
        })
        sockets.push(socket)
        let text = ''
        socket.on('data', (d: Buffer) => {
          text += d.toString('latin1')
          if (text.includes('\r\n')) resolve(text.split('\r\n')[0]!)
        })
        socket.on('error', reject)
        setTimeout(() => resolve(text.split('\r\n')[0]!), ms)
      })
    try {
      // Room for one run (inline) or two in the worker's hands, and one queued: that many uploads
      // that stall halfway are let in, and wait for the rest of their bodies.
      const room = pool === '0' ? 2 : 3
      const stalled = await Promise.all(Array.from({length: room}, () => upload(1000, 500)))
      expect(stalled).toEqual(Array.from({length: room}, () => ''))
      // The next is refused at once, without a byte of its body read.
      expect(await upload(0, 5000)).toBe('HTTP/1.1 429 Too Many Requests')
    } finally {
      for (const s of sockets) s.destroy()
      await server.stop()
    }
  })

  it('finishes in-flight requests on SIGTERM, then exits 0', async () => {
    const server = await startServe([repo, '--pool', pool, '--threads', '1', '--max-queue', '8'])
    const req = detectionRequest(480)
    const inflight = Array.from({length: 3}, () => fetch(`${server.url}/v2/models/det/infer`, {method: 'POST', ...req}))
    if (pool === '0') {
      // In line, /metrics waits while a model runs: give the server time to take the requests
      // (three 480×480 detections keep it busy far longer), and check none has finished yet.
      let done = 0
      for (const p of inflight) void p.then(() => done++)
      await new Promise((r) => setTimeout(r, 150))
      expect(done).toBe(0)
    } else {
      for (let i = 0; i < 200 && (await metric(server.url, 'kiln_serve_running')) < 1; i++) await new Promise((r) => setTimeout(r, 25))
      expect(await metric(server.url, 'kiln_serve_running')).toBeGreaterThanOrEqual(1)
    }
    const stopped = server.stop('SIGTERM')
    const results = await Promise.all(inflight)
    expect(results.map((r) => r.status)).toEqual([200, 200, 200])
    const {header} = await (async () => {
      const buf = Buffer.from(await results[2]!.arrayBuffer())
      return {header: JSON.parse(buf.subarray(0, Number(results[2]!.headers.get('inference-header-content-length'))).toString())}
    })()
    expect(header.outputs[0]).toMatchObject({name: 'sigmoid_0.tmp_0', shape: [1, 1, 480, 480]})
    const {code, stderr} = await stopped
    expect(code).toBe(0)
    expect(logLines(stderr).some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM')).toBe(true)
    expect(logLines(stderr).find((l) => l.msg === 'stopped')).toMatchObject({level: 'info', drained: true, abandoned: 0})
    await expect(fetch(`${server.url}/v2/health/live`)).rejects.toThrow()
  })

  it('cuts off what is still running when the drain timeout passes, and says so', async () => {
    const server = await startServe([repo, '--pool', pool, '--threads', '1', '--max-queue', '8', '--drain-timeout', '0'])
    const req = detectionRequest(640)
    const inflight = Array.from({length: 3}, () => fetch(`${server.url}/v2/models/det/infer`, {method: 'POST', ...req}).then((r) => r.status, () => 'cut off'))
    if (pool === '0') await new Promise((r) => setTimeout(r, 150))
    else for (let i = 0; i < 200 && (await metric(server.url, 'kiln_serve_running')) < 1; i++) await new Promise((r) => setTimeout(r, 25))
    const {code, stderr} = await server.stop('SIGTERM')
    expect(code).toBe(0)
    const statuses = await Promise.all(inflight)
    expect(statuses).toContain('cut off')
    const stopped = logLines(stderr).find((l) => l.msg === 'stopped')
    expect(stopped).toMatchObject({level: 'warn', drained: false})
    expect(stopped!.abandoned).toBeGreaterThanOrEqual(1)
  })

  it('sustains a short autocannon load with no errors', async () => {
    const server = await startServe([repo, '--pool', pool, '--threads', '1', '--max-queue', '64'])
    try {
      const input = await blazefaceInput(0)
      const {body, headerLength} = binaryBody({inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3], parameters: {binary_data_size: input.byteLength}}], parameters: {binary_data_output: true}}, [input])
      const result = await autocannon({
        url: `${server.url}/v2/models/face/infer`,
        method: 'POST',
        body,
        headers: {'inference-header-content-length': String(headerLength), 'content-type': 'application/octet-stream'},
        connections: 4,
        duration: 3,
      })
      expect(result.errors).toBe(0)
      expect(result.timeouts).toBe(0)
      expect(result.non2xx).toBe(0)
      expect(result.requests.total).toBeGreaterThan(20)
      expect(result.latency.p99).toBeGreaterThan(0)
      expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200)
      // The HTTP thread's new space keeps its first size through the load (see tuneHeapForServing;
      // starting a worker thread resets V8's flags, and they are set again): grown, it brings on a
      // full collection every few dozen requests.
      const heap = await (await fetch(`${server.url}/metrics`)).text()
      const newSpace = Number(/^kiln_serve_heap_space_bytes\{space="new_space"\} (\d+)$/m.exec(heap)?.[1])
      expect(newSpace).toBeGreaterThan(0)
      expect(newSpace).toBeLessThanOrEqual(4 * 1024 * 1024)
      // After the load (recycled request buffers and all), answers are still exactly onnxruntime's.
      const ort = await import('onnxruntime-node')
      const session = await ort.InferenceSession.create(MODELS.blazeface)
      const direct = await session.run({'input:0': new ort.Tensor('float32', input, [1, 128, 128, 3])})
      await session.release()
      const res = await fetch(`${server.url}/v2/models/face/infer`, {method: 'POST', body, headers: {'inference-header-content-length': String(headerLength), 'content-type': 'application/octet-stream'}})
      const {header, tail} = await readBinaryResponse(res)
      let offset = 0
      for (const o of header.outputs) {
        const got = new Float32Array(tail.buffer.slice(tail.byteOffset + offset, tail.byteOffset + offset + o.parameters.binary_data_size))
        expect(Array.from(got)).toEqual(Array.from(direct[o.name]!.data as Float32Array))
        offset += o.parameters.binary_data_size
      }
    } finally {
      await server.stop()
    }
  })
})
