import * as fsp from 'node:fs/promises'
import pRetry, {AbortError as StopRetry} from 'p-retry'
import {AbortedError, KilnError, UsageError} from '../../errors.js'
import {registerSecret} from '../../util/redact.js'
import {resolveSecretRef} from '../secret.js'
import {expandTemplate} from '../template.js'
import type {PublishOutcome, PublishRequest} from './types.js'

/** The model version a push creates: the repository API loads what is sent as version 1. */
const PUSH_VERSION = '1'

/** Split `oip+http(s)://host:port[/model]` into the HTTP base URL and the model name, if any. */
export function parseOipUri(uri: string): {base: string; model?: string} {
  const m = /^oip\+(https?):\/\/([^/?#]+)(\/[^?#]*)?$/i.exec(uri)
  if (!m) {
    throw new UsageError(`'${uri}' is not an Open Inference Protocol target`, {code: 'E_PUBLISH_URI', tryMessage: 'Write oip+http://host:port or oip+https://host:port/model-name.'})
  }
  const model = (m[3] ?? '').replace(/^\/+|\/+$/g, '')
  if (model.includes('/')) throw new UsageError(`model name in '${uri}' must be one path segment`, {code: 'E_PUBLISH_URI'})
  return {base: `${m[1].toLowerCase()}://${m[2]}`, model: model || undefined}
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

function transient(e: unknown): boolean {
  if (e instanceof HttpFailure) return e.status >= 500 || e.status === 408 || e.status === 429
  const cause = (e as {cause?: {code?: string}})?.cause
  return e instanceof TypeError || ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'UND_ERR_SOCKET'].includes(cause?.code ?? '') || (e as Error)?.name === 'TimeoutError'
}

async function errorText(res: Response): Promise<string> {
  const text = await res.text().catch(() => '')
  try {
    const j = JSON.parse(text) as {error?: unknown}
    if (typeof j.error === 'string') return j.error
  } catch {
    // not JSON: use the text
  }
  return text.slice(0, 300) || res.statusText
}

/**
 * Push the artifact to a serving endpoint through the model repository API: one `load` request
 * with a `config` and every file as base64 (`file:1/<path>`), then poll the model's ready endpoint.
 * A single model file is sent as `model.onnx` (the name servers look for); a signed or encrypted
 * directory keeps its file names, so the server can verify and decrypt it.
 */
export async function publishToOip(req: PublishRequest): Promise<PublishOutcome> {
  const started = performance.now()
  const settings = req.oip ?? {}
  const {base, model: fromUri} = parseOipUri(req.uri)
  const model = expandTemplate(fromUri ?? settings.model ?? '{pipeline.name}', req.vars)
  const secret = req.secret ?? resolveSecretRef
  const headers: Record<string, string> = {'content-type': 'application/json'}
  const tokenRef = settings.token ?? (process.env.KILN_SERVE_TOKEN ? 'env:KILN_SERVE_TOKEN' : undefined)
  if (tokenRef) {
    if (!/^(env:|\$\{env:)/.test(tokenRef)) {
      throw new UsageError('the OIP token must come from the environment (env:NAME), never be written in the pipeline file', {code: 'E_SECRET_INLINE', tryMessage: 'Export the token and write token: env:NAME.'})
    }
    const token = secret(tokenRef)
    registerSecret(token)
    headers.authorization = `Bearer ${token}`
  }
  for (const [name, ref] of Object.entries(settings.headers ?? {})) {
    const value = /^(env:|\$\{env:)/.test(ref) ? secret(ref) : ref
    if (value !== ref) registerSecret(value)
    headers[name.toLowerCase()] = value
  }

  const single = req.files.length === 1
  const parameters: Record<string, string> = {config: JSON.stringify({name: model, platform: 'onnxruntime_onnx', backend: 'onnxruntime'})}
  for (const f of req.files) {
    const name = single ? `model.onnx${/\.onnx(\.[a-z0-9]+)$/i.exec(f.rel)?.[1] ?? (f.rel.endsWith('.kenc') ? '.kenc' : '')}` : f.rel
    parameters[`file:${PUSH_VERSION}/${name}`] = (await fsp.readFile(f.abs)).toString('base64')
  }
  const body = JSON.stringify({parameters})
  const timeoutMs = settings.readyTimeoutMs ?? 120_000
  let retries = 0
  const where = `${base}/v2/repository/models/${encodeURIComponent(model)}/load`
  req.progress?.(`loading ${model} into ${base}`)
  try {
    await pRetry(
      async () => {
        let res: Response
        try {
          res = await fetch(where, {method: 'POST', headers, body, signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(req.signal ? [req.signal] : [])])})
        } catch (error) {
          if (req.signal?.aborted) throw new StopRetry(new AbortedError())
          throw error
        }
        if (res.ok) {
          await res.body?.cancel()
          return
        }
        const failure = new HttpFailure(res.status, await errorText(res))
        if (!transient(failure)) throw new StopRetry(failure)
        throw failure
      },
      {retries: 4, factor: 2, minTimeout: 250, maxTimeout: 4000, onFailedAttempt: ({retriesLeft}) => void (retriesLeft > 0 && retries++)},
    )
  } catch (error) {
    if (error instanceof KilnError) throw error
    if (error instanceof HttpFailure) {
      const auth = error.status === 401 || error.status === 403
      const tooLarge = error.status === 413
      throw new KilnError(`${where} answered ${error.status}: ${error.message}`, {
        code: auth ? 'E_OIP_AUTH' : 'E_OIP_LOAD',
        cause: error,
        tryMessage: auth
          ? 'Set the endpoint token (with.oip.token: env:NAME, or KILN_SERVE_TOKEN).'
          : tooLarge
            ? `The model travels base64-encoded in one JSON request of ${body.length} bytes: raise the server's body limit (kiln serve --max-body ${Math.ceil((body.length * 1.05) / 2 ** 20) * 2 ** 20}).`
            : 'Check that the server accepts ONNX models through its repository API.',
      })
    }
    throw new KilnError(`cannot reach ${where}: ${(error as Error).message}`, {code: 'E_OIP_UNREACHABLE', cause: error, tryMessage: 'Check the host and port, and that the server is running.'})
  }

  const readyUrl = `${base}/v2/models/${encodeURIComponent(model)}/ready`
  const deadline = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    if (req.signal?.aborted) throw new AbortedError()
    try {
      const res = await fetch(readyUrl, {headers, signal: AbortSignal.timeout(5000)})
      await res.body?.cancel()
      if (res.ok) break
      last = `HTTP ${res.status}`
    } catch (error) {
      last = (error as Error).message
    }
    if (Date.now() > deadline) {
      throw new KilnError(`${model} was loaded into ${base} but did not become ready within ${Math.round(timeoutMs / 1000)} s (last answer: ${last})`, {code: 'E_OIP_NOT_READY', tryMessage: 'Check the server log for why the model failed to load; raise with.oip.readyTimeoutMs for large models.'})
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  return {
    uri: `${req.uri.replace(/\/+$/, '').split('/').slice(0, 3).join('/')}/${model}`,
    version: PUSH_VERSION,
    status: 'published',
    files: req.files.length,
    bytes: req.files.reduce((n, f) => n + f.bytes, 0),
    seconds: (performance.now() - started) / 1000,
    retries,
  }
}
