import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {z} from 'zod'
import {encryptFile, ENCRYPTED_EXT, resolveDataKey} from '../delivery/encrypt.js'
import {listFiles} from '../util/fs.js'
import {defineStage} from './types.js'

const schema = z.strictObject({
  /** The data key: a key file path (`data.key`), `env:NAME` holding the base64 key, or `passphrase:env:NAME`. */
  key: z.string().min(1).describe('Data key: a key file (data.key), env:NAME holding the base64 key, or passphrase:env:NAME.'),
  /** Plaintext bytes per authenticated chunk. */
  chunkSize: z.number().int().min(1024).max(1 << 26).optional().describe('Plaintext bytes per authenticated chunk (default 1 MiB).'),
})

/**
 * Encrypt the artifact: a model file becomes `<name>.kenc`; every file of a directory is encrypted
 * beside its relative path. Streaming and chunked, so memory does not grow with the model.
 */
export default defineStage({
  kind: 'encrypt',
  version: '1',
  description: 'Encrypt the artifact with streaming chunked AES-256-GCM.',
  schema,
  async run(ctx, input, params) {
    const source = await resolveDataKey(params.key, {baseDir: ctx.baseDir, secret: (ref) => ctx.secret(ref)})
    const isDir = (await fsp.stat(input.path)).isDirectory()
    const rels = isDir ? await listFiles(input.path) : [path.basename(input.path)]
    const started = performance.now()
    let bytes = 0
    let plaintextBytes = 0
    let keyId = ''
    for (const rel of rels) {
      const from = isDir ? path.join(input.path, rel) : input.path
      const r = await encryptFile(from, path.join(ctx.outDir, `${rel}${ENCRYPTED_EXT}`), source, {
        chunkSize: params.chunkSize,
        signal: ctx.signal,
        onProgress: (done) => ctx.progress(`${rel}: ${(done / 2 ** 20).toFixed(0)} MiB`),
      })
      bytes += r.bytes
      plaintextBytes += r.plaintextBytes
      keyId = r.keyId
    }
    const seconds = (performance.now() - started) / 1000
    ctx.log.info(`encrypted ${rels.length} file(s) for key id ${keyId}`)
    const single = !isDir && rels.length === 1
    return {
      artifact: {path: single ? path.join(ctx.outDir, `${rels[0]}${ENCRYPTED_EXT}`) : ctx.outDir, format: 'encrypted'},
      metrics: {files: rels.length, plaintextBytes, bytes, keyId, kdf: source.kind === 'key' ? 'raw' : 'scrypt', seconds: Number(seconds.toFixed(3)), mbPerSecond: Number((plaintextBytes / 1e6 / Math.max(seconds, 1e-9)).toFixed(1))},
    }
  },
})
