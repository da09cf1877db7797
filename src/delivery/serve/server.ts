import http, {type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'
import v8 from 'node:v8'
import {HttpError} from './http-error.js'
import {BufferPool} from '../../util/buffer-pool.js'
import {tensorBuffers} from './datatypes.js'
import {discardBody, readBody, send, sendJson, tokenChecker} from './http-util.js'
import {decodeInferRequest, splitBody} from './infer-request.js'
import {encodeInferResponse} from './infer-response.js'
import {decodeLoadRequest} from './load-request.js'
import type {ServeLogger} from './log.js'
import {ServeMetrics} from './metrics.js'
import {InferencePool, InlinePool, WorkerFailure} from './pool.js'
import type {InferenceRunner} from './pool.js'
import {ModelRepository, PLATFORM} from './repository.js'
import type {ModelSource} from './sources.js'
import type {LoadSecurity} from './version-loader.js'

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** Interface to listen on; keep it loopback unless a proxy with TLS sits in front. */
  host: string
  /** Port; 0 picks a free one (see {@link RunningServer.url}). */
  port: number
  /** Bearer token / API key for the model repository API. Without one, load and unload are refused. */
  token?: string
  /** Inference workers (concurrent runs). */
  pool: number
  /** onnxruntime intra-op threads per session. */
  threads: number
  /** Requests that may wait for a worker before the server answers 429. */
  maxQueue: number
  /** Largest request body in bytes (413 beyond). */
  maxBody: number
  /** How long shutdown waits for in-flight requests before closing their connections. */
  drainTimeoutMs: number
  source?: ModelSource
  security: LoadSecurity
  logger: ServeLogger
  /** Server version reported by `GET /v2`. */
  version: string
  /** Called once the socket is bound, before models load (health/ready answers from then on). */
  onListening?: (url: string) => void
}

export interface RunningServer {
  /** `http://host:port`, with the port actually bound. */
  url: string
  repository: ModelRepository
  metrics: ServeMetrics
  /** Stop accepting, finish the requests in flight (up to the drain timeout), stop the workers. */
  close(): Promise<{drained: boolean; inflight: number}>
}

const EXTENSIONS = ['binary_tensor_data', 'model_repository']

type Route =
  | {kind: 'live' | 'ready' | 'server' | 'metrics' | 'index'}
  | {kind: 'model'; model: string; version?: string}
  | {kind: 'modelReady'; model: string; version?: string}
  | {kind: 'infer'; model: string; version?: string}
  | {kind: 'load'; model: string}
  | {kind: 'unload'; model: string}

const ROUTES: Array<[string, RegExp, (m: string[]) => Route]> = [
  ['GET', /^\/v2\/health\/live$/, () => ({kind: 'live'})],
  ['GET', /^\/v2\/health\/ready$/, () => ({kind: 'ready'})],
  ['GET', /^\/v2\/?$/, () => ({kind: 'server'})],
  ['GET', /^\/metrics$/, () => ({kind: 'metrics'})],
  ['GET', /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?$/, (m) => ({kind: 'model', model: m[1]!, version: m[2]})],
  ['GET', /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?\/ready$/, (m) => ({kind: 'modelReady', model: m[1]!, version: m[2]})],
  ['POST', /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?\/infer$/, (m) => ({kind: 'infer', model: m[1]!, version: m[2]})],
  ['POST', /^\/v2\/repository\/index$/, () => ({kind: 'index'})],
  ['POST', /^\/v2\/repository\/models\/([^/]+)\/load$/, (m) => ({kind: 'load', model: m[1]!})],
  ['POST', /^\/v2\/repository\/models\/([^/]+)\/unload$/, (m) => ({kind: 'unload', model: m[1]!})],
]

