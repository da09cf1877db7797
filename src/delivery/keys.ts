import {createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError, UsageError} from '../errors.js'
import {registerSecret} from '../util/redact.js'
import {tempPathFor} from '../util/fs.js'

export const SIGNING_KEY_FILE = 'signing.key'
export const SIGNING_PUB_FILE = 'signing.pub'
export const DATA_KEY_FILE = 'data.key'
export const DATA_KEY_BYTES = 32

export interface GeneratedKeys {
  dir: string
  signingKey: string
  signingPub: string
  dataKey: string
  /** Short id of the public key (as recorded in signatures). */
  signingKeyId: string
  /** Short id of the data key (as recorded in encrypted files). */
  dataKeyId: string
}

/**
 * Write a file that must not exist yet: a private temp file (mode set at creation, never readable by
 * others) hard-linked into place, so it appears complete and an existing key is never replaced.
 */
async function writeNew(target: string, data: string, mode: number): Promise<void> {
  const tmp = tempPathFor(target)
  const fh = await fsp.open(tmp, 'wx', mode)
  try {
    await fh.writeFile(data)
    await fh.chmod(mode)
    await fh.sync()
  } finally {
    await fh.close()
  }
  try {
    await fsp.link(tmp, target)
  } finally {
    await fsp.rm(tmp, {force: true})
  }
}

/** The id recorded beside signatures: a digest of the DER public key, so verifiers can tell keys apart. */
export function publicKeyId(key: KeyObject): string {
  return createHash('sha256').update(key.export({type: 'spki', format: 'der'})).digest('hex').slice(0, 16)
}

/** The id recorded in encrypted files: lets decrypt say "wrong key" before touching any ciphertext. */
export function dataKeyId(key: Buffer): string {
  return createHash('sha256').update('kiln data key id\0').update(key).digest('hex').slice(0, 16)
}

/** Create `signing.key` (Ed25519 PKCS#8 PEM, 0600), `signing.pub` (SPKI PEM) and `data.key` (base64, 0600). */
export async function generateKeys(dir: string): Promise<GeneratedKeys> {
  const out = path.resolve(dir)
  const files = [SIGNING_KEY_FILE, SIGNING_PUB_FILE, DATA_KEY_FILE].map((f) => path.join(out, f))
  await fsp.mkdir(out, {recursive: true, mode: 0o700})
  const present = []
  for (const f of files) {
    try {
      await fsp.lstat(f)
      present.push(path.basename(f))
    } catch {
      // absent, as it should be
    }
  }
  if (present.length > 0) {
    throw new UsageError(`${out} already holds ${present.join(', ')}; kiln never overwrites keys`, {
      code: 'E_KEYS_EXIST',
      tryMessage: 'Choose another --out directory, or move the old keys away deliberately (artifacts signed or encrypted with them need them).',
    })
  }
  const {privateKey, publicKey} = generateKeyPairSync('ed25519')
  const data = randomBytes(DATA_KEY_BYTES)
  const privPem = privateKey.export({type: 'pkcs8', format: 'pem'}) as string
  registerSecret(privPem.trim())
  registerSecret(data.toString('base64'))
  try {
    await writeNew(files[0], privPem, 0o600)
    await writeNew(files[1], publicKey.export({type: 'spki', format: 'pem'}) as string, 0o644)
    await writeNew(files[2], `${data.toString('base64')}\n`, 0o600)
  } catch (error) {
    // Someone created one of the files meanwhile: leave no half set behind that we wrote.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new UsageError(`a key file appeared in ${out} while generating; nothing was overwritten`, {code: 'E_KEYS_EXIST', cause: error})
    }
    throw error
  }
  return {dir: out, signingKey: files[0], signingPub: files[1], dataKey: files[2], signingKeyId: publicKeyId(publicKey), dataKeyId: dataKeyId(data)}
}

async function readKeyFile(file: string, what: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8')
  } catch (error) {
    throw new KilnError(`cannot read ${what} ${file}: ${(error as Error).message}`, {code: 'E_KEY_READ', exitCode: 2, cause: error, tryMessage: 'Create keys with `kiln keys generate --out DIR`.'})
  }
}

/** Load an Ed25519 private key (PKCS#8 PEM) from a file. */
export async function loadSigningKey(file: string): Promise<KeyObject> {
  const pem = await readKeyFile(file, 'signing key')
  registerSecret(pem.trim())
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (error) {
    throw new KilnError(`${file} is not a PEM private key`, {code: 'E_KEY_FORMAT', exitCode: 2, cause: error, tryMessage: 'Pass signing.key from `kiln keys generate` (not signing.pub).'})
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KilnError(`${file} is a ${key.asymmetricKeyType} key; kiln signs with Ed25519`, {code: 'E_KEY_FORMAT', exitCode: 2, tryMessage: 'Create one with `kiln keys generate --out DIR`.'})
  }
  return key
}

/** Parse an Ed25519 public key from SPKI PEM text. */
export function parsePublicKey(pem: string, where = 'public key'): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch (error) {
    throw new KilnError(`${where} is not a PEM public key`, {code: 'E_KEY_FORMAT', exitCode: 2, cause: error, tryMessage: 'Pass signing.pub from `kiln keys generate`.'})
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KilnError(`${where} is a ${key.asymmetricKeyType} key; kiln verifies Ed25519 signatures`, {code: 'E_KEY_FORMAT', exitCode: 2})
  }
  return key
}

export async function loadPublicKey(file: string): Promise<KeyObject> {
  return parsePublicKey(await readKeyFile(file, 'public key'), file)
}

/** Decode base64 text holding exactly a 32-byte key. */
export function parseDataKey(text: string, where: string): Buffer {
  const trimmed = text.trim()
  const key = /^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed) ? Buffer.from(trimmed, 'base64') : Buffer.alloc(0)
  if (key.length !== DATA_KEY_BYTES) {
    throw new KilnError(`${where} does not hold a ${DATA_KEY_BYTES}-byte base64 data key`, {
      code: 'E_KEY_FORMAT',
      exitCode: 2,
      tryMessage: 'Use data.key from `kiln keys generate`, or passphrase:env:NAME for a passphrase.',
    })
  }
  registerSecret(trimmed)
  return key
}

export {readKeyFile}
