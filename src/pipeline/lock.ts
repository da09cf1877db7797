import * as fsp from 'node:fs/promises'
import {atomicWriteFile} from '../util/fs.js'

/**
 * `kiln.lock`, beside the pipeline file: what each stage's output was derived from. It holds keys and
 * digests only — never parameter values, so never a secret. CI caches `.kiln/cache` keyed on this file.
 */
export interface LockFile {
  lockfileVersion: 1
  pipeline: string
  input: {path: string; sha256: string}
  runtime: Record<string, string>
  stages: LockStage[]
}

export interface LockStage {
  id: string
  uses: string
  version: string
  /** Cache key: hash of input digest, params, stage version, runtime versions and dataset digests. */
  key: string
  input: string
  params: string
  datasets: Record<string, string>
  output?: {sha256: string; bytes: number; format: string}
}

export async function readLock(file: string): Promise<LockFile | undefined> {
  try {
    const lock = JSON.parse(await fsp.readFile(file, 'utf8')) as LockFile
    return lock.lockfileVersion === 1 ? lock : undefined
  } catch {
    return undefined
  }
}

export async function writeLock(file: string, lock: LockFile): Promise<void> {
  await atomicWriteFile(file, `${JSON.stringify(lock, null, 2)}\n`)
}
