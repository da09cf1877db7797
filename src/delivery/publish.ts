import {createHash} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import {KilnError, UsageError} from '../errors.js'
import {redact} from '../util/redact.js'
import {artifactFiles, type ArtifactFile} from './artifact-files.js'
import {utcDate, type TemplateVars} from './template.js'
import {isFileTarget, publishToDirectory} from './targets/file.js'
import type {PublishOutcome, PublishRequest} from './targets/types.js'

export type {PublishOutcome} from './targets/types.js'

/** Options for {@link publishArtifact}. */
export interface PublishOptions {
  /** Target URIs: plain paths, `file://`, `s3://bucket/prefix/`, `oip+http(s)://host:port[/model]`. */
  to: string[]
  /** Relative paths resolve against this directory (the pipeline file's). */
  baseDir: string
  /** Values for `{run.id}`, `{pipeline.name}`, `{stage.id}`; `{artifact.sha256}` and `{date}` are filled in. */
  vars: Omit<TemplateVars, 'artifact.sha256' | 'date'> & Partial<Pick<TemplateVars, 'artifact.sha256' | 'date'>>
  signal?: AbortSignal
  progress?: (message: string) => void
  /** Resolves `env:NAME` references (tokens); values are registered for redaction. */
  secret?: (ref: string) => string
}

export interface PublishResult {
  artifact: {path: string; sha256: string; bytes: number; files: number}
  targets: PublishOutcome[]
}

type TargetKind = 'file'
type Publisher = (req: PublishRequest & {baseDir: string}) => Promise<PublishOutcome>

const PUBLISHERS: Record<TargetKind, () => Promise<Publisher>> = {
  file: async () => publishToDirectory,
}

function targetKind(uri: string): TargetKind {
  if (isFileTarget(uri)) return 'file'
  throw new UsageError(`unsupported publish target '${redact(uri)}'`, {
    code: 'E_PUBLISH_URI',
    tryMessage: 'Use a directory path or file:///path.',
  })
}

/** The artifact digest as `digestPath` computes it, from digests already taken. */
function artifactDigest(isDir: boolean, files: ArtifactFile[]): string {
  if (!isDir) return files[0].sha256
  const hash = createHash('sha256')
  for (const f of files) hash.update(`${f.rel}\0${f.sha256}\0`)
  return hash.digest('hex')
}

/**
 * Publish one artifact (a file, or a directory from sign/encrypt) to every target in turn. Each
 * target either completes and verifies or leaves nothing visible; the first failure stops the
 * publish and names its target.
 */
export async function publishArtifact(artifactPath: string, options: PublishOptions): Promise<PublishResult> {
  if (options.to.length === 0) throw new UsageError('no publish target given', {code: 'E_PUBLISH_URI', tryMessage: 'Give at least one target URI.'})
  const kinds = options.to.map((uri) => targetKind(uri))
  const files = await artifactFiles(artifactPath)
  const isDir = (await fsp.stat(artifactPath)).isDirectory()
  const sha = artifactDigest(isDir, files)
  const vars: TemplateVars = {'artifact.sha256': sha, date: utcDate(), ...options.vars}
  const targets: PublishOutcome[] = []
  for (const [i, uri] of options.to.entries()) {
    const publish = await PUBLISHERS[kinds[i]]()
    try {
      targets.push(await publish({uri, files, vars, signal: options.signal, progress: options.progress, secret: options.secret, baseDir: options.baseDir}))
    } catch (error) {
      if (!(error instanceof KilnError)) throw error
      throw new KilnError(`publish to ${redact(uri)} failed: ${error.message}`, {code: error.code, exitCode: error.exitCode, tryMessage: error.tryMessage, cause: error})
    }
  }
  return {artifact: {path: artifactPath, sha256: sha, bytes: files.reduce((n, f) => n + f.bytes, 0), files: files.length}, targets}
}
