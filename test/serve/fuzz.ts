import net from 'node:net'
import {seededRandom} from '../../src/data/random.js'

/**
 * Malformed requests for a server that serves `fashion_cnn` (input `input` FP32 [N,1,28,28]).
 * Every case must be answered 4xx. Cases are generated from a seed so a failure can be replayed.
 */
export interface FuzzCase {
  kind: string
  describe: string
  /** Send it; resolves with the HTTP status (0 when the server closed without one). */
  send(): Promise<number>
}

/** One raw HTTP/1.1 exchange over a socket, for what fetch refuses to send. */
function raw(url: string, request: Buffer): Promise<number> {
  const {hostname, port} = new URL(url)
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname)
    let head = ''
    const finish = (status: number): void => {
      socket.destroy()
      resolve(status)
    }
    socket.setTimeout(10_000, () => finish(0))
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1')
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head)
      if (m) finish(Number(m[1]))
    })
    socket.on('error', () => finish(0))
    socket.on('close', () => finish(0))
    socket.write(request)
  })
}

const DATATYPES = ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP64', 'BYTES']

export function fuzzCases(base: string, seed: number, perKind = 12): FuzzCase[] {
  const rnd = seededRandom(seed)
  const int = (n: number): number => Math.floor(rnd() * n)
  const url = `${base}/v2/models/fashion_cnn/infer`
  const image = (n = 1): number[] => Array.from({length: n * 784}, () => Math.round(rnd() * 1000) / 1000)
  const valid = (): any => ({inputs: [{name: 'input', datatype: 'FP32', shape: [1, 1, 28, 28], data: image()}]})
  const postJson = (body: string | Buffer, headers: Record<string, string> = {}) => async (): Promise<number> =>
    (await fetch(url, {method: 'POST', body, headers: {'content-type': 'application/json', ...headers}}).catch(() => ({status: 0}))).status
  const cases: FuzzCase[] = []
  const add = (kind: string, describe: string, send: () => Promise<number>): void => void cases.push({kind, describe, send})

  for (let i = 0; i < perKind; i++) {
    const text = JSON.stringify(valid())
    const cut = 1 + int(text.length - 2)
    add('broken JSON (truncated)', `cut at ${cut}/${text.length}`, postJson(text.slice(0, cut)))
    const junk = Buffer.from(Array.from({length: 1 + int(2000)}, () => int(256)))
    junk[0] = 0x7b // '{' then noise
    add('broken JSON (noise)', `${junk.length} random bytes`, postJson(junk))

    const shapes = [[1, 1, 28], [1, 1, 28, 28, 1], [1, 2, 28, 28], [1, 1, 27, 28], [2, 1, 28, 28], [1, 1, 28, 29], [], [1e9, 1, 28, 28], [-1, 1, 28, 28], [1.5, 1, 28, 28]]
    const shape = shapes[int(shapes.length)]!
    const wrongShape = valid()
    wrongShape.inputs[0].shape = shape
    add('wrong shape', JSON.stringify(shape), postJson(JSON.stringify(wrongShape)))

    const datatype = DATATYPES[int(DATATYPES.length)]!
    const wrongType = valid()
    wrongType.inputs[0].datatype = datatype
    add('wrong datatype', datatype, postJson(JSON.stringify(wrongType)))

    const badValues = ['"x"', 'null', '{}', '[]', 'true', '"NaN"']
    const bad = badValues[int(badValues.length)]!
    const wrongValue = JSON.stringify(valid()).replace(/("data":\[)([^,]+)/, `$1${bad}`)
    add('wrong element', `first element ${bad}`, postJson(wrongValue))

    const count = valid()
    count.inputs[0].data = image().slice(0, 1 + int(783))
    add('element count', `${count.inputs[0].data.length} of 784`, postJson(JSON.stringify(count)))

    const names = valid()
    names.inputs[0].name = ['image', '', 'INPUT', 'input ', 'x'][int(5)]
    add('unknown input name', JSON.stringify(names.inputs[0].name), postJson(JSON.stringify(names)))

    const structure = [{}, [], {inputs: []}, {inputs: {}}, {inputs: [null]}, {inputs: [1]}, {inputs: [{}]}, 'null', 42, {inputs: [{name: 'input'}]}, {...valid(), outputs: [{name: 'nope'}]}, {...valid(), id: 7}, {...valid(), parameters: []}]
    const s = structure[int(structure.length)]
    add('bad structure', JSON.stringify(s).slice(0, 60), postJson(typeof s === 'string' ? s : JSON.stringify(s)))

    const x = new Float32Array(784).map(() => rnd())
    const header = Buffer.from(JSON.stringify({inputs: [{name: 'input', datatype: 'FP32', shape: [1, 1, 28, 28], parameters: {binary_data_size: x.byteLength}}]}))
    const full = Buffer.concat([header, Buffer.from(x.buffer)])
    const cutAt = int(full.length - 1)
    add('truncated binary body', `cut at ${cutAt}/${full.length}`, postJson(full.subarray(0, cutAt), {'inference-header-content-length': String(header.length), 'content-type': 'application/octet-stream'}))
    const headerLengths = ['-1', 'abc', String(full.length + 1 + int(1000)), '1e3', String(header.length - 1 - int(5))]
    const hl = headerLengths[int(headerLengths.length)]!
    add('bad header length', hl, postJson(full, {'inference-header-content-length': hl}))
    const extra = Buffer.concat([full, Buffer.alloc(1 + int(64))])
    add('surplus binary bytes', `${extra.length - full.length} extra`, postJson(extra, {'inference-header-content-length': String(header.length)}))

    const size = 17 * 1024 + int(200 * 1024)
    add('huge header', `${size} bytes`, () => raw(base, Buffer.from(`GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${'a'.repeat(size)}\r\n\r\n`)))
    const garbage = Buffer.from(Array.from({length: 16 + int(256)}, () => 32 + int(95)))
    add('garbage HTTP', garbage.toString('latin1').slice(0, 30), () => raw(base, Buffer.concat([garbage, Buffer.from('\r\n\r\n')])))
    const paths = ['/v2/models/%E0%A4%A/infer', '/v2/models//infer', '/v2/models/fashion_cnn/versions/9/infer', '/v2/models/../infer', '/v2/repository/models/fashion_cnn/load', '/v2/repository/index', '/nothing']
    const p = paths[int(paths.length)]!
    add('bad route', p, async () => (await fetch(`${base}${p}`, {method: 'POST', body: '{}'}).catch(() => ({status: 0}))).status)
    const depth = 1000 + int(100_000)
    add('deep nesting', `${depth} levels`, postJson(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,28,28],"data":${'['.repeat(depth)}${']'.repeat(depth)}}]}`))
  }
  return cases
}
