import {createReadStream} from 'node:fs'
import * as fsp from 'node:fs/promises'
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import {Upload} from '@aws-sdk/lib-storage'
import pRetry, {AbortError as StopRetry} from 'p-retry'
import {KilnError} from '../../errors.js'
import type {ArtifactFile} from '../artifact-files.js'
import {SIGNATURE_FILE} from '../sign.js'
import {expandTemplate, splitVersion} from '../template.js'
import {createS3Client, effectiveEndpoint, parseS3Uri, type RequestStats} from './s3-client.js'
import {latestPointer, sameFiles, type LatestPointer, type PublishOutcome, type PublishRequest, type S3Settings} from './types.js'

const VERIFY_RANGE = 64 * 1024
const MIB = 1 << 20

interface S3ErrorLike {
  name?: string
  code?: string
  message?: string
  $metadata?: {httpStatusCode?: number}
  $retryable?: unknown
}

function status(e: unknown): number | undefined {
  return (e as S3ErrorLike)?.$metadata?.httpStatusCode
}

/** Errors worth another attempt: the network, timeouts, throttling and server-side 5xx. */
export function isTransient(e: unknown): boolean {
  if (e instanceof KilnError) return false
  const err = e as S3ErrorLike
  const code = status(e)
  if (code !== undefined && (code >= 500 || code === 408 || code === 429)) return true
  if (err?.$retryable) return true
  // A digest mismatch means bytes were damaged on the way: sending them again is the cure.
  const names = ['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'InternalError', 'ServiceUnavailable', 'BadDigest', 'XAmzContentSHA256Mismatch', 'IncompleteBody', 'ConditionalRequestConflict']
  if (err?.name && names.includes(err.name)) return true
  const codes = ['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ENOTFOUND', 'ERR_STREAM_PREMATURE_CLOSE']
  if (err?.code && codes.includes(err.code)) return true
  return /socket hang up|ECONNRESET|EPIPE|premature close|aborted|timed? ?out|Unexpected end of|Parse Error/i.test(err?.message ?? '')
}

function describe(e: unknown): string {
  const err = e as S3ErrorLike
  const code = status(e)
  return `${err?.name ?? 'Error'}${code ? ` (HTTP ${code})` : ''}: ${err?.message ?? String(e)}`
}

/** Turn an S3 failure into a KilnError that says what to do. */
function s3Error(e: unknown, what: string, settings: S3Settings | undefined, bucket: string): KilnError {
  if (e instanceof KilnError) return e
  const err = e as S3ErrorLike
  const where = effectiveEndpoint(settings) ?? 'AWS S3'
  if (err?.name === 'NoSuchBucket') {
    return new KilnError(`bucket '${bucket}' does not exist at ${where}`, {code: 'E_S3_BUCKET', cause: e, tryMessage: 'Create the bucket first, or check the bucket name and endpoint.'})
  }
  if (['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'CredentialsProviderError'].includes(err?.name ?? '') || status(e) === 403) {
    return new KilnError(`S3 refused ${what} at ${where}: ${describe(e)}`, {code: 'E_S3_AUTH', cause: e, tryMessage: 'Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or your AWS profile) and the bucket policy.'})
  }
  return new KilnError(`S3 ${what} failed at ${where}: ${describe(e)}`, {code: 'E_S3', cause: e, tryMessage: 'Check the endpoint, region and path style (with.s3 or AWS_ENDPOINT_URL_S3, AWS_REGION); transient errors were already retried.'})
}

interface Ctx {
  client: S3Client
  bucket: string
  settings: S3Settings
  retries: number
  signal?: AbortSignal
}

async function withRetry<T>(ctx: Ctx, what: string, fn: () => Promise<T>): Promise<T> {
  return pRetry(
    async () => {
      try {
        return await fn()
      } catch (error) {
        if (!isTransient(error)) throw new StopRetry(s3Error(error, what, ctx.settings, ctx.bucket))
        throw error
      }
    },
    {
      retries: ctx.settings.retries ?? 4,
      factor: 2,
      minTimeout: 200,
      maxTimeout: 5000,
      signal: ctx.signal,
      onFailedAttempt: ({retriesLeft}) => {
        if (retriesLeft > 0) ctx.retries++
      },
    },
  ).catch((error: unknown) => {
    throw s3Error(error, what, ctx.settings, ctx.bucket)
  })
}

async function head(ctx: Ctx, key: string): Promise<{bytes: number; sha256?: string} | undefined> {
  return withRetry(ctx, `HEAD ${key}`, async () => {
    try {
      const r = await ctx.client.send(new HeadObjectCommand({Bucket: ctx.bucket, Key: key}))
      return {bytes: r.ContentLength ?? -1, sha256: r.Metadata?.sha256}
    } catch (error) {
      if (status(error) === 404 || (error as S3ErrorLike)?.name === 'NotFound') return undefined
      throw error
    }
  })
}

async function listKeys(ctx: Ctx, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let token: string | undefined
  do {
    const r = await withRetry(ctx, `LIST ${prefix}`, () => ctx.client.send(new ListObjectsV2Command({Bucket: ctx.bucket, Prefix: prefix, ContinuationToken: token})))
    for (const o of r.Contents ?? []) if (o.Key) keys.push(o.Key)
    token = r.IsTruncated ? r.NextContinuationToken : undefined
  } while (token)
  return keys
}

async function readRange(fh: fsp.FileHandle, start: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length)
  const {bytesRead} = await fh.read(b, 0, length, start)
  return b.subarray(0, bytesRead)
}

/** Read back what was stored: size and SHA-256 metadata by HEAD, then the first and last bytes by ranged GET. */
async function verifyObject(ctx: Ctx, key: string, f: ArtifactFile): Promise<void> {
  const h = await head(ctx, key)
  if (!h || h.bytes !== f.bytes || h.sha256 !== f.sha256) {
    throw new KilnError(`s3://${ctx.bucket}/${key} does not match after upload (size ${h?.bytes ?? 'missing'} vs ${f.bytes}, sha256 ${h?.sha256 ?? 'missing'} vs ${f.sha256})`, {code: 'E_S3_VERIFY', tryMessage: 'Retry the publish; if it persists, check the S3 server.'})
  }
  if (f.bytes === 0) return
  const fh = await fsp.open(f.abs, 'r')
  try {
    const ranges = f.bytes <= 2 * VERIFY_RANGE ? [[0, f.bytes]] : [[0, VERIFY_RANGE], [f.bytes - VERIFY_RANGE, VERIFY_RANGE]]
    for (const [start, length] of ranges) {
      const remote = await withRetry(ctx, `GET ${key}`, async () => {
        const r = await ctx.client.send(new GetObjectCommand({Bucket: ctx.bucket, Key: key, Range: `bytes=${start}-${start + length - 1}`}))
        return Buffer.from(await r.Body!.transformToByteArray())
      })
      if (!remote.equals(await readRange(fh, start, length))) {
        throw new KilnError(`s3://${ctx.bucket}/${key} bytes ${start}-${start + length - 1} differ from the local file after upload`, {code: 'E_S3_VERIFY', tryMessage: 'Retry the publish; if it persists, check the S3 server.'})
      }
    }
  } finally {
    await fh.close()
  }
}

async function abortQuietly(ctx: Ctx, key: string, uploadId: string): Promise<void> {
  await withRetry(ctx, `abort upload of ${key}`, async () => {
    try {
      await ctx.client.send(new AbortMultipartUploadCommand({Bucket: ctx.bucket, Key: key, UploadId: uploadId}))
    } catch (error) {
      if (status(error) !== 404) throw error
    }
  }).catch(() => {
    // The server may be unreachable; an unfinished multipart upload is never a visible object.
  })
}

/**
 * Upload one file unless its key exists (`If-None-Match: *`). Each attempt starts a fresh
 * multipart upload and aborts it on failure; a 412 after a lost reply is accepted only when the
 * stored object is this very file.
 */
async function putFile(ctx: Ctx, key: string, f: ArtifactFile): Promise<void> {
  const partSize = Math.max(ctx.settings.partSize ?? 8 * MIB, 5 * MIB)
  await withRetry(ctx, `upload ${key}`, async () => {
    const upload = new Upload({
      client: ctx.client,
      partSize,
      queueSize: ctx.settings.queueSize ?? 4,
      leavePartsOnError: false,
      params: {
        Bucket: ctx.bucket,
        Key: key,
        Body: createReadStream(f.abs, {highWaterMark: MIB}),
        ContentLength: f.bytes,
        ContentType: key.endsWith('.json') || key.endsWith('.sig') ? 'application/json' : 'application/octet-stream',
        Metadata: {sha256: f.sha256},
        IfNoneMatch: '*',
      },
    })
    const onAbort = (): void => void upload.abort()
    ctx.signal?.addEventListener('abort', onAbort)
    try {
      await upload.done()
    } catch (error) {
      const uploadId = (upload as unknown as {uploadId?: string}).uploadId
      if (uploadId) await abortQuietly(ctx, key, uploadId)
      if (status(error) === 412 || (error as S3ErrorLike)?.name === 'PreconditionFailed') {
        const h = await head(ctx, key)
        if (h && h.bytes === f.bytes && h.sha256 === f.sha256) return
        throw new KilnError(`s3://${ctx.bucket}/${key} already exists with different content; published versions are never overwritten`, {code: 'E_PUBLISH_EXISTS', tryMessage: 'Publish under a new version (a prefix ending in {run.id}/).'})
      }
      throw error
    } finally {
      ctx.signal?.removeEventListener('abort', onAbort)
    }
  })
}

async function putLatest(ctx: Ctx, key: string, pointer: LatestPointer): Promise<void> {
  const body = Buffer.from(`${JSON.stringify(pointer, null, 2)}\n`)
  await withRetry(ctx, `PUT ${key}`, () => ctx.client.send(new PutObjectCommand({Bucket: ctx.bucket, Key: key, Body: body, ContentType: 'application/json'})))
}

async function readLatest(ctx: Ctx, key: string): Promise<LatestPointer | undefined> {
  return withRetry(ctx, `GET ${key}`, async () => {
    try {
      const r = await ctx.client.send(new GetObjectCommand({Bucket: ctx.bucket, Key: key}))
      return JSON.parse(await r.Body!.transformToString()) as LatestPointer
    } catch (error) {
      if (status(error) === 404 || (error as S3ErrorLike)?.name === 'NoSuchKey') return undefined
      throw error
    }
  })
}

/**
 * Publish to `s3://bucket/prefix/`: every file of the version is uploaded (multipart, Content-MD5
 * per part, SHA-256 in metadata, never overwriting) and read back; the signature bundle goes last
 * among them and the `latest` pointer after all. Any final failure removes what this publish
 * created, so readers never see a partial version.
 */
export async function publishToS3(req: PublishRequest): Promise<PublishOutcome> {
  const started = performance.now()
  const parsed = parseS3Uri(req.uri)
  const bucket = expandTemplate(parsed.bucket, req.vars)
  const {root, version} = splitVersion(parsed.key, req.vars)
  const prefix = `${root}${version}/`
  const settings = req.s3 ?? {}
  const stats: RequestStats = {commands: 0, attempts: 0}
  const ctx: Ctx = {client: createS3Client(settings, stats), bucket, settings, retries: 0, signal: req.signal}
  const bytes = req.files.reduce((n, f) => n + f.bytes, 0)
  const outcome = (st: PublishOutcome['status']): PublishOutcome => ({
    uri: `s3://${bucket}/${prefix}`,
    version,
    status: st,
    files: req.files.length,
    bytes,
    seconds: (performance.now() - started) / 1000,
    // Whole-object retries here plus the request retries the SDK made on its own.
    retries: ctx.retries + Math.max(0, stats.attempts - stats.commands),
  })
  try {
    const existing = await listKeys(ctx, prefix)
    if (existing.length > 0) {
      const stored = await Promise.all(existing.map(async (k) => ({path: k.slice(prefix.length), sha256: (await head(ctx, k))?.sha256 ?? ''})))
      if (!sameFiles(stored, req.files)) {
        throw new KilnError(`version s3://${bucket}/${prefix} already exists with different content; published versions are never overwritten`, {code: 'E_PUBLISH_EXISTS', tryMessage: 'Publish under a new version, e.g. a prefix ending in {run.id}/.'})
      }
      if (!(await readLatest(ctx, `${root}latest`))) await putLatest(ctx, `${root}latest`, latestPointer(version, req.files))
      return outcome('unchanged')
    }
    // The signature goes last: a reader that finds it can expect every file it lists.
    const ordered = [...req.files].sort((a, b) => Number(a.rel === SIGNATURE_FILE) - Number(b.rel === SIGNATURE_FILE))
    const created: string[] = []
    try {
      for (const [i, f] of ordered.entries()) {
        const key = `${prefix}${f.rel}`
        req.progress?.(`s3://${bucket}/${key} (${i + 1}/${ordered.length})`)
        await putFile(ctx, key, f)
        created.push(key)
        await verifyObject(ctx, key, f)
      }
      await putLatest(ctx, `${root}latest`, latestPointer(version, req.files))
    } catch (error) {
      const left: string[] = []
      for (const key of created.reverse()) {
        await withRetry({...ctx, signal: undefined}, `DELETE ${key}`, () => ctx.client.send(new DeleteObjectCommand({Bucket: bucket, Key: key}))).catch(() => left.push(key))
      }
      if (left.length > 0 && error instanceof KilnError) {
        throw new KilnError(`${error.message}; could not remove the partial version's ${left.join(', ')}`, {code: error.code, cause: error, tryMessage: `Delete s3://${bucket}/${prefix} by hand once the server is reachable.`})
      }
      throw error
    }
    return outcome('published')
  } finally {
    ctx.client.destroy()
  }
}
