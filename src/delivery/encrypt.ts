import {createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, scrypt as scryptCb, type ScryptOptions} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {AbortedError, KilnError, UsageError} from '../errors.js'
import {registerSecret} from '../util/redact.js'
import {tempPathFor} from '../util/fs.js'
import {
  chunkAad,
  chunkNonce,
  decodeHeader,
  DEFAULT_CHUNK,
  encodeHeader,
  FORMAT_VERSION,
  HEADER_BYTES,
  headerHash,
  KDF_RAW,
  KDF_SCRYPT,
  MAGIC,
  MAX_CHUNK,
  MIN_CHUNK,
  NONCE_SCHEME_COUNTER,
  plaintextSize,
  TAG_BYTES,
  type EncHeader,
} from './encrypt-format.js'
import {dataKeyId, parseDataKey, readKeyFile} from './keys.js'
import {resolveSecretRef} from './secret.js'

export const ENCRYPTED_EXT = '.kenc'

/** Where the data key comes from: a 32-byte key, or a passphrase stretched with scrypt per file. */
export type DataKeySource = {kind: 'key'; key: Buffer} | {kind: 'passphrase'; passphrase: string}

/** scrypt cost for passphrases: 2^16 × r 8 ≈ 64 MiB and a fraction of a second per file. */
const SCRYPT = {logN: 16, r: 8, p: 1}

function scryptAsync(pass: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(pass, salt, 32, opts, (err, key) => (err ? reject(err) : resolve(key))))
}

/**
 * Resolve a key reference: `env:NAME` (base64 key in a variable), `passphrase:env:NAME` (a
 * passphrase in a variable, stretched with scrypt), or a path to a base64 key file such as
 * `data.key` (relative to `baseDir`). `secret` resolves `env:` references (the stage context's).
 */