function route(method: string, pathname: string): Route {
  let allowed: string | undefined
  for (const [verb, re, make] of ROUTES) {
    const m = re.exec(pathname)
    if (!m) continue
    if (verb !== method) {
      allowed = verb
      continue
    }
    let parts: string[]
    try {
      parts = m.map((s) => (s === undefined ? s : decodeURIComponent(s))) as string[]
    } catch {
      throw new HttpError(400, `malformed escape in path ${pathname}`)
    }
    return make(parts)
  }
  if (allowed) throw new HttpError(405, `${method} is not allowed on ${pathname}; use ${allowed}`, {allow: allowed})
  throw new HttpError(404, `no such endpoint: ${method} ${pathname}`)
}

/** Start the Open Inference Protocol server and load the source's models. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const {logger} = options
  // Request bodies and the tensors in them live in recycled memory, which the workers hand back.
  const buffers = new BufferPool()
  const poolOptions = {size: options.pool, threads: options.threads, maxQueue: options.maxQueue, buffers}
  const pool: InferenceRunner = options.pool === 0 ? new InlinePool(poolOptions) : new InferencePool(poolOptions)
  const repository = new ModelRepository(options.source, pool, options.security, logger)
  const metrics = new ServeMetrics()
  const checkToken = tokenChecker(options.token)
  let draining = false
  let startupDone = false
  let inflight = 0
  /** Infer requests whose bodies are being read. */
  let reading = 0
  let idle: (() => void) | undefined

  metrics.gauge('kiln_serve_queue_depth', 'Infer requests waiting for a free inference worker.', () => [{value: pool.queueDepth}])
  metrics.gauge('kiln_serve_running', 'Infer requests handed to the inference workers (running, or next in line in a worker).', () => [{value: pool.running}])
  metrics.gauge('kiln_serve_pool_size', 'Inference workers.', () => [{value: pool.size}])
  metrics.gauge('kiln_serve_inflight_requests', 'HTTP requests being handled.', () => [{value: inflight}])
  metrics.gauge('kiln_serve_models_ready', 'Models in the READY state.', () => [{value: repository.readyCount()}])
  metrics.gauge('kiln_serve_heap_space_bytes', "Size of each space of the HTTP thread's JavaScript heap.", () =>
    v8.getHeapSpaceStatistics().map((s) => ({labels: {space: s.space_name}, value: s.space_size})),
  )

  function requireToken(req: IncomingMessage): void {
    const verdict = checkToken(req)
    if (verdict === 'ok') return
    if (verdict === 'unset') throw new HttpError(403, 'the model repository API is disabled: the server was started without a token', {})
    throw new HttpError(401, verdict === 'missing' ? 'authentication required: send Authorization: Bearer <token> or X-API-Key' : 'invalid token', {'www-authenticate': 'Bearer realm="kiln"'})
  }

  async function infer(req: IncomingMessage, res: ServerResponse, r: Extract<Route, {kind: 'infer'}>, started: number): Promise<{status: number; version?: string}> {
    const header = req.headers['inference-header-content-length']
    const headerLength = Array.isArray(header) ? header[0] : header
    // An unknown model, or a full server, is refused before the body is read; bodies being read
    // count as queued.
    repository.find(r.model, r.version)
    pool.admit(reading)
    reading++
    let body: Awaited<ReturnType<typeof readBody>>
    try {
      // The binary tensors start right after the JSON header: read the body so that they are aligned.
      body = await readBody(req, options.maxBody, buffers, Number(headerLength) || 0)
    } finally {
      reading--
    }
    let served: ReturnType<typeof repository.acquire> | undefined
    let request: ReturnType<typeof decodeInferRequest> | undefined
    try {
      // The version is looked up again: it may have been unloaded while the body arrived.
      served = repository.acquire(r.model, r.version)
      const {json, binary} = splitBody(body.bytes, headerLength)
      // Binary inputs stay in the (recycled) body buffer, which moves to the worker as it is.
      request = decodeInferRequest(json, binary, served.signature, body.pooled ? {inPlace: true, buffers} : {buffers})
      const queued = performance.now()
      const result = await pool.run(served.key, request.inputs, request.outputs.map((o) => o.name))
      const labels = {model: served.model, version: served.version}
      metrics.inferenceSeconds.observe(labels, result.ms / 1000)
      metrics.queueSeconds.observe(labels, Math.max(0, performance.now() - queued - result.ms) / 1000)
      const encoded = encodeInferResponse({modelName: served.model, modelVersion: served.version, id: request.id}, request.outputs, new Map(result.outputs.map((t) => [t.name, t])))
      send(res, 200, encoded.chunks, encoded.headers)
      metrics.requestSeconds.observe(labels, (performance.now() - started) / 1000)
      return {status: 200, version: served.version}
    } finally {
      if (served) repository.release(served)
      // Unless they went to a worker (then the worker hands them back), the body's memory and the
      // tensor copies are free again. Buffers a worker took are detached here, and ignored.
      if (body.pooled) buffers.give(body.bytes.buffer as ArrayBuffer)
      for (const b of tensorBuffers(request?.inputs ?? [])) buffers.give(b)
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<{status: number; model?: string; version?: string}> {
    const started = performance.now()
    const url = new URL(req.url ?? '/', 'http://localhost')
    const r = route(req.method ?? 'GET', url.pathname)
    if (draining && r.kind !== 'live' && r.kind !== 'metrics') {
      res.setHeader('connection', 'close')
      throw new HttpError(503, 'the server is shutting down', {'retry-after': '1'})
    }
    switch (r.kind) {
      case 'live':
        sendJson(res, 200, {live: true})
        return {status: 200}
      case 'ready': {
        const ready = startupDone && !draining
        sendJson(res, ready ? 200 : 503, {ready})
        return {status: ready ? 200 : 503}
      }
      case 'server':
        sendJson(res, 200, {name: 'kiln', version: options.version, extensions: EXTENSIONS})
        return {status: 200}
      case 'metrics':
        send(res, 200, Buffer.from(metrics.render(), 'utf8'), {'content-type': 'text/plain; version=0.0.4; charset=utf-8'})
        return {status: 200}
      case 'model': {
        const v = repository.find(r.model, r.version)
        sendJson(res, 200, {
          name: v.model,
          versions: repository.versionsOf(v.model),
          platform: PLATFORM,
          inputs: v.signature.inputs.map((t) => ({name: t.name, datatype: t.datatype, shape: t.shape})),
          outputs: v.signature.outputs.map((t) => ({name: t.name, datatype: t.datatype, shape: t.shape})),
        })
        return {status: 200, model: r.model, version: v.version}
      }
      case 'modelReady': {
        const v = repository.find(r.model, r.version)
        sendJson(res, 200, {name: v.model, version: v.version, ready: true})
        return {status: 200, model: r.model, version: v.version}
      }
      case 'infer':
        return {...(await infer(req, res, r, started)), model: r.model}
      case 'index': {
        requireToken(req)
        const body = (await readBody(req, options.maxBody)).bytes
        let readyOnly = false
        if (body.length > 0) {
          let json: unknown
          try {
            json = JSON.parse(body.toString('utf8'))
          } catch (error) {
            throw new HttpError(400, `index request is not valid JSON: ${(error as Error).message}`)
          }
          const ready = (json as {ready?: unknown} | null)?.ready
          if (ready !== undefined && typeof ready !== 'boolean') throw new HttpError(400, '"ready" must be true or false')
          readyOnly = ready === true
        }
        sendJson(res, 200, repository.index(readyOnly))
        return {status: 200}
      }
      case 'load': {
        requireToken(req)
        const versions = decodeLoadRequest(r.model, (await readBody(req, options.maxBody)).bytes)
        await repository.load(r.model, versions)
        sendJson(res, 200, {})
        return {status: 200, model: r.model}
      }
      case 'unload': {
        requireToken(req)
        await readBody(req, options.maxBody)
        await repository.unload(r.model)
        sendJson(res, 200, {})
        return {status: 200, model: r.model}
      }
    }
  }

  // Keep idle connections longer than common clients do (undici: 4 s), so a client never reuses a
  // socket the server is closing at that moment; shutdown closes idle ones at once anyway.
  const server = http.createServer({keepAliveTimeout: 30_000, headersTimeout: 40_000, requestTimeout: 120_000}, (req, res) => {
    inflight++
    const started = performance.now()
    res.on('close', () => {
      inflight--
      if (inflight === 0) idle?.()
    })
    handle(req, res).then(
      (outcome) => done(req, outcome, started),
      (error: unknown) => {
        let status = 500
        let message = 'internal error'
        let headers: Record<string, string> = {}
        if (error instanceof HttpError) {
          status = error.status
          message = error.message
          headers = error.headers
        } else if (error instanceof WorkerFailure) {
          message = error.message
        } else {
          logger.log('error', 'request failed', {method: req.method, url: req.url, error: error instanceof Error ? (error.stack ?? error.message) : String(error)})
        }
        // A body left unread (413, early 4xx) is drained, or the connection closed when it is too big to drain.
        if (!req.complete && !discardBody(req)) headers = {...headers, connection: 'close'}
        sendJson(res, status, {error: message}, headers)
        done(req, {status, model: modelOf(req.url)}, started, message)
      },
    )
  })

  /**
   * The model a failed request named, for its metrics and log line; undefined unless the
   * repository has it, so that requests for made-up names cannot add series without end.
   */
  function modelOf(url: string | undefined): string | undefined {
    const m = /^\/v2\/(?:repository\/)?models\/([^/?]+)/.exec(url ?? '')
    if (!m) return undefined
    try {
      const name = decodeURIComponent(m[1]!)
      return repository.has(name) ? name : undefined
    } catch {
      return undefined
    }
  }

  function done(req: IncomingMessage, outcome: {status: number; model?: string; version?: string}, started: number, error?: string): void {
    const path = (req.url ?? '').split('?')[0]!
    const isInfer = req.method === 'POST' && path.endsWith('/infer')
    const routeLabel = isInfer ? 'infer' : path.startsWith('/v2/repository') ? 'repository' : path.startsWith('/v2/models') ? 'model' : path.startsWith('/v2') ? 'server' : path === '/metrics' ? 'metrics' : 'other'
    metrics.requests.inc({route: routeLabel, model: outcome.model ?? '', status: String(outcome.status)})
    if (isInfer) metrics.inferRequests.inc({model: outcome.model ?? '', version: outcome.version ?? '', status: String(outcome.status)})
    const ms = Math.round((performance.now() - started) * 100) / 100
    // Health probes answer 503 by design while loading or draining: not worth more than a debug line.
    if (path.startsWith('/v2/health/')) logger.log('debug', 'request', {method: req.method, path, status: outcome.status, ms})
    else if (outcome.status >= 500) logger.log('error', 'request', {method: req.method, path, status: outcome.status, ms, error})
    else if (outcome.status >= 400) logger.log('info', 'request', {method: req.method, path, status: outcome.status, ms, error})
    else logger.log('debug', 'request', {method: req.method, path, status: outcome.status, model: outcome.model, ms})
  }

  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    // Malformed HTTP never reaches a handler: answer it here and keep serving everyone else.
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
    metrics.requests.inc({route: 'other', model: '', status: String(status)})
    logger.log('info', 'bad HTTP request', {status, code: error.code})
    if (socket.writable) socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
    else socket.destroy()
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  logger.log('info', 'listening', {url, repository: repository.description, pool: options.pool, threads: options.threads, maxQueue: options.maxQueue, maxBody: options.maxBody, verifying: Boolean(options.security.publicKeyPem), decrypting: Boolean(options.security.dataKey)})
  options.onListening?.(url)

  try {
    await repository.loadAll()
    logger.log('info', 'ready', {models: repository.readyCount()})
  } catch (error) {
    await new Promise((r) => server.close(r))
    await pool.close()
    throw error
  }
  startupDone = true

  return {
    url,
    repository,
    metrics,
    async close() {
      draining = true
      server.close()
      server.closeIdleConnections()
      let drained = inflight === 0
      if (!drained) {
        drained = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), options.drainTimeoutMs)
          idle = () => {
            clearTimeout(timer)
            resolve(true)
          }
        })
      }
      const left = inflight
      server.closeAllConnections()
      await pool.close()
      return {drained, inflight: left}
    },
  }
}
