import * as fsp from 'node:fs/promises'
import {z} from 'zod'
import {publishArtifact} from '../delivery/publish.js'
import {defineStage} from './types.js'

/** The embedded default target: a local file registry beside the pipeline file; no service needed. */
export const DEFAULT_TARGET = './.kiln/registry/{pipeline.name}/'

const schema = z.strictObject({
  /** One target URI or several; each is published in turn and reported separately. */
  to: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .default(DEFAULT_TARGET)
    .transform((v) => (Array.isArray(v) ? v : [v]))
    .describe(`Target URIs: a directory path, file:///path, s3://bucket/prefix/ or oip+http(s)://host:port[/model]; may use {run.id}, {pipeline.name}, {stage.id}, {artifact.sha256}, {date}. Default: the local registry ${DEFAULT_TARGET} beside the pipeline file.`),
  /** Overrides for `s3://` targets; the standard AWS environment and config chain supply the rest. */
  s3: z
    .strictObject({
      endpoint: z.string().url().optional(),
      region: z.string().min(1).optional(),
      forcePathStyle: z.boolean().optional(),
      timeoutMs: z.number().int().positive().optional(),
      retries: z.number().int().min(0).max(20).optional(),
      partSize: z.number().int().min(5 * 1024 * 1024).optional(),
      queueSize: z.number().int().min(1).max(64).optional(),
    })
    .optional()
    .describe('S3 overrides (endpoint, region, forcePathStyle, timeoutMs, retries, partSize, queueSize); credentials and defaults come from the AWS environment.'),
  /** Settings for `oip+http(s)://` targets. */
  oip: z
    .strictObject({
      token: z.string().regex(/^(env:|\$\{env:)/, 'must be env:NAME (never a literal token)').optional(),
      headers: z.record(z.string(), z.string()).optional(),
      model: z.string().min(1).optional(),
      readyTimeoutMs: z.number().int().positive().optional(),
    })
    .optional()
    .describe('Open Inference Protocol settings: token (env:NAME), headers, model, readyTimeoutMs.'),
})

/**
 * Publish the incoming artifact (a model file, or the directory that sign/encrypt produced) to every
 * target. The artifact passes through unchanged: publish is a side effect, reported per target.
 */
export default defineStage({
  kind: 'publish',
  version: '1',
  description: 'Publish the artifact to directories, S3 or serving endpoints; versioned, atomic, verified.',
  schema,
  async run(ctx, input, params) {
    const st = await fsp.stat(input.path)
    // For a file, the runner's record is that file's digest (a directory's record is not per file).
    const knownSha256 = st.isFile() && st.size === input.bytes ? input.sha256 : undefined
    const result = await publishArtifact(input.path, {
      to: params.to,
      baseDir: ctx.baseDir,
      vars: {'run.id': ctx.runId, 'pipeline.name': ctx.pipelineName, 'stage.id': ctx.id},
      signal: ctx.signal,
      progress: (m) => ctx.progress(m),
      secret: (ref) => ctx.secret(ref),
      knownSha256,
      s3: params.s3,
      oip: params.oip,
    })
    for (const t of result.targets) ctx.log.info(`${t.status} ${t.files} file(s), ${t.bytes} bytes to ${t.uri} in ${t.seconds.toFixed(2)} s`)
    return {
      metrics: {
        targets: result.targets.map((t) => ({uri: t.uri, version: t.version, status: t.status, files: t.files, bytes: t.bytes, seconds: Number(t.seconds.toFixed(3)), ...(t.retries ? {retries: t.retries} : {})})),
      },
    }
  },
})
