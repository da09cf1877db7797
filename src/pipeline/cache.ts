import * as fsp from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import type {GateResult} from '../stages/types.js'
import {atomicWriteDir, atomicWriteFile, digestPath, exists, sha256} from '../util/fs.js'

/**
 * The content-addressed stage cache. An entry lives at `<cacheDir>/<key>/`: the stage's output files
 * under `out/` plus `entry.json`. Entries are written with `atomicWriteDir`, so an interrupted run
 * never leaves an entry a later run would trust; `entry.json` also records the output digest, which
 * is checked again before an entry is used.
 */
export interface CacheEntry {
  key: string
  /** Output path relative to the entry's `out/` dir; absent when the stage passed its input through. */
  artifact?: {rel: string; format: string; sha256: string; bytes: number}
  metrics: Record<string, unknown>
  gates: GateResult[]
  report?: Record<string, unknown>
  createdAt: string
}

export class StageCache {
  constructor(readonly dir: string) {}

  entryDir(key: string): string {
    return path.join(this.dir, key)
  }

  /** The entry for `key`, or undefined when absent or damaged (a damaged entry is removed). */
  async get(key: string, memo: DigestMemo): Promise<(CacheEntry & {artifactPath?: string}) | undefined> {
    const dir = this.entryDir(key)
    let entry: CacheEntry
    try {
      entry = JSON.parse(await fsp.readFile(path.join(dir, 'entry.json'), 'utf8')) as CacheEntry
    } catch {
      return undefined
    }
    if (!entry.artifact) return entry
    const artifactPath = path.join(dir, 'out', entry.artifact.rel)
    // The output is re-digested (memoised by size and mtime) so a damaged or edited entry is never used.
    try {
      const d = await memo.digest(artifactPath)
      if (d.sha256 !== entry.artifact.sha256) throw new Error('digest mismatch')
    } catch {
      await fsp.rm(dir, {recursive: true, force: true})
      return undefined
    }
    return {...entry, artifactPath}
  }

  /**
   * Store a stage result. The artifact (file or directory under `outDir`) is moved into the entry.
   * Returns the entry and the artifact's new path.
   */
  async put(key: string, entry: Omit<CacheEntry, 'key' | 'createdAt'>, artifactSource?: string): Promise<{entry: CacheEntry; artifactPath?: string}> {
    const full: CacheEntry = {...entry, key, createdAt: new Date().toISOString()}
    const dir = this.entryDir(key)
    await atomicWriteDir(dir, async (tmp) => {
      if (artifactSource && entry.artifact) {
        const dest = path.join(tmp, 'out', entry.artifact.rel)
        await fsp.mkdir(path.dirname(dest), {recursive: true})
        await fsp.rename(artifactSource, dest)
      }
      await atomicWriteFile(path.join(tmp, 'entry.json'), `${JSON.stringify(full, null, 2)}\n`)
    })
    return {entry: full, artifactPath: entry.artifact ? path.join(dir, 'out', entry.artifact.rel) : undefined}
  }
}

/**
 * Digests of datasets and inputs, remembered by (path, size, mtime) so that a rerun with nothing
 * changed does not hash large files again.
 */
export class DigestMemo {
  private memo: Record<string, {size: number; mtimeMs: number; sha256: string; bytes: number}> = {}
  private dirty = false
  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    try {
      this.memo = JSON.parse(await fsp.readFile(this.file, 'utf8'))
    } catch {
      this.memo = {}
    }
  }

  async digest(p: string): Promise<{sha256: string; bytes: number}> {
    const st = await fsp.stat(p)
    if (st.isFile() || st.isDirectory()) {
      const hit = this.memo[p]
      if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return {sha256: hit.sha256, bytes: hit.bytes}
      const d = await digestPath(p)
      // A directory's mtime changes when entries are added or removed, not when a file inside is
      // rewritten: directories are digested every time.
      if (st.isFile()) {
        this.memo[p] = {size: st.size, mtimeMs: st.mtimeMs, ...d}
        this.dirty = true
      }
      return d
    }
    return digestPath(p)
  }

  async save(): Promise<void> {
    if (this.dirty && (await exists(path.dirname(this.file)))) await atomicWriteFile(this.file, JSON.stringify(this.memo))
  }
}

const require = createRequire(import.meta.url)

function packageVersion(name: string): string | undefined {
  try {
    return (require(`${name}/package.json`) as {version: string}).version
  } catch {
    return undefined
  }
}

/** Versions that change what a stage computes; part of every cache key. Read without loading the libraries. */
export function runtimeVersions(kilnVersion: string): Record<string, string> {
  const out: Record<string, string> = {kiln: kilnVersion, node: process.versions.node.split('.')[0]!}
  for (const name of ['onnxruntime-node', '@tensorflow/tfjs']) {
    const v = packageVersion(name)
    if (v) out[name] = v
  }
  return out
}

/** Canonical JSON (sorted keys) so equal params always hash equal. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    }
    return typeof v === 'bigint' ? v.toString() : v
  })
}

export interface KeyParts {
  inputSha256: string
  kind: string
  stageVersion: string
  params: unknown
  runtime: Record<string, string>
  datasets: Record<string, string>
  /** Digests standing in for secret values (never the values). */
  secrets: Record<string, string>
  pipelineInputSha256: string
}

export function cacheKey(parts: KeyParts): string {
  return sha256(canonicalJson(parts))
}
