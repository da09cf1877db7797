import {createHash} from 'node:crypto'
import {createReadStream, createWriteStream} from 'node:fs'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {Transform} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {fileURLToPath} from 'node:url'
import {AbortedError, KilnError} from '../../errors.js'
import {atomicWriteFile, exists, listFiles, sha256File, tempPathFor} from '../../util/fs.js'
import type {ArtifactFile} from '../artifact-files.js'
import {splitVersion} from '../template.js'
import {latestPointer, sameFiles, type LatestPointer, type PublishOutcome, type PublishRequest} from './types.js'

/** Whether a target URI is a local directory (a plain path or `file://`). */
export function isFileTarget(uri: string): boolean {
  return uri.startsWith('file:') || !/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)
}

/**
 * The filesystem path of a `file://` URI or plain path. Braces are kept as written (URL parsing
 * would percent-encode them before the placeholders are expanded).
 */
export function fileTargetPath(uri: string, baseDir: string): string {
  let p = uri
  if (p.startsWith('file://')) {
    p = p.slice('file://'.length)
    if (p.startsWith('localhost/')) p = p.slice('localhost'.length)
    if (!p.startsWith('/')) {
      throw new KilnError(`file URI '${uri}' must be absolute (file:///path)`, {code: 'E_PUBLISH_URI', exitCode: 2, tryMessage: 'Write file:///abs/path, or a plain relative path such as ./dist/models/.'})
    }
    p = decodeURIComponent(p.replace(/%(?![0-9a-f]{2})/gi, '%25'))
  } else if (p.startsWith('file:')) {
    p = fileURLToPath(p)
  }
  return path.resolve(baseDir, p)
}

/** Copy one file, hashing the bytes as they are written, and fsync it. */
async function copyVerified(file: ArtifactFile, dest: string, signal?: AbortSignal): Promise<void> {
  await fsp.mkdir(path.dirname(dest), {recursive: true})
  const hash = createHash('sha256')
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk)
      cb(null, chunk)
    },
  })
  await pipeline(createReadStream(file.abs, {highWaterMark: 1 << 20}), tap, createWriteStream(dest), {signal})
  const fh = await fsp.open(dest, 'r+')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
  const got = hash.digest('hex')
  if (got !== file.sha256) {
    throw new KilnError(`${file.rel} changed while it was being published (sha256 ${got}, expected ${file.sha256})`, {code: 'E_PUBLISH_CHANGED', tryMessage: 'Do not modify the artifact during publish; run the publish again.'})
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await fsp.open(dir, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  }
}

async function readVersion(dir: string): Promise<{path: string; sha256: string}[]> {
  const rels = await listFiles(dir)
  return Promise.all(rels.map(async (rel) => ({path: rel, sha256: await sha256File(path.join(dir, rel))})))
}

export async function readLatest(root: string): Promise<LatestPointer | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path.join(root, 'latest'), 'utf8')) as LatestPointer
  } catch {
    return undefined
  }
}

function existsError(versionDir: string): KilnError {
  return new KilnError(`version ${versionDir} already exists with different content; published versions are never overwritten`, {
    code: 'E_PUBLISH_EXISTS',
    tryMessage: 'Publish under a new version, e.g. a target ending in {run.id}/, or remove that version deliberately.',
  })
}

/**
 * Publish to a local directory: the version folder is assembled under a temporary name and renamed
 * into place (complete or absent), then `latest` is replaced atomically. An existing version is never
 * replaced; publishing identical files again is a no-op.
 */
export async function publishToDirectory(req: PublishRequest & {baseDir: string}): Promise<PublishOutcome> {
  const started = performance.now()
  const {root: rootRel, version} = splitVersion(fileTargetPath(req.uri, req.baseDir), req.vars)
  const root = path.resolve(rootRel)
  const versionDir = path.join(root, version)
  const bytes = req.files.reduce((n, f) => n + f.bytes, 0)
  const outcome = (status: PublishOutcome['status']): PublishOutcome => ({
    uri: `file://${versionDir}/`,
    version,
    status,
    files: req.files.length,
    bytes,
    seconds: (performance.now() - started) / 1000,
  })

  if (await exists(versionDir)) {
    if (!sameFiles(await readVersion(versionDir), req.files)) throw existsError(versionDir)
    // A crash between the version rename and the pointer leaves no pointer: complete it, but never
    // move an existing pointer back to an older version.
    if (!(await readLatest(root))) await atomicWriteFile(path.join(root, 'latest'), `${JSON.stringify(latestPointer(version, req.files), null, 2)}\n`)
    return outcome('unchanged')
  }

  await fsp.mkdir(root, {recursive: true})
  const tmp = tempPathFor(versionDir)
  await fsp.mkdir(tmp)
  try {
    for (const [i, f] of req.files.entries()) {
      if (req.signal?.aborted) throw new AbortedError()
      req.progress?.(`${versionDir}: ${i + 1}/${req.files.length} ${f.rel}`)
      await copyVerified(f, path.join(tmp, ...f.rel.split('/')), req.signal)
    }
    await fsyncDir(tmp)
    try {
      await fsp.rename(tmp, versionDir)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw existsError(versionDir)
      throw error
    }
  } catch (error) {
    await fsp.rm(tmp, {recursive: true, force: true})
    throw error
  }
  await fsyncDir(root)
  await atomicWriteFile(path.join(root, 'latest'), `${JSON.stringify(latestPointer(version, req.files), null, 2)}\n`)
  return outcome('published')
}
