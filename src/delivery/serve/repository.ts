import {randomBytes} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import {oipDatatypeOf} from './datatypes.js'
import {HttpError} from './http-error.js'
import type {ModelSignature, TensorSpec} from './infer-request.js'
import type {ServeLogger} from './log.js'
import type {InferenceRunner} from './pool.js'
import {checkModelName, compareVersions, type ModelEntry, type ModelSource, type VersionEntry} from './sources.js'
import {type LoadSecurity, prepareVersion} from './version-loader.js'
import type {ModelPayload, SessionValueInfo} from './worker-protocol.js'

export type ModelState = 'READY' | 'UNAVAILABLE' | 'LOADING' | 'UNLOADING'

export interface ServedVersion {
  model: string
  version: string
  /** The pool's key for this load; a reload gets a new one, so old and new sessions never mix. */
  key: string
  signature: ModelSignature
  modelFile: string
  verified: boolean
  encrypted: boolean
  inflight: number
  retired: boolean
}

interface ServedModel {
  name: string
  state: ModelState
  reason: string
  versions: Map<string, ServedVersion>
  defaultVersion?: string
  /** Versions that were refused, with why: shown in the index. */
  failures: Map<string, string>
}

export interface IndexEntry {
  name: string
  version?: string
  state: ModelState
  reason: string
}

export const PLATFORM = 'onnxruntime_onnx'

function toSpecs(values: SessionValueInfo[], what: string, rankless: Set<string>): TensorSpec[] {
  return values.map((v) => {
    if (!v.isTensor || !v.type) throw new Error(`${what} '${v.name}' is not a tensor; the protocol only carries tensors`)
    const datatype = oipDatatypeOf(v.type)
    if (!datatype) throw new Error(`${what} '${v.name}' has element type ${v.type}, which the protocol cannot carry`)
    if (rankless.has(v.name)) return {name: v.name, datatype, shape: [-1], symbols: [undefined], anyRank: true}
    return {
      name: v.name,
      datatype,
      shape: v.dims.map((d) => (typeof d === 'number' ? d : -1)),
      symbols: v.dims.map((d) => (typeof d === 'string' && d !== '' ? d : undefined)),
    }
  })
}

/**
 * onnxruntime reports both a scalar and a tensor whose model declares no shape at all as `[]`. Only
 * the model itself tells them apart, so it is read when (rarely) such a value appears.
 */
async function ranklessValues(payload: ModelPayload, values: SessionValueInfo[]): Promise<Set<string>> {
  if (!values.some((v) => v.isTensor && v.dims.length === 0)) return new Set()
  const [{parseModel}, {valueInfoShape}] = await Promise.all([import('../../onnx/model.js'), import('../../onnx/build.js')])
  const model = parseModel('bytes' in payload ? payload.bytes : await fsp.readFile(payload.path))
  const out = new Set<string>()
  for (const vi of [...(model.graph?.input ?? []), ...(model.graph?.output ?? [])]) if (valueInfoShape(vi)?.shape === undefined) out.add(vi.name)
  return out
}

/**
 * The models the server holds, their versions and states. Loading a model again builds the new
 * sessions first and switches over only when they are ready; the old sessions serve the requests
 * already running on them and are released when the last one finishes.
 */
export class ModelRepository {
  private readonly models = new Map<string, ServedModel>()
  private readonly pushed = new Map<string, ModelEntry>()
  private readonly locks = new Map<string, Promise<unknown>>()

  constructor(
    private readonly source: ModelSource | undefined,
    private readonly pool: InferenceRunner,
    private readonly security: LoadSecurity,
    private readonly logger: ServeLogger,
  ) {}

  get description(): string {
    return this.source?.description ?? '(empty)'
  }

  /** Load everything the source holds. A model that fails is recorded with its reason; the rest still load. */
  async loadAll(): Promise<void> {
    if (!this.source) return
    const found = await this.source.list()
    await Promise.all(found.map((m) => this.serialize(m.name, async () => ('error' in m ? this.markFailed(m.name, m.error) : this.loadEntry(m)))))
  }