export async function resolveDataKey(ref: string, opts: {baseDir?: string; secret?: (ref: string) => string} = {}): Promise<DataKeySource> {
  const secret = opts.secret ?? resolveSecretRef
  if (ref.startsWith('passphrase:')) {
    const inner = ref.slice('passphrase:'.length)
    if (!/^(env:|\$\{env:)/.test(inner)) {
      throw new UsageError('a passphrase must come from the environment (passphrase:env:NAME), never be written in a file', {code: 'E_KEY_REF', tryMessage: 'Export the passphrase as a variable and use passphrase:env:NAME.'})
    }
    const passphrase = secret(inner)
    if (!passphrase) throw new UsageError(`the passphrase variable in '${ref}' is empty`, {code: 'E_SECRET_MISSING'})
    registerSecret(passphrase)
    return {kind: 'passphrase', passphrase}
  }
  if (/^(env:|\$\{env:)/.test(ref)) {
    const value = secret(ref)
    if (!value) throw new UsageError(`the key variable in '${ref}' is empty`, {code: 'E_SECRET_MISSING', tryMessage: 'Export the base64 data key (the content of data.key).'})
    return {kind: 'key', key: parseDataKey(value, ref)}
  }
  const file = path.resolve(opts.baseDir ?? process.cwd(), ref)
  return {kind: 'key', key: parseDataKey(await readKeyFile(file, 'data key'), file)}
}

/** Load a 32-byte data key from a key file, `env:NAME`; passphrases need a file's salt (use {@link resolveDataKey}). */
export async function loadDataKey(ref: string, baseDir?: string): Promise<Buffer> {
  const source = await resolveDataKey(ref, {baseDir})
  if (source.kind !== 'key') {
    throw new UsageError('a passphrase is not a data key: it is stretched with the salt of each encrypted file', {code: 'E_KEY_REF', tryMessage: 'Pass the DataKeySource from resolveDataKey to decrypt, or use a data.key file.'})
  }
  return source.key
}

async function masterKey(source: DataKeySource, header: Pick<EncHeader, 'kdf' | 'scrypt' | 'salt'>): Promise<Buffer> {
  if (header.kdf === KDF_RAW) {
    if (source.kind !== 'key') throw new KilnError('this file was encrypted with a data key, not a passphrase', {code: 'E_DECRYPT_KEY', tryMessage: 'Pass the data.key it was encrypted with.'})
    return source.key
  }
  if (source.kind !== 'passphrase') throw new KilnError('this file was encrypted with a passphrase, not a data key', {code: 'E_DECRYPT_KEY', tryMessage: 'Use --key passphrase:env:NAME.'})
  const {logN, r, p} = header.scrypt!
  return scryptAsync(source.passphrase, header.salt, {N: 2 ** logN, r, p, maxmem: 256 * 2 ** logN * r})
}

function fileKey(master: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', master, salt, 'kiln-enc v1 file key', 32))
}

function shortId(master: Buffer): Buffer {
  return Buffer.from(dataKeyId(master), 'hex').subarray(0, 8)
}

/** Options for {@link encryptFile}. */
export interface EncryptOptions {
  /** Plaintext bytes per authenticated chunk (default 1 MiB); memory stays a few chunks whatever the file size. */
  chunkSize?: number
  signal?: AbortSignal
  /** Called with bytes done after each chunk. */
  onProgress?: (bytes: number) => void
}

/**
 * Feed a cipher in small slices: each `update` allocates its output, and outputs of a few KiB come
 * from the allocator's arenas while megabyte ones cost fresh pages every time (several times slower).
 */
const PIECE = 16 * 1024

function cipherPieces(c: {update(data: Buffer): Buffer}, data: Buffer): Buffer[] {
  const pieces: Buffer[] = []
  for (let o = 0; o < data.length; o += PIECE) pieces.push(c.update(data.subarray(o, o + PIECE)))
  return pieces
}

/** Write every piece at `pos`, continuing after a short write. */
async function writeAll(fh: fsp.FileHandle, pieces: Buffer[], pos: number): Promise<void> {
  const total = pieces.reduce((n, p) => n + p.length, 0)
  let done = (await fh.writev(pieces, pos)).bytesWritten
  if (done === total) return
  const rest = Buffer.concat(pieces).subarray(done)
  while (done < total) done += (await fh.write(rest, done - (total - rest.length), total - done, pos + done)).bytesWritten
}

/** Read up to `buf.length` bytes at `pos`, looping over short reads; returns the count read. */
async function readFull(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<number> {
  let n = 0
  while (n < buf.length) {
    const {bytesRead} = await fh.read(buf, n, buf.length - n, pos + n)
    if (bytesRead === 0) break
    n += bytesRead
  }
  return n
}

/**
 * Encrypt `input` to `output` (written atomically). Returns the ciphertext's SHA-256 and size, taken
 * while writing, so a signature over the output needs no second read.
 */
export async function encryptFile(input: string, output: string, source: DataKeySource, opts: EncryptOptions = {}): Promise<{sha256: string; bytes: number; plaintextBytes: number; keyId: string}> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK) {
    throw new UsageError(`chunk size must be between ${MIN_CHUNK} and ${MAX_CHUNK} bytes`, {code: 'E_ENCRYPT_CHUNK'})
  }
  const salt = randomBytes(16)
  const kdf = source.kind === 'key' ? KDF_RAW : KDF_SCRYPT
  const scrypt = kdf === KDF_SCRYPT ? SCRYPT : undefined
  const master = await masterKey(source, {kdf, scrypt, salt})
  const header = encodeHeader({version: FORMAT_VERSION, nonceScheme: NONCE_SCHEME_COUNTER, kdf, scrypt, chunkSize, keyId: shortId(master), salt})
  const key = fileKey(master, salt)
  const hHash = headerHash(header)
  const digest = createHash('sha256')
  const tmp = tempPathFor(output)
  await fsp.mkdir(path.dirname(output), {recursive: true})
  const src = await fsp.open(input, 'r')
  let out: fsp.FileHandle | undefined
  let written = 0
  try {
    const total = (await src.stat()).size
    out = await fsp.open(tmp, 'wx', 0o644)
    const o = out
    const writev = async (pieces: Buffer[]): Promise<void> => {
      const at = written
      for (const p of pieces) {
        digest.update(p)
        written += p.length
      }
      await writeAll(o, pieces, at)
    }
    await writev([header])
    // Two buffers: the next chunk is read while the current one is encrypted and written.
    const bufs = [Buffer.allocUnsafe(chunkSize), Buffer.allocUnsafe(chunkSize)]
    let index = 0
    let pos = 0
    let pending = readFull(src, bufs[0], 0)
    for (;;) {
      if (opts.signal?.aborted) throw new AbortedError()
      const n = await pending
      const chunk = bufs[index % 2].subarray(0, n)
      pos += n
      const final = pos >= total
      if (!final) pending = readFull(src, bufs[(index + 1) % 2], pos)
      const c = createCipheriv('aes-256-gcm', key, chunkNonce(index))
      c.setAAD(chunkAad(hHash, index, final))
      const pieces = cipherPieces(c, chunk)
      c.final()
      pieces.push(c.getAuthTag())
      await writev(pieces)
      opts.onProgress?.(pos)
      index++
      if (final) break
    }
    await out.sync()
    await out.close()
    out = undefined
    await fsp.rename(tmp, output)
    return {sha256: digest.digest('hex'), bytes: written, plaintextBytes: pos, keyId: dataKeyId(master).slice(0, 16)}
  } catch (error) {
    await out?.close().catch(() => {})
    await fsp.rm(tmp, {force: true})
    throw error
  } finally {
    await src.close()
  }
}

/** Whether a file starts with the kiln encrypted-file magic. */
export async function isEncryptedFile(file: string): Promise<boolean> {
  let fh: fsp.FileHandle | undefined
  try {
    fh = await fsp.open(file, 'r')
    const b = Buffer.alloc(MAGIC.length)
    const {bytesRead} = await fh.read(b, 0, b.length, 0)
    return bytesRead === MAGIC.length && b.equals(MAGIC)
  } catch {
    return false
  } finally {
    await fh?.close()
  }
}

interface OpenedCipherFile {
  fh: fsp.FileHandle
  header: EncHeader
  hHash: Buffer
  key: Buffer
  size: number
  plaintext: number
}

async function openEncrypted(file: string, source: DataKeySource | Buffer): Promise<OpenedCipherFile> {
  const src: DataKeySource = Buffer.isBuffer(source) ? {kind: 'key', key: source} : source
  const fh = await fsp.open(file, 'r').catch((error: Error) => {
    throw new KilnError(`cannot read ${file}: ${error.message}`, {code: 'E_DECRYPT_READ', cause: error})
  })
  try {
    const raw = Buffer.alloc(HEADER_BYTES)
    await readFull(fh, raw, 0)
    const header = decodeHeader(raw, file)
    const master = await masterKey(src, header)
    if (!shortId(master).equals(header.keyId)) {
      throw new KilnError(`wrong ${src.kind === 'key' ? 'key' : 'passphrase'} for ${file} (it was encrypted for key id ${header.keyId.toString('hex')}; this ${src.kind} has id ${shortId(master).toString('hex')})`, {
        code: 'E_DECRYPT_KEY',
        tryMessage: 'Use the data key (or passphrase) the artifact was encrypted with.',
      })
    }
    const size = (await fh.stat()).size
    return {fh, header, hHash: headerHash(raw), key: fileKey(master, header.salt), size, plaintext: plaintextSize(size, header.chunkSize, file)}
  } catch (error) {
    await fh.close()
    throw error
  }
}

function tamperError(file: string, index: number): KilnError {
  return new KilnError(`${file} failed authentication at chunk ${index}: it was modified, truncated or reassembled`, {
    code: 'E_DECRYPT_TAMPERED',
    tryMessage: 'Download the artifact again from a trusted source and check it with `kiln verify`.',
  })
}

/**
 * Decrypt chunk by chunk, handing each authenticated plaintext chunk to `sink`. A record is the
 * final chunk exactly when end-of-file follows it, so a file cut at a chunk boundary fails too.
 */
async function decryptChunks(f: OpenedCipherFile, file: string, sink: (plain: Buffer[], offset: number) => Promise<void> | void, signal?: AbortSignal): Promise<void> {
  const record = f.header.chunkSize + TAG_BYTES
  const bufs = [Buffer.allocUnsafe(record), Buffer.allocUnsafe(record)]
  let pos = HEADER_BYTES
  let offset = 0
  let index = 0
  let pending = readFull(f.fh, bufs[0], pos)
  for (;;) {
    if (signal?.aborted) throw new AbortedError()
    const n = await pending
    pos += n
    const final = pos >= f.size
    const rec = bufs[index % 2].subarray(0, n)
    if (!final) pending = readFull(f.fh, bufs[(index + 1) % 2], pos)
    if (n < TAG_BYTES || (!final && n < record)) throw tamperError(file, index)
    const d = createDecipheriv('aes-256-gcm', f.key, chunkNonce(index))
    d.setAAD(chunkAad(f.hHash, index, final))
    d.setAuthTag(rec.subarray(n - TAG_BYTES))
    const plain = cipherPieces(d, rec.subarray(0, n - TAG_BYTES))
    try {
      d.final()
    } catch {
      throw tamperError(file, index)
    }
    await sink(plain, offset)
    offset += n - TAG_BYTES
    index++
    if (final) break
  }
}

/**
 * Decrypt into memory; the plaintext never touches the disk (for loading a model to serve). Memory
 * is the plaintext itself plus two chunks.
 */
export async function decryptToBuffer(file: string, key: Buffer | DataKeySource, opts: {signal?: AbortSignal} = {}): Promise<Buffer> {
  const f = await openEncrypted(file, key)
  try {
    const out = Buffer.allocUnsafe(f.plaintext)
    await decryptChunks(
      f,
      file,
      (pieces, offset) => {
        let at = offset
        for (const p of pieces) at += p.copy(out, at)
      },
      opts.signal,
    )
    return out
  } finally {
    await f.fh.close()
  }
}

/**
 * Decrypt to a file. Plaintext goes to a private temp file renamed into place only after the last
 * chunk authenticates; on any failure it is removed, so no unauthenticated plaintext is left behind.
 */
export async function decryptFile(file: string, output: string, key: Buffer | DataKeySource, opts: {signal?: AbortSignal} = {}): Promise<{bytes: number}> {
  const f = await openEncrypted(file, key)
  const tmp = tempPathFor(output)
  let out: fsp.FileHandle | undefined
  try {
    await fsp.mkdir(path.dirname(output), {recursive: true})
    out = await fsp.open(tmp, 'wx', 0o600)
    const o = out
    await decryptChunks(f, file, (pieces, offset) => writeAll(o, pieces, offset), opts.signal)
    await out.sync()
    await out.close()
    out = undefined
    await fsp.rename(tmp, output)
    return {bytes: f.plaintext}
  } catch (error) {
    await out?.close().catch(() => {})
    await fsp.rm(tmp, {force: true})
    throw error
  } finally {
    await f.fh.close()
  }
}
