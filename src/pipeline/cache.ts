import * as fsp from 'node:fs/promises'
import {createRequire} from 'node:module'
import path from 'node:path'
import type {GateResult} from '../stages/types.js'
import {createHash} from 'node:crypto'
import {atomicWriteDir, atomicWriteFile, digestPath, exists, listFiles, sha256} from '../util/fs.js'

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
  async get(key: string, memo: DigestMemo): Promise<(CacheEntry & {outDir: string; artifactPath?: string}) | undefined> {
    const dir = this.entryDir(key)
    let entry: CacheEntry
    try {
      entry = JSON.parse(await fsp.readFile(path.join(dir, 'entry.json'), 'utf8')) as CacheEntry
    } catch {
      return undefined
    }
    const outDir = path.join(dir, 'out')
    if (!entry.artifact) return {...entry, outDir}
    // The output is re-digested (memoised by size and mtime) so a damaged or edited entry is never used.
    try {
      const d = await artifactDigest(outDir, entry.artifact.rel, memo)
      if (d.sha256 !== entry.artifact.sha256) throw new Error('digest mismatch')
    } catch {
      await fsp.rm(dir, {recursive: true, force: true})
      return undefined
    }
    return {...entry, outDir, artifactPath: path.join(outDir, entry.artifact.rel)}
  }

  /**
   * Store a stage result. The stage's whole output directory moves into the entry (an artifact may have
   * companions, e.g. an ONNX model's external data file). Returns the entry's output directory.
   */
  async put(key: string, entry: Omit<CacheEntry, 'key' | 'createdAt'>, outDirSource?: string): Promise<{entry: CacheEntry; outDir: string}> {
    const full: CacheEntry = {...entry, key, createdAt: new Date().toISOString()}
    const dir = this.entryDir(key)
    await atomicWriteDir(dir, async (tmp) => {
      if (outDirSource) await fsp.rename(outDirSource, path.join(tmp, 'out'))
      else await fsp.mkdir(path.join(tmp, 'out'))
      await atomicWriteFile(path.join(tmp, 'entry.json'), `${JSON.stringify(full, null, 2)}\n`)
    })
    return {entry: full, outDir: path.join(dir, 'out')}
  }
}

/**
 * Digest of a stage output: the artifact file's own digest when it is the only file the stage wrote;
 * otherwise the digest of the whole output directory, so companions (external data) are covered.
 */
export async function artifactDigest(outDir: string, rel: string, memo: DigestMemo): Promise<{sha256: string; bytes: number}> {
  const files = await listFiles(outDir)
  if (rel !== '.' && files.length === 1 && files[0] === rel.split(path.sep).join('/')) return memo.digestFile(path.join(outDir, rel))
  return memo.digestSet(outDir, files)
}

/**
 * Digests of datasets and inputs, remembered by (path, size, mtime) so that a rerun with nothing
 * changed does not hash large files again.
 */
export class DigestMemo {
  private memo: Record<string, {size: number; mtimeMs: number; sha256: string; bytes: number; derived?: Record<string, unknown>}> = {}
  private dirty = false
  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    try {
      this.memo = JSON.parse(await fsp.readFile(this.file, 'utf8'))
    } catch {
      this.memo = {}
    }
  }

  /** A file's digest, re-hashed only when its size or mtime changed. */
  async digestFile(p: string): Promise<{sha256: string; bytes: number}> {
    const st = await fsp.stat(p)
    const hit = this.memo[p]
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return {sha256: hit.sha256, bytes: hit.bytes}
    const d = await digestPath(p)
    this.memo[p] = {size: st.size, mtimeMs: st.mtimeMs, ...d}
    this.dirty = true
    return d
  }

  /**
   * The digest of a set of files under `base` (relative POSIX paths), in the same form as
   * `digestPath` gives a directory, with each file's digest memoised.
   */
  async digestSet(base: string, rels: string[]): Promise<{sha256: string; bytes: number}> {
    const hash = createHash('sha256')
    let bytes = 0
    for (const rel of rels) {
      const d = await this.digestFile(path.join(base, rel))
      bytes += d.bytes
      hash.update(`${rel}\0${d.sha256}\0`)
    }
    return {sha256: hash.digest('hex'), bytes}
  }

  /**
   * A value computed from a file's contents (the external data files an ONNX model names, say),
   * kept with its digest and recomputed only when the file's size or mtime changed: a cached run
   * of a large model need not parse it again.
   */
  async derived<T>(p: string, key: string, compute: () => Promise<T>): Promise<T> {
    await this.digestFile(p)
    const rec = this.memo[p]!
    if (rec.derived && key in rec.derived) return rec.derived[key] as T
    const value = await compute()
    // The file may have changed while it was read: keep the value only if its record still stands.
    const st = await fsp.stat(p)
    if (this.memo[p] === rec && st.size === rec.size && st.mtimeMs === rec.mtimeMs) {
      rec.derived = {...rec.derived, [key]: value}
      this.dirty = true
    }
    return value
  }

  /** A file's or a directory's digest (a directory is listed every time: its mtime misses edits inside). */
  async digest(p: string): Promise<{sha256: string; bytes: number}> {
    const st = await fsp.stat(p)
    return st.isDirectory() ? this.digestSet(p, await listFiles(p)) : this.digestFile(p)
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
