import {createHash} from 'node:crypto'
import {KilnError} from '../errors.js'

/**
 * The encrypted file format, version 1:
 *
 * | offset | bytes | field                                                        |
 * |--------|-------|--------------------------------------------------------------|
 * | 0      | 8     | magic `kiln-enc`                                             |
 * | 8      | 1     | format version (1)                                           |
 * | 9      | 1     | nonce scheme (1: per-file HKDF subkey, 96-bit chunk counter) |
 * | 10     | 1     | key derivation (0: raw 32-byte key, 1: scrypt passphrase)    |
 * | 11..13 | 3     | scrypt log2(N), r, p (zero for raw keys)                     |
 * | 14     | 2     | reserved, zero                                               |
 * | 16     | 4     | plaintext chunk size, big-endian                             |
 * | 20     | 8     | key id (who can decrypt; lets a wrong key fail up front)     |
 * | 28     | 16    | salt (HKDF, and scrypt for passphrases)                      |
 *
 * Then records of `ciphertext || 16-byte GCM tag`, each holding one chunk (the last may be short
 * or empty). Each chunk's associated data is SHA-256(header) || index (u64) || final flag (u8): a
 * changed header, reordered or spliced chunk, or a file cut at a chunk boundary fails to authenticate.
 */
export const MAGIC = Buffer.from('kiln-enc', 'latin1')
export const FORMAT_VERSION = 1
export const NONCE_SCHEME_COUNTER = 1
export const KDF_RAW = 0
export const KDF_SCRYPT = 1
export const HEADER_BYTES = 44
export const TAG_BYTES = 16
export const DEFAULT_CHUNK = 1 << 20
export const MIN_CHUNK = 1 << 10
export const MAX_CHUNK = 1 << 26

export interface EncHeader {
  version: number
  nonceScheme: number
  kdf: number
  scrypt?: {logN: number; r: number; p: number}
  chunkSize: number
  keyId: Buffer
  salt: Buffer
}

export function encodeHeader(h: EncHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(b, 0)
  b[8] = h.version
  b[9] = h.nonceScheme
  b[10] = h.kdf
  if (h.scrypt) {
    b[11] = h.scrypt.logN
    b[12] = h.scrypt.r
    b[13] = h.scrypt.p
  }
  b.writeUInt32BE(h.chunkSize, 16)
  h.keyId.copy(b, 20, 0, 8)
  h.salt.copy(b, 28, 0, 16)
  return b
}

function formatError(where: string, what: string): KilnError {
  return new KilnError(`${where} is not a readable kiln encrypted file: ${what}`, {code: 'E_DECRYPT_FORMAT', tryMessage: 'Check that the file was produced by `kiln encrypt` and downloaded completely.'})
}

export function decodeHeader(b: Buffer, where: string): EncHeader {
  if (b.length < HEADER_BYTES || !b.subarray(0, 8).equals(MAGIC)) throw formatError(where, 'no kiln-enc header')
  const version = b[8]
  if (version !== FORMAT_VERSION) {
    throw new KilnError(`${where} uses encrypted format version ${version}; this kiln reads version ${FORMAT_VERSION}`, {code: 'E_DECRYPT_VERSION', tryMessage: 'Upgrade kiln to read this file.'})
  }
  if (b[9] !== NONCE_SCHEME_COUNTER) throw formatError(where, `unknown nonce scheme ${b[9]}`)
  const kdf = b[10]
  if (kdf !== KDF_RAW && kdf !== KDF_SCRYPT) throw formatError(where, `unknown key derivation ${kdf}`)
  if (b[14] !== 0 || b[15] !== 0) throw formatError(where, 'reserved header bytes are set')
  const chunkSize = b.readUInt32BE(16)
  if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK) throw formatError(where, `chunk size ${chunkSize} out of range`)
  const scrypt = kdf === KDF_SCRYPT ? {logN: b[11], r: b[12], p: b[13]} : undefined
  if (scrypt && (scrypt.logN < 10 || scrypt.logN > 22 || scrypt.r < 1 || scrypt.p < 1)) throw formatError(where, 'bad scrypt parameters')
  return {version, nonceScheme: b[9], kdf, scrypt, chunkSize, keyId: Buffer.from(b.subarray(20, 28)), salt: Buffer.from(b.subarray(28, 44))}
}

export function headerHash(header: Buffer): Buffer {
  return createHash('sha256').update(header).digest()
}

export function chunkNonce(index: number): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(BigInt(index), 4)
  return n
}

export function chunkAad(hHash: Buffer, index: number, final: boolean): Buffer {
  const a = Buffer.alloc(41)
  hHash.copy(a, 0)
  a.writeBigUInt64BE(BigInt(index), 32)
  a[40] = final ? 1 : 0
  return a
}

/** Plaintext size implied by an encrypted file's size (throws on an impossible size: a cut file). */
export function plaintextSize(fileBytes: number, chunkSize: number, where: string): number {
  const body = fileBytes - HEADER_BYTES
  const record = chunkSize + TAG_BYTES
  const full = Math.floor(body / record)
  const rest = body - full * record
  if (body < TAG_BYTES || (rest > 0 && rest < TAG_BYTES)) throw formatError(where, 'the file is truncated')
  // A body that ends exactly on a record boundary has its last full record as the final chunk.
  return rest === 0 ? full * chunkSize : full * chunkSize + rest - TAG_BYTES
}
