import {createHash, randomBytes} from 'node:crypto'
import {createReadStream, createWriteStream} from 'node:fs'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {pipeline} from 'node:stream/promises'
import type {Readable} from 'node:stream'

/** A sibling temp name in the same directory, so the final rename is atomic on one filesystem. */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
}

/**
 * Write a file atomically: the data goes to a temp file that is fsynced and renamed over the
 * target, so a reader (or a later run) never sees a half-written file.
 */
export async function atomicWriteFile(target: string, data: string | Uint8Array | Iterable<Uint8Array>): Promise<void> {
  await fsp.mkdir(path.dirname(target), {recursive: true})
  const tmp = tempPathFor(target)
  try {
    const fh = await fsp.open(tmp, 'w')
    try {
      if (typeof data === 'string' || data instanceof Uint8Array) await fh.writeFile(data)
      else for (const chunk of data) await fh.write(chunk)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fsp.rename(tmp, target)
  } catch (error) {
    await fsp.rm(tmp, {force: true})
    throw error
  }
}

/** Stream into a file atomically (temp + fsync + rename). The temp file is removed on failure. */
export async function atomicWriteStream(target: string, source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
  await fsp.mkdir(path.dirname(target), {recursive: true})
  const tmp = tempPathFor(target)
  try {
    await pipeline(source, createWriteStream(tmp))
    const fh = await fsp.open(tmp, 'r+')
    await fh.sync()
    await fh.close()
    await fsp.rename(tmp, target)
  } catch (error) {
    await fsp.rm(tmp, {force: true})
    throw error
  }
}

/**
 * Make a directory appear atomically: build it under a temp name with `fill`, then rename it into
 * place. If `target` exists it is replaced only after the new one is complete.
 */
export async function atomicWriteDir(target: string, fill: (dir: string) => Promise<void>): Promise<void> {
  await fsp.mkdir(path.dirname(target), {recursive: true})
  const tmp = tempPathFor(target)
  await fsp.mkdir(tmp, {recursive: true})
  try {
    await fill(tmp)
    const old = tempPathFor(target)
    let moved = false
    try {
      await fsp.rename(target, old)
      moved = true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
    await fsp.rename(tmp, target)
    if (moved) await fsp.rm(old, {recursive: true, force: true})
  } catch (error) {
    await fsp.rm(tmp, {recursive: true, force: true})
    throw error
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(file, {highWaterMark: 1 << 20}), hash)
  return hash.digest('hex')
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p)
    return true
  } catch {
    return false
  }
}

/** Every regular file under `dir`, as POSIX relative paths, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  async function walk(rel: string): Promise<void> {
    const entries = await fsp.readdir(path.join(dir, rel), {withFileTypes: true})
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) await walk(r)
      else if (e.isFile()) out.push(r)
    }
  }
  await walk('')
  return out.sort()
}

/** Digest of a file or a directory (sorted relative paths + file digests). */
export async function digestPath(p: string): Promise<{sha256: string; bytes: number}> {
  const st = await fsp.stat(p)
  if (st.isFile()) return {sha256: await sha256File(p), bytes: st.size}
  const hash = createHash('sha256')
  let bytes = 0
  for (const rel of await listFiles(p)) {
    const f = path.join(p, rel)
    const s = await fsp.stat(f)
    bytes += s.size
    hash.update(`${rel}\0${await sha256File(f)}\0`)
  }
  return {sha256: hash.digest('hex'), bytes}
}
