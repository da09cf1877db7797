import {createHash} from 'node:crypto'
import path from 'node:path'
import {GetObjectCommand, ListObjectsV2Command, NoSuchKey, type S3Client} from '@aws-sdk/client-s3'
import {KilnError, UsageError} from '../../errors.js'
import {createS3Client} from '../targets/s3-client.js'
import type {LatestPointer} from '../targets/types.js'
import {looseModelName, type ModelEntry, type ModelSource} from './sources.js'

/** Connection settings beyond the standard AWS environment (credentials, AWS_REGION, AWS_ENDPOINT_URL_S3), as `publish` takes them. */
export interface S3SourceOptions {
  /** Endpoint URL (radosgw, MinIO...); default from the AWS environment. */
  endpoint?: string
  region?: string
  /** Path-style addressing (bucket in the path); on by default with a custom endpoint. */
  forcePathStyle?: boolean
}

function parseUri(uri: string): {bucket: string; prefix: string} {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri)
  if (!m || !m[1]) throw new UsageError(`'${uri}' is not an s3://bucket/prefix/ URI`, {tryMessage: 'Write s3://bucket/models/name/.'})
  const prefix = m[2] ?? ''
  return {bucket: m[1], prefix: prefix && !prefix.endsWith('/') ? `${prefix}/` : prefix}
}

async function getBytes(client: S3Client, bucket: string, key: string): Promise<Uint8Array | undefined> {
  try {
    const out = await client.send(new GetObjectCommand({Bucket: bucket, Key: key}))
    return await out.Body!.transformToByteArray()
  } catch (error) {
    if (error instanceof NoSuchKey || (error as {name?: string}).name === 'NoSuchKey' || (error as {$metadata?: {httpStatusCode?: number}}).$metadata?.httpStatusCode === 404) return undefined
    throw error
  }
}

async function listAll(client: S3Client, bucket: string, prefix: string, delimiter?: string): Promise<{keys: string[]; prefixes: string[]}> {
  const keys: string[] = []
  const prefixes: string[] = []
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({Bucket: bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token}))
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key)
    for (const p of page.CommonPrefixes ?? []) if (p.Prefix) prefixes.push(p.Prefix)
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  return {keys, prefixes}
}

/**
 * Read the version `latest` names under a publish root into memory, checking each object against
 * the digest the pointer recorded, so a half-replaced or corrupted object is refused rather than served.
 */
async function readPublishedModel(client: S3Client, bucket: string, root: string, name: string, pointerBytes: Uint8Array): Promise<ModelEntry> {
  let pointer: LatestPointer
  try {
    pointer = JSON.parse(Buffer.from(pointerBytes).toString('utf8')) as LatestPointer
  } catch {
    throw new KilnError(`s3://${bucket}/${root}latest is not a JSON pointer`, {code: 'E_SERVE_LAYOUT'})
  }
  if (typeof pointer.version !== 'string' || pointer.version.includes('/')) throw new KilnError(`s3://${bucket}/${root}latest names no valid version`, {code: 'E_SERVE_LAYOUT'})
  const versionPrefix = `${root}${pointer.version}/`
  const {keys} = await listAll(client, bucket, versionPrefix)
  if (keys.length === 0) throw new KilnError(`version ${pointer.version} named by s3://${bucket}/${root}latest holds no objects`, {code: 'E_SERVE_LAYOUT'})
  const expected = new Map((pointer.files ?? []).map((f) => [f.path, f.sha256]))
  const files = new Map<string, Uint8Array>()
  for (const key of keys) {
    const rel = key.slice(versionPrefix.length)
    const bytes = await getBytes(client, bucket, key)
    if (!bytes) throw new KilnError(`s3://${bucket}/${key} disappeared while it was read`, {code: 'E_SERVE_LAYOUT'})
    const want = expected.get(rel)
    if (want) {
      const got = createHash('sha256').update(bytes).digest('hex')
      if (got !== want) throw new KilnError(`s3://${bucket}/${key}: sha256 ${got} differs from the ${want} the latest pointer records`, {code: 'E_SERVE_INTEGRITY'})
    }
    files.set(rel, bytes)
  }
  return {name, versions: [{version: pointer.version, origin: {kind: 'memory', files}}], defaultVersion: pointer.version}
}

/**
 * Models under an S3 prefix, in the layout `publish` writes: a prefix with a `latest` pointer is one
 * model (named after the prefix) whose pointed-to version is served; otherwise every sub-prefix with
 * a pointer is a model, and every `NAME.onnx` object is model NAME. Everything is read into memory.
 */
export function s3Source(uri: string, options: S3SourceOptions = {}): ModelSource {
  const {bucket, prefix} = parseUri(uri)
  const client = createS3Client(options)
  return {
    description: `s3://${bucket}/${prefix}`,
    async list() {
      const here = await getBytes(client, bucket, `${prefix}latest`)
      const nameOf = (p: string): string => path.posix.basename(p.replace(/\/+$/, '')) || bucket
      if (here) {
        try {
          return [await readPublishedModel(client, bucket, prefix, nameOf(prefix), here)]
        } catch (error) {
          return [{name: nameOf(prefix), error: (error as Error).message}]
        }
      }
      const {keys, prefixes} = await listAll(client, bucket, prefix, '/')
      const out: Array<ModelEntry | {name: string; error: string}> = []
      for (const key of keys) {
        const name = looseModelName(path.posix.basename(key))
        if (!name) continue
        const bytes = await getBytes(client, bucket, key)
        if (bytes) out.push({name, versions: [{version: '1', origin: {kind: 'memory', files: new Map([[path.posix.basename(key), bytes]])}}], defaultVersion: '1'})
      }
      for (const sub of prefixes) {
        const pointer = await getBytes(client, bucket, `${sub}latest`)
        if (!pointer) continue
        try {
          out.push(await readPublishedModel(client, bucket, sub, nameOf(sub), pointer))
        } catch (error) {
          out.push({name: nameOf(sub), error: (error as Error).message})
        }
      }
      return out
    },
  }
}
