import {badRequest} from './http-error.js'
import {PLATFORM} from './repository.js'
import type {VersionEntry} from './sources.js'

/** Keys of a pushed model's `config` that the server understands (Triton's names). */
const CONFIG_KEYS = ['name', 'platform', 'backend'] as const
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * Decode the body of `POST /v2/repository/models/{m}/load`. Returns the pushed versions (empty when
 * the request only asks to load the model from the repository). Files are `file:<version>/<path>`
 * entries holding base64; a `config` (a JSON string) is required whenever files are sent.
 */
export function decodeLoadRequest(model: string, body: Buffer): VersionEntry[] {
  if (body.length === 0) return []
  let json: unknown
  try {
    json = JSON.parse(body.toString('utf8'))
  } catch (error) {
    throw badRequest(`load request is not valid JSON: ${(error as Error).message}`)
  }
  if (!isRecord(json)) throw badRequest('load request must be a JSON object')
  const params = json.parameters
  if (params === undefined) return []
  if (!isRecord(params)) throw badRequest('"parameters" must be an object')

  const unknown = Object.keys(params).filter((k) => k !== 'config' && !k.startsWith('file:'))
  if (unknown.length > 0) throw badRequest(`load parameter${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} not supported; send "config" and "file:<version>/<path>" entries`)
  const files = new Map<string, Map<string, Uint8Array>>()
  for (const [key, value] of Object.entries(params)) {
    if (!key.startsWith('file:')) continue
    const rel = key.slice('file:'.length)
    const parts = rel.split('/')
    if (parts.length < 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
      throw badRequest(`'${key}': file entries must be named file:<version>/<path> with no empty, '.' or '..' segments`)
    }
    if (typeof value !== 'string' || !BASE64_RE.test(value.replace(/\s+/g, ''))) throw badRequest(`'${key}' must be a base64 string`)
    const version = parts[0]!
    const inVersion = files.get(version) ?? new Map<string, Uint8Array>()
    inVersion.set(parts.slice(1).join('/'), Buffer.from(value, 'base64'))
    files.set(version, inVersion)
  }

  const config = params.config
  if (config === undefined) {
    if (files.size > 0) throw badRequest('"parameters.config" is required when model files are sent')
    return []
  }
  if (typeof config !== 'string') throw badRequest('"parameters.config" must be a JSON string')
  let parsed: unknown
  try {
    parsed = JSON.parse(config)
  } catch (error) {
    throw badRequest(`"parameters.config" is not valid JSON: ${(error as Error).message}`)
  }
  if (!isRecord(parsed)) throw badRequest('"parameters.config" must hold a JSON object')
  const unknownKeys = Object.keys(parsed).filter((k) => !(CONFIG_KEYS as readonly string[]).includes(k))
  if (unknownKeys.length > 0) throw badRequest(`config key${unknownKeys.length > 1 ? 's' : ''} ${unknownKeys.join(', ')} not supported; supported: ${CONFIG_KEYS.join(', ')}`)
  if (parsed.name !== undefined && parsed.name !== model) throw badRequest(`config name '${String(parsed.name)}' does not match the model '${model}' in the URL`)
  if (parsed.platform !== undefined && parsed.platform !== PLATFORM) throw badRequest(`config platform '${String(parsed.platform)}' is not served here; this server runs ${PLATFORM}`)
  if (parsed.backend !== undefined && parsed.backend !== 'onnxruntime') throw badRequest(`config backend '${String(parsed.backend)}' is not served here; this server runs onnxruntime`)

  return [...files].map(([version, f]) => ({version, origin: {kind: 'memory', files: f}}))
}
