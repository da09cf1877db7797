import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import {exists} from '../../util/fs.js'
import {readLatest} from '../targets/file.js'
import type {VersionOrigin} from './version-loader.js'

/** One version of a model found in a repository. */
export interface VersionEntry {
  version: string
  origin: VersionOrigin
}

/** A model found in a repository, with the versions to load and the one requests get by default. */
export interface ModelEntry {
  name: string
  versions: VersionEntry[]
  defaultVersion: string
}

/** Where the server's models live: a folder, or an S3 prefix. */
export interface ModelSource {
  /** Shown in logs and the server metadata. */
  readonly description: string
  /** Every model the source holds. A model that cannot be listed becomes an entry with no versions and a reason. */
  list(): Promise<Array<ModelEntry | {name: string; error: string}>>
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

/** A loose model file: `NAME.onnx`, or encrypted / zstd-compressed as `NAME.onnx.kenc` / `NAME.onnx.zst`. */
const LOOSE_MODEL_RE = /^(.+)\.onnx(?:\.kenc|\.zst)?$/i

/** The model name of a loose model file, or undefined when the file is not one. */
export function looseModelName(file: string): string | undefined {
  return LOOSE_MODEL_RE.exec(file)?.[1]
}

/** Model names appear in URLs: keep them to what needs no escaping. */
export function checkModelName(name: string): string | undefined {
  return NAME_RE.test(name) ? undefined : `model name '${name}' must start with a letter or digit and use only letters, digits, '.', '_' and '-'`
}

/** Numeric versions sort as numbers (2 < 10), others as text; the default is the greatest. */
export function compareVersions(a: string, b: string): number {
  const na = /^\d+$/.test(a)
  const nb = /^\d+$/.test(b)
  if (na && nb) return Number(a) - Number(b)
  if (na !== nb) return na ? -1 : 1
  return a < b ? -1 : a > b ? 1 : 0
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory()
  } catch {
    return false
  }
}

/**
 * The versions of one model folder. A folder with a `latest` pointer is a `publish` root and serves
 * the version the pointer names (older versions stay on disk, unserved, like a rollback point); a
 * folder of version sub-folders serves them all; a folder holding the model files itself is one version.
 */
export async function readModelFolder(name: string, dir: string): Promise<ModelEntry> {
  const latest = await readLatest(dir)
  if (latest) {
    if (typeof latest.version !== 'string' || !(await isDir(path.join(dir, latest.version)))) {
      throw new KilnError(`the latest pointer names version '${String(latest.version)}', which is not a folder here`, {code: 'E_SERVE_LAYOUT'})
    }
    return {name, versions: [{version: latest.version, origin: {kind: 'dir', dir: path.join(dir, latest.version)}}], defaultVersion: latest.version}
  }
  const entries = await fsp.readdir(dir, {withFileTypes: true})
  const subdirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name)
  const hasFiles = entries.some((e) => e.isFile() && /\.onnx/i.test(e.name))
  if (hasFiles || subdirs.length === 0) return {name, versions: [{version: '1', origin: {kind: 'dir', dir}}], defaultVersion: '1'}
  const versions = subdirs.sort(compareVersions).map((v) => ({version: v, origin: {kind: 'dir', dir: path.join(dir, v)} as VersionOrigin}))
  return {name, versions, defaultVersion: versions.at(-1)!.version}
}

/**
 * A folder of models: each `NAME.onnx` file (or `NAME.onnx.kenc`, `NAME.onnx.zst`) is model NAME (version 1), each sub-folder a model
 * named after it (see {@link readModelFolder}). A folder that is itself a `publish` root (it has a
 * `latest` pointer) is one model named after the folder.
 */
export function directorySource(root: string): ModelSource {
  return {
    description: root,
    async list() {
      if (!(await isDir(root))) {
        throw new KilnError(`model repository ${root} is not a folder`, {code: 'E_SERVE_REPO', exitCode: 2, tryMessage: 'Give a folder of .onnx files, a folder that `kiln publish` wrote, or an s3:// URI.'})
      }
      if (await exists(path.join(root, 'latest'))) {
        const name = path.basename(path.resolve(root))
        try {
          return [await readModelFolder(name, root)]
        } catch (error) {
          return [{name, error: (error as Error).message}]
        }
      }
      const out: Array<ModelEntry | {name: string; error: string}> = []
      for (const e of (await fsp.readdir(root, {withFileTypes: true})).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        if (e.name.startsWith('.')) continue
        const name = e.isFile() ? looseModelName(e.name) : undefined
        if (name) {
          out.push({name, versions: [{version: '1', origin: {kind: 'file', file: path.join(root, e.name)}}], defaultVersion: '1'})
        } else if (e.isDirectory()) {
          try {
            out.push(await readModelFolder(e.name, path.join(root, e.name)))
          } catch (error) {
            out.push({name: e.name, error: (error as Error).message})
          }
        }
      }
      return out
    },
  }
}
