import {createHash} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import {KilnError, UsageError} from '../errors.js'
import {redact} from '../util/redact.js'
import {artifactFiles, type ArtifactFile} from './artifact-files.js'
import {utcDate, type TemplateVars} from './template.js'
import {isFileTarget, publishToDirectory} from './targets/file.js'
import type {OipSettings, PublishOutcome, PublishRequest, S3Settings} from './targets/types.js'

export type {OipSettings, PublishOutcome, S3Settings} from './targets/types.js'

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
  /** SHA-256 of a single-file artifact when already known (the run's artifact record), to skip a read. */
  knownSha256?: string
  /** Overrides for `s3://` targets. */
  s3?: S3Settings
  /** Settings for `oip+http(s)://` targets. */
  oip?: OipSettings
}

export interface PublishResult {
  artifact: {path: string; sha256: string; bytes: number; files: number}
  targets: PublishOutcome[]
}

type TargetKind = 'file' | 's3' | 'oip'
type Publisher = (req: PublishRequest & {baseDir: string}) => Promise<PublishOutcome>

// Remote targets load their clients only when used, keeping the AWS SDK out of start-up.
const PUBLISHERS: Record<TargetKind, () => Promise<Publisher>> = {
  file: async () => publishToDirectory,
  s3: async () => (await import('./targets/s3.js')).publishToS3,
  oip: async () => (await import('./targets/oip.js')).publishToOip,
}

function targetKind(uri: string): TargetKind {
  if (/^s3:\/\//i.test(uri)) return 's3'
  if (/^oip\+https?:\/\//i.test(uri)) return 'oip'
  if (isFileTarget(uri)) return 'file'
  throw new UsageError(`unsupported publish target '${redact(uri)}'`, {
    code: 'E_PUBLISH_URI',
    tryMessage: 'Use a directory path, file:///path, s3://bucket/prefix/ or oip+http(s)://host:port[/model].',
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
  const files = await artifactFiles(artifactPath, options.knownSha256)
  const isDir = (await fsp.stat(artifactPath)).isDirectory()
  const sha = artifactDigest(isDir, files)
  const vars: TemplateVars = {'artifact.sha256': sha, date: utcDate(), ...options.vars}
  const targets: PublishOutcome[] = []
  for (const [i, uri] of options.to.entries()) {
    const publish = await PUBLISHERS[kinds[i]]()
    try {
      targets.push(await publish({uri, files, vars, signal: options.signal, progress: options.progress, secret: options.secret, s3: options.s3, oip: options.oip, baseDir: options.baseDir}))
    } catch (error) {
      if (!(error instanceof KilnError)) throw error
      throw new KilnError(`publish to ${redact(uri)} failed: ${error.message}`, {code: error.code, exitCode: error.exitCode, tryMessage: error.tryMessage, cause: error})
    }
  }
  return {artifact: {path: artifactPath, sha256: sha, bytes: files.reduce((n, f) => n + f.bytes, 0), files: files.length}, targets}
}
