import {createHash} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import {listFiles} from '../../util/fs.js'
import {decompressBytes, isZstd} from '../compress.js'
import {type DataKeySource, decryptToBuffer, isEncryptedFile} from '../encrypt.js'
import {SIGNATURE_FILE, verifyDirectory} from '../sign.js'
import type {ModelPayload} from './worker-protocol.js'

/** Where one version of a model comes from. */
export type VersionOrigin =
  /** A loose `.onnx` file (a plain folder of models). */
  | {kind: 'file'; file: string}
  /** A version folder on disk, as `publish` writes it. */
  | {kind: 'dir'; dir: string}
  /** Files held in memory (pushed through the repository API, or read from S3), keyed by relative path. */
  | {kind: 'memory'; files: Map<string, Uint8Array>}

/** What a served model must prove before it is loaded. */
export interface LoadSecurity {
  /** Ed25519 public key (SPKI PEM): every version must carry a signature that verifies with it. */
  publicKeyPem?: string
  /** Data key (or passphrase) for encrypted model files; they are decrypted in memory only. */
  dataKey?: DataKeySource
}

export interface PreparedVersion {
  payload: ModelPayload
  /** The model file inside the version (relative), for logs and the index. */
  modelFile: string
  verified: boolean
  encrypted: boolean
}

/** A version that must not be served; the message becomes the `reason` in the repository index. */
export class RefusedVersion extends KilnError {
  constructor(message: string, tryMessage: string, cause?: unknown) {
    super(message, {code: 'E_SERVE_REFUSED', tryMessage, cause})
  }
}

/** Companion files that are never the model itself. */
function isCompanion(rel: string): boolean {
  return rel === SIGNATURE_FILE || rel.endsWith('.json') || rel.endsWith('.data') || rel.endsWith('.pub') || rel.endsWith('.key')
}

/**
 * The model file of a version folder: `model.onnx` (possibly with a suffix an encrypt or compress
 * step added), else the only `.onnx`-named file.
 */
export function pickModelFile(rels: string[]): string {
  const candidates = rels.filter((r) => !isCompanion(r) && /\.onnx(\.[a-z0-9]+)?$/i.test(path.posix.basename(r)))
  const preferred = candidates.filter((r) => /^model\.onnx/i.test(path.posix.basename(r)))
  const pool = preferred.length > 0 ? preferred : candidates
  if (pool.length === 1) return pool[0]!
  if (pool.length === 0) {
    throw new RefusedVersion(`no .onnx model file among ${rels.length ? rels.join(', ') : 'no files'}`, 'Publish the ONNX model (model.onnx) in the version folder.')
  }
  throw new RefusedVersion(`several model files (${pool.join(', ')}); cannot tell which to serve`, 'Publish one model per version folder, or name the one to serve model.onnx.')
}

/** Verify a version folder's signature; the signed sha256 of each file, or undefined without --pub. */
async function verify(dir: string, security: LoadSecurity): Promise<Map<string, string> | undefined> {
  if (!security.publicKeyPem) return undefined
  try {
    const {files} = await verifyDirectory(dir, security.publicKeyPem)
    return new Map(files.map((f) => [f.path, f.sha256]))
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new RefusedVersion(`signature verification failed: ${message.split(dir + path.sep).join('').split(dir).join('<version>')}`, 'Serve only artifacts signed with the key that --pub names; re-publish a signed version.', error)
  }
}

/**
 * Read a model file into what a worker loads. `signedSha256`: the digest its verified signature
 * gives; the model is then loaded from the very bytes that match it, so a file changed after the
 * check is refused rather than run (an encrypted one is authenticated by its own decryption).
 */
async function readModel(file: string, rel: string, security: LoadSecurity, keepPath: boolean, signedSha256?: string): Promise<{payload: ModelPayload; encrypted: boolean}> {
  if (await isEncryptedFile(file)) {
    if (!security.dataKey) throw new RefusedVersion(`${rel} is encrypted and the server has no data key`, 'Start kiln serve with --key data.key (or env:NAME).')
    let plain: Buffer
    try {
      plain = await decryptToBuffer(file, security.dataKey)
    } catch (error) {
      throw new RefusedVersion(`cannot decrypt ${rel}: ${error instanceof Error ? error.message : String(error)}`, 'Check that --key is the data key the model was encrypted with.', error)
    }
    return {payload: {bytes: isZstd(plain) ? await decompressBytes(plain) : plain}, encrypted: true}
  }
  if (signedSha256 !== undefined) {
    const bytes = await fsp.readFile(file)
    if (createHash('sha256').update(bytes).digest('hex') !== signedSha256) {
      throw new RefusedVersion(`${rel} changed after its signature was verified`, 'Never write into a version folder that is being served; publish a new version.')
    }
    return {payload: {bytes: isZstd(bytes) ? await decompressBytes(bytes) : bytes}, encrypted: false}
  }
  const head = Buffer.alloc(4)
  const fh = await fsp.open(file, 'r')
  try {
    await fh.read(head, 0, 4, 0)
  } finally {
    await fh.close()
  }
  if (isZstd(head)) return {payload: {bytes: await decompressBytes(await fsp.readFile(file))}, encrypted: false}
  // A plain file on disk is handed over by path: onnxruntime then also finds external weight files beside it.
  if (keepPath) return {payload: {path: file}, encrypted: false}
  return {payload: {bytes: await fsp.readFile(file)}, encrypted: false}
}

/** Write in-memory files into a private temporary folder (0700) so the file-based checks can read them. */
async function materialise(files: Map<string, Uint8Array>): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-'))
  await fsp.chmod(dir, 0o700)
  for (const [rel, bytes] of files) {
    const norm = path.posix.normalize(rel)
    if (norm.startsWith('../') || norm === '..' || path.posix.isAbsolute(norm)) throw new RefusedVersion(`file path '${rel}' escapes the version folder`, 'Send relative paths inside the version.')
    const abs = path.join(dir, ...norm.split('/'))
    await fsp.mkdir(path.dirname(abs), {recursive: true, mode: 0o700})
    await fsp.writeFile(abs, bytes, {mode: 0o600})
  }
  return dir
}

/**
 * Make one version ready to load: verify its signature when a public key is configured (before
 * anything is parsed), decrypt it in memory when it is encrypted, and hand back what a worker
 * loads. Throws {@link RefusedVersion} with the reason when the version must not be served.
 */
export async function prepareVersion(origin: VersionOrigin, security: LoadSecurity): Promise<PreparedVersion> {
  if (origin.kind === 'file') {
    if (security.publicKeyPem) {
      throw new RefusedVersion(`${path.basename(origin.file)} is a loose model file with no signature`, 'With --pub, serve signed version folders as `publish` writes them.')
    }
    const {payload, encrypted} = await readModel(origin.file, path.basename(origin.file), security, true)
    return {payload, modelFile: path.basename(origin.file), verified: false, encrypted}
  }
  const dir = origin.kind === 'dir' ? origin.dir : await materialise(origin.files)
  try {
    const signed = await verify(dir, security)
    const rels = await listFiles(dir)
    const modelFile = pickModelFile(rels)
    // Weights in external files are read by onnxruntime beside the model, so such a model is loaded by path.
    const external = rels.some((r) => r.endsWith('.data'))
    const {payload, encrypted} = await readModel(path.join(dir, ...modelFile.split('/')), modelFile, security, origin.kind === 'dir', external ? undefined : signed?.get(modelFile))
    return {payload, modelFile, verified: signed !== undefined, encrypted}
  } finally {
    if (origin.kind === 'memory') await fsp.rm(dir, {recursive: true, force: true})
  }
}
