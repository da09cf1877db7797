import {createHash} from 'node:crypto'
import {HeadObjectCommand, S3Client, type S3ClientConfig} from '@aws-sdk/client-s3'
import {UsageError} from '../../errors.js'
import type {S3Settings} from './types.js'

/** Split `s3://bucket/key/prefix` into bucket and key (templates are expanded later). */
export function parseS3Uri(uri: string): {bucket: string; key: string} {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/i.exec(uri)
  if (!m || !m[1]) {
    throw new UsageError(`'${uri}' is not an S3 URI`, {code: 'E_PUBLISH_URI', tryMessage: 'Write s3://bucket/prefix/ (the version folder goes under the prefix).'})
  }
  return {bucket: m[1], key: m[2] ?? ''}
}

/** The endpoint in effect: the override, else the AWS environment variables, else AWS itself. */
export function effectiveEndpoint(settings: S3Settings = {}): string | undefined {
  return settings.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? undefined
}

export function s3ClientConfig(settings: S3Settings = {}): S3ClientConfig {
  const endpoint = effectiveEndpoint(settings)
  return {
    region: settings.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint ? {endpoint} : {}),
    // S3-compatible servers (Ceph, MinIO) are usually addressed by path; AWS by virtual host.
    forcePathStyle: settings.forcePathStyle ?? Boolean(endpoint),
    // Servers such as radosgw reject the SDK's default streamed checksums (411); integrity comes
    // from Content-MD5 per request and the SHA-256 kept in object metadata instead.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // An idle-socket timeout, not a total one: a large part may take long, a stalled one must not.
    requestHandler: {socketTimeout: settings.timeoutMs ?? 60_000, connectionTimeout: Math.min(settings.timeoutMs ?? 10_000, 10_000)},
  }
}

/** Requests issued and attempts made on the wire (the SDK retries some requests by itself). */
export interface RequestStats {
  commands: number
  attempts: number
}

/**
 * An S3 client that sends Content-MD5 with every PutObject and UploadPart whose body is in memory
 * (lib-storage buffers each part), so the server rejects any part damaged in transit.
 */
export function createS3Client(settings: S3Settings = {}, stats?: RequestStats): S3Client {
  const client = new S3Client(s3ClientConfig(settings))
  if (stats) {
    client.middlewareStack.add((next) => async (args) => (stats.commands++, next(args)), {step: 'initialize', name: 'kilnCountCommands'})
    // Deserialize runs inside the SDK's retry loop: once per attempt on the wire.
    client.middlewareStack.add((next) => async (args) => (stats.attempts++, next(args)), {step: 'deserialize', name: 'kilnCountAttempts'})
  }
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as {Body?: unknown; ContentMD5?: string}
      const command = (context as {commandName?: string}).commandName
      if ((command === 'PutObjectCommand' || command === 'UploadPartCommand') && input.ContentMD5 === undefined && input.Body instanceof Uint8Array) {
        input.ContentMD5 = createHash('md5').update(input.Body).digest('base64')
      }
      return next(args)
    },
    {step: 'initialize', name: 'kilnContentMd5', override: true},
  )
  // Some servers (Ceph radosgw 16) honour If-None-Match on PutObject but not on
  // CompleteMultipartUpload: look first, so an object that appeared meanwhile is not replaced.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as {Bucket?: string; Key?: string; IfNoneMatch?: string}
      if ((context as {commandName?: string}).commandName === 'CompleteMultipartUploadCommand' && input.IfNoneMatch === '*') {
        const exists = await client.send(new HeadObjectCommand({Bucket: input.Bucket, Key: input.Key})).then(
          () => true,
          (error: {$metadata?: {httpStatusCode?: number}}) => {
            if (error?.$metadata?.httpStatusCode === 404) return false
            throw error
          },
        )
        if (exists) {
          throw Object.assign(new Error(`${input.Key} already exists`), {name: 'PreconditionFailed', $metadata: {httpStatusCode: 412}})
        }
      }
      return next(args)
    },
    {step: 'initialize', name: 'kilnNoOverwriteOnComplete', override: true},
  )
  return client
}
