import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {z} from 'zod'
import {signArtifact} from '../delivery/sign.js'
import {defineStage} from './types.js'

const schema = z.strictObject({
  /** Path to the Ed25519 private key (`signing.key` from `kiln keys generate`), relative to the pipeline file. */
  key: z.string().min(1).describe('Ed25519 private key file (signing.key), relative to the pipeline file.'),
})

/**
 * Sign the artifact exactly as it will be published (after encrypt, the ciphertext): the output is a
 * directory with the input file(s) plus `model.sig`.
 */
export default defineStage({
  kind: 'sign',
  version: '1',
  description: 'Sign the artifact: an in-toto manifest of every file, Ed25519 in a DSSE envelope.',
  schema,
  async run(ctx, input, params) {
    const keyFile = path.resolve(ctx.baseDir, ctx.secret(params.key))
    // The runner already digested a single-file input; a directory's record digest is not per file.
    const isFile = (await fsp.stat(input.path)).isFile()
    const known = isFile ? new Map([[path.basename(input.path), input.sha256]]) : undefined
    const started = performance.now()
    const r = await signArtifact(input.path, ctx.outDir, keyFile, {knownDigests: known})
    ctx.log.info(`signed ${r.files.length} file(s) with key ${r.keyId}`)
    return {
      artifact: {path: ctx.outDir, format: 'signed-dir'},
      metrics: {files: r.files.length, bytes: r.files.reduce((n, f) => n + f.bytes, 0), keyId: r.keyId, seconds: Number(((performance.now() - started) / 1000).toFixed(3))},
    }
  },
})
