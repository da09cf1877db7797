import type {ArtifactFile} from '../artifact-files.js'
import type {TemplateVars} from '../template.js'

/** The pointer written last beside the versions, so a reader only ever follows a complete version. */
export interface LatestPointer {
  version: string
  publishedAt: string
  files: {path: string; sha256: string; bytes: number}[]
}

/** What one target did, as shown in the stage metrics and `kiln publish` output. */
export interface PublishOutcome {
  /** The expanded target URI (version included). */
  uri: string
  version: string
  /** `published`, or `unchanged` when the same version already held exactly these files. */
  status: 'published' | 'unchanged'
  files: number
  bytes: number
  seconds: number
  /** Attempts beyond the first that transient failures needed (S3, OIP). */
  retries?: number
}

export interface PublishRequest {
  /** The target as written (templated). */
  uri: string
  files: ArtifactFile[]
  vars: TemplateVars
  signal?: AbortSignal
  progress?: (message: string) => void
  /** Resolve `env:NAME` secret references (tokens); the value is registered for redaction. */
  secret?: (ref: string) => string
}

export function latestPointer(version: string, files: ArtifactFile[], now = new Date()): LatestPointer {
  return {version, publishedAt: now.toISOString(), files: files.map((f) => ({path: f.rel, sha256: f.sha256, bytes: f.bytes}))}
}

export function sameFiles(a: {path: string; sha256: string}[], b: ArtifactFile[]): boolean {
  if (a.length !== b.length) return false
  const want = new Map(b.map((f) => [f.rel, f.sha256]))
  return a.every((f) => want.get(f.path) === f.sha256)
}
