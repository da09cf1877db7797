import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {UsageError} from '../../errors.js'
import {jsonLogger, type LogLevel} from './log.js'
import {type RunningServer, startServer} from './server.js'
import {directorySource, type ModelSource} from './sources.js'
import type {S3SourceOptions} from './s3-source.js'
import type {LoadSecurity} from './version-loader.js'

export type {RunningServer} from './server.js'

/** Options of {@link serve}, as `kiln serve` takes them. */
export interface ServeOptions {
  /** A folder (plain `.onnx` files, or what `publish` wrote), an `s3://bucket/prefix/` URI, or nothing for an empty repository. */
  repository?: string
  host: string
  port: number
  /** Token for the repository API (load/unload/index). */
  token?: string
  /** Inference workers; default 1. */
  pool?: number
  /** Intra-op threads per session; default: the cores divided among the workers. */
  threads?: number
  /** Waiting requests before 429; default 64. */
  maxQueue?: number
  /** Largest request body in bytes; default 64 MiB. */
  maxBody?: number
  /** Seconds shutdown waits for in-flight requests; default 30. */
  drainTimeoutSeconds?: number
  /** S3 connection settings for an s3:// repository (the AWS environment is honoured too). */
  s3?: S3SourceOptions
  security: LoadSecurity
  logLevel?: LogLevel
  version: string
  onListening?: (url: string) => void
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  const v = value ?? fallback
  if (!Number.isInteger(v) || v < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${value}`, {tryMessage: `Pass --${name} ${fallback}.`})
  return v
}

async function sourceFor(repository: string | undefined, s3: S3SourceOptions | undefined): Promise<ModelSource | undefined> {
  if (!repository) return undefined
  if (repository.startsWith('s3://')) {
    const {s3Source} = await import('./s3-source.js')
    return s3Source(repository, s3)
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(repository) && !repository.startsWith('file://')) {
    throw new UsageError(`cannot serve from '${repository}'`, {tryMessage: 'Give a folder, file:///path or s3://bucket/prefix/.'})
  }
  return directorySource(path.resolve(repository.startsWith('file://') ? fileURLToPath(repository) : repository))
}

/** Start serving; the returned server runs until `close()`. */
export async function serve(options: ServeOptions): Promise<RunningServer> {
  // 0: inference on the HTTP thread itself (see InlinePool).
  const pool = positiveInt('pool', options.pool, 1, 0)
  const threads = positiveInt('threads', options.threads, Math.max(1, Math.floor(os.availableParallelism() / Math.max(1, pool))))
  return startServer({
    host: options.host,
    port: positiveInt('port', options.port, 8000, 0),
    token: options.token,
    pool,
    threads,
    maxQueue: positiveInt('max-queue', options.maxQueue, 64, 0),
    maxBody: positiveInt('max-body', options.maxBody, 64 * 1024 * 1024, 1024),
    drainTimeoutMs: positiveInt('drain-timeout', options.drainTimeoutSeconds, 30, 0) * 1000,
    source: await sourceFor(options.repository, options.s3),
    security: options.security,
    logger: jsonLogger(options.logLevel ?? 'info'),
    version: options.version,
    onListening: options.onListening,
  })
}
