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
  /** Overrides for S3 targets (the AWS environment and config chain fill in the rest). */
  s3?: S3Settings
  /** Settings for Open Inference Protocol targets. */
  oip?: OipSettings
}

/** S3 connection and transfer settings; unset fields come from the standard AWS chain. */
export interface S3Settings {
  /** Endpoint URL, e.g. a Ceph radosgw or MinIO (default: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS). */
  endpoint?: string
  /** Region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`). */
  region?: string
  /** Address buckets as a path (`host/bucket/key`); defaults to true when a custom endpoint is set. */
  forcePathStyle?: boolean
  /** Give up on a request with no progress for this long (default 60 s); it is then retried. */
  timeoutMs?: number
  /** Retries per object after a transient failure (default 4), with exponential backoff. */
  retries?: number
  /** Multipart part size in bytes (default 8 MiB, minimum 5 MiB). */
  partSize?: number
  /** Parts uploaded in parallel per object (default 4). */
  queueSize?: number
}

/** Settings for Open Inference Protocol targets. */
export interface OipSettings {
  /** Bearer token, as `env:NAME` (default: the `KILN_SERVE_TOKEN` environment variable when set). */
  token?: string
  /** Extra request headers, e.g. a custom auth header; values may be `env:NAME`. */
  headers?: Record<string, string>
  /** Model name when the URI has none (default: the pipeline name). */
  model?: string
  /** How long to wait for the model to report ready (default 120 s). */
  readyTimeoutMs?: number
}

export function latestPointer(version: string, files: ArtifactFile[], now = new Date()): LatestPointer {
  return {version, publishedAt: now.toISOString(), files: files.map((f) => ({path: f.rel, sha256: f.sha256, bytes: f.bytes}))}
}

export function sameFiles(a: {path: string; sha256: string}[], b: ArtifactFile[]): boolean {
  if (a.length !== b.length) return false
  const want = new Map(b.map((f) => [f.rel, f.sha256]))
  return a.every((f) => want.get(f.path) === f.sha256)
}
