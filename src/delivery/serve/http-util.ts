import {createHash, timingSafeEqual} from 'node:crypto'
import type {IncomingMessage, ServerResponse} from 'node:http'
import type {BufferPool} from '../../util/buffer-pool.js'
import {HttpError} from './http-error.js'

/** A request body; `pooled` when its memory came from a {@link BufferPool} and should go back to it. */
export interface Body {
  bytes: Buffer
  pooled: boolean
}

/**
 * Read a request body, refusing (413) as soon as it is known to exceed `limit`: from
 * Content-Length before a byte is read, or while streaming a chunked body. With a `pool` and a
 * Content-Length, the body lands in one recycled buffer instead of fresh memory; with `alignAt`
 * too, it lands where that byte of it falls on an 8-byte boundary, so that binary tensors starting
 * there can be used in place, whatever the length of the JSON before them.
 */
export function readBody(req: IncomingMessage, limit: number, pool?: BufferPool, alignAt = 0): Promise<Body> {
  const declared = req.headers['content-length']
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new HttpError(413, `request body of ${declared} bytes exceeds the limit of ${limit} bytes`))
  }
  const length = declared !== undefined && /^\d+$/.test(declared) ? Number(declared) : undefined
  const pad = Number.isSafeInteger(alignAt) && alignAt > 0 ? (8 - (alignAt % 8)) % 8 : 0
  const target = pool && length !== undefined && length > 0 ? Buffer.from(pool.take(length + pad), pad, length) : undefined
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    const fail = (error: HttpError): void => {
      done = true
      if (target) pool!.give(target.buffer as ArrayBuffer)
      reject(error)
    }
    req.on('data', (chunk: Buffer) => {
      if (done) return
      if (size + chunk.length > limit || (target && size + chunk.length > target.length)) {
        fail(new HttpError(413, `request body exceeds the limit of ${target ? target.length : limit} bytes`))
        return
      }
      if (target) chunk.copy(target, size)
      else chunks.push(chunk)
      size += chunk.length
    })
    req.on('end', () => {
      if (done) return
      if (target && size !== target.length) return fail(new HttpError(400, `the body has ${size} of the ${target.length} bytes its Content-Length declares`))
      done = true
      if (target) resolve({bytes: target, pooled: true})
      else resolve({bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), pooled: false})
    })
    req.on('error', (error) => {
      if (!done) fail(new HttpError(400, `request body could not be read: ${error.message}`))
    })
    req.on('aborted', () => {
      if (!done) fail(new HttpError(400, 'the client closed the connection before the body was complete'))
    })
  })
}

/** Bytes of an unwanted body the server still reads (and drops) so the client sees the answer, not a reset. */
export const DISCARD_LIMIT = 64 * 1024 * 1024

/**
 * Drop the rest of a request body that will not be used (an early 4xx). Reading it keeps the
 * connection in step, and a client still uploading gets the answer instead of EPIPE; a body beyond
 * {@link DISCARD_LIMIT} is cut off. Returns false when the connection must close instead.
 */
export function discardBody(req: IncomingMessage, alreadyRead = 0): boolean {
  if (req.complete) return true
  const declared = Number(req.headers['content-length'] ?? Number.NaN)
  if (declared > DISCARD_LIMIT) return false
  let n = alreadyRead
  req.on('data', (chunk: Buffer) => {
    n += chunk.length
    if (n > DISCARD_LIMIT) req.destroy()
  })
  req.resume()
  return true
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  send(res, status, Buffer.from(JSON.stringify(value), 'utf8'), {'content-type': 'application/json', ...headers})
}

export function send(res: ServerResponse, status: number, body: Buffer | Buffer[], headers: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const chunks = Array.isArray(body) ? body : [body]
  res.writeHead(status, {...headers, 'content-length': String(chunks.reduce((n, c) => n + c.length, 0))})
  // Corked, the chunks leave in one writev.
  res.cork()
  for (const c of chunks.slice(0, -1)) res.write(c)
  res.end(chunks.at(-1))
  res.uncork()
}

/** A configured token, compared in constant time (digests first, so lengths leak nothing either). */
export function tokenChecker(token: string | undefined): (req: IncomingMessage) => 'ok' | 'unset' | 'missing' | 'wrong' {
  const want = token === undefined ? undefined : createHash('sha256').update(token).digest()
  return (req) => {
    if (!want) return 'unset'
    const auth = req.headers.authorization
    const apiKey = req.headers['x-api-key']
    let given: string | undefined
    if (typeof auth === 'string') {
      const m = /^Bearer\s+(.+)$/i.exec(auth.trim())
      given = m ? m[1] : undefined
    }
    if (given === undefined && typeof apiKey === 'string') given = apiKey.trim()
    if (given === undefined) return 'missing'
    return timingSafeEqual(createHash('sha256').update(given).digest(), want) ? 'ok' : 'wrong'
  }
}