  /** Per-model mutual exclusion: a load and an unload of one model never interleave. */
  private serialize<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prior = this.locks.get(name) ?? Promise.resolve()
    const next = prior.then(fn, fn)
    this.locks.set(
      name,
      next.catch(() => undefined),
    )
    return next
  }

  /** Record why a model could not be loaded; a model already serving keeps serving its loaded versions. */
  private async markFailed(name: string, reason: string): Promise<boolean> {
    const m = this.entry(name)
    this.logger.log('warn', 'model refused', {model: name, reason})
    if (m.state === 'READY') {
      m.reason = `reload failed: ${reason}`
      return false
    }
    m.state = 'UNAVAILABLE'
    m.reason = reason
    return false
  }

  private entry(name: string): ServedModel {
    let m = this.models.get(name)
    if (!m) {
      m = {name, state: 'UNAVAILABLE', reason: '', versions: new Map(), failures: new Map()}
      this.models.set(name, m)
    }
    return m
  }

  private async loadVersion(name: string, v: VersionEntry): Promise<ServedVersion> {
    const prepared = await prepareVersion(v.origin, this.security)
    const key = `${name}:${v.version}:${randomBytes(4).toString('hex')}`
    const loaded = await this.pool.load(key, prepared.payload)
    try {
      const rankless = await ranklessValues(prepared.payload, [...loaded.inputs, ...loaded.outputs])
      const signature = {inputs: toSpecs(loaded.inputs, 'input', rankless), outputs: toSpecs(loaded.outputs, 'output', rankless)}
      return {model: name, version: v.version, key, signature, modelFile: prepared.modelFile, verified: prepared.verified, encrypted: prepared.encrypted, inflight: 0, retired: false}
    } catch (error) {
      await this.pool.unload(key)
      throw error
    }
  }

  /** Load every version of a model; true when the new versions now serve. */
  private async loadEntry(entry: ModelEntry): Promise<boolean> {
    const m = this.entry(entry.name)
    const nameProblem = checkModelName(entry.name)
    if (nameProblem) return this.markFailed(entry.name, nameProblem)
    const wasReady = m.state === 'READY'
    if (!wasReady) m.state = 'LOADING'
    const started = performance.now()
    const fresh = new Map<string, ServedVersion>()
    const failures = new Map<string, string>()
    for (const v of entry.versions) {
      try {
        fresh.set(v.version, await this.loadVersion(entry.name, v))
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error)
        failures.set(v.version, reason)
        this.logger.log('warn', 'model version refused', {model: entry.name, version: v.version, reason})
      }
    }
    if (fresh.size === 0) {
      const reason = [...failures.entries()].map(([v, r]) => `version ${v}: ${r}`).join('; ') || 'no versions found'
      if (wasReady) {
        // Keep serving what works; the index shows why the new versions were refused.
        m.reason = `reload failed: ${reason}`
        return false
      }
      m.failures = failures
      m.state = 'UNAVAILABLE'
      m.reason = reason
      return false
    }
    const old = [...m.versions.values()]
    m.versions = fresh
    m.failures = failures
    m.defaultVersion = fresh.has(entry.defaultVersion) ? entry.defaultVersion : [...fresh.keys()].sort(compareVersions).at(-1)
    m.state = 'READY'
    m.reason = failures.size ? [...failures.entries()].map(([v, r]) => `version ${v} refused: ${r}`).join('; ') : ''
    for (const v of old) this.retire(v)
    for (const v of fresh.values()) {
      this.logger.log('info', 'model ready', {model: entry.name, version: v.version, file: v.modelFile, verified: v.verified, encrypted: v.encrypted, ms: Math.round(performance.now() - started)})
    }
    return true
  }

  private retire(v: ServedVersion): void {
    v.retired = true
    if (v.inflight === 0) void this.pool.unload(v.key)
  }

  /**
   * `load` of the repository API: from pushed files when given, else again from the source. A
   * failed reload of a serving model answers 400 and leaves the loaded versions serving.
   */
  async load(name: string, pushedVersions?: VersionEntry[]): Promise<void> {
    const nameProblem = checkModelName(name)
    if (nameProblem) throw new HttpError(400, nameProblem)
    const loaded = await this.serialize(name, async () => {
      let entry: ModelEntry | undefined
      if (pushedVersions && pushedVersions.length > 0) {
        const sorted = [...pushedVersions].sort((a, b) => compareVersions(a.version, b.version))
        entry = {name, versions: sorted, defaultVersion: sorted.at(-1)!.version}
        this.pushed.set(name, entry)
      } else {
        const listed = this.source ? (await this.source.list()).find((m) => m.name === name) : undefined
        if (listed && 'error' in listed) return this.markFailed(name, listed.error)
        entry = listed ?? this.pushed.get(name)
      }
      if (!entry) throw new HttpError(404, `no model '${name}' in the repository ${this.description}`)
      return this.loadEntry(entry)
    })
    if (!loaded) {
      const m = this.models.get(name)
      const serving = m?.state === 'READY' ? ' (the loaded versions keep serving)' : ''
      throw new HttpError(400, `failed to load '${name}': ${(m?.reason ?? 'unknown reason').replace(/^reload failed: /, '')}${serving}`)
    }
  }

  async unload(name: string): Promise<void> {
    await this.serialize(name, async () => {
      const m = this.models.get(name)
      if (!m) throw new HttpError(404, `no model '${name}' is loaded`)
      m.state = 'UNAVAILABLE'
      m.reason = 'unloaded'
      for (const v of m.versions.values()) this.retire(v)
      m.versions = new Map()
      m.defaultVersion = undefined
      this.logger.log('info', 'model unloaded', {model: name})
    })
  }

  /** The version a request addresses, counted as in flight until {@link release}. */
  acquire(name: string, version?: string): ServedVersion {
    const v = this.find(name, version)
    v.inflight++
    return v
  }

  release(v: ServedVersion): void {
    v.inflight--
    if (v.retired && v.inflight === 0) void this.pool.unload(v.key)
  }

  /** The version a request addresses; 404 for an unknown model or version, 400 when not ready. */
  find(name: string, version?: string): ServedVersion {
    const m = this.models.get(name)
    if (!m) throw new HttpError(404, `unknown model '${name}'`)
    if (m.state !== 'READY') throw new HttpError(400, `model '${name}' is not ready (${m.state.toLowerCase()}${m.reason ? `: ${m.reason}` : ''})`)
    const v = m.versions.get(version ?? m.defaultVersion!)
    if (!v) throw new HttpError(404, `model '${name}' has no version '${version}'; versions: ${[...m.versions.keys()].join(', ')}`)
    return v
  }

  /** Whether a model of this name is in the repository, in any state. */
  has(name: string): boolean {
    return this.models.has(name)
  }

  versionsOf(name: string): string[] {
    return [...(this.models.get(name)?.versions.keys() ?? [])].sort(compareVersions)
  }

  /** The repository index: one entry per model version (refused versions with their reason), or per model when it has none. */
  index(readyOnly = false): IndexEntry[] {
    const out: IndexEntry[] = []
    for (const m of [...this.models.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      for (const v of [...m.versions.keys()].sort(compareVersions)) out.push({name: m.name, version: v, state: m.state, reason: m.reason})
      if (readyOnly) continue
      for (const [v, r] of m.failures) if (!m.versions.has(v)) out.push({name: m.name, version: v, state: 'UNAVAILABLE', reason: r})
      if (m.versions.size === 0 && m.failures.size === 0) out.push({name: m.name, state: m.state, reason: m.reason})
    }
    return readyOnly ? out.filter((e) => e.state === 'READY') : out
  }

  readyCount(): number {
    return [...this.models.values()].filter((m) => m.state === 'READY').length
  }

  inflight(): number {
    let n = 0
    for (const m of this.models.values()) for (const v of m.versions.values()) n += v.inflight
    return n
  }
}
