import {createPublicKey, sign as edSign, verify as edVerify, type KeyObject} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../errors.js'
import {atomicWriteFile, exists, listFiles, sha256File} from '../util/fs.js'
import {loadSigningKey, parsePublicKey, publicKeyId} from './keys.js'

/** The signature bundle's file name inside a signed directory (as OpenSSF model signing names it). */
export const SIGNATURE_FILE = 'model.sig'
export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1'
/** The OpenSSF model-signing predicate whose statements carry one subject per file. */
export const PREDICATE_TYPE = 'https://model_signing/Digests/v0.1'
export const PAYLOAD_TYPE = 'application/vnd.in-toto+json'
export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json'

export interface SignedFile {
  path: string
  sha256: string
  bytes: number
}

interface Subject {
  name: string
  digest: {sha256: string}
  annotations?: {actual_hash_algorithm?: string; bytes?: number}
}

export interface Statement {
  _type: string
  subject: Subject[]
  predicateType: string
  predicate: Record<string, unknown>
}

export interface SignatureBundle {
  mediaType: string
  verificationMaterial: {publicKey: {hint: string}}
  dsseEnvelope: {payload: string; payloadType: string; signatures: {sig: string; keyid?: string}[]}
}

/** DSSE pre-authentication encoding: binds the payload type to the payload so neither can be swapped. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, 'utf8')
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload])
}

export function buildStatement(files: SignedFile[]): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject: [...files]
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
      .map((f) => ({name: f.path, digest: {sha256: f.sha256}, annotations: {actual_hash_algorithm: 'file-sha256', bytes: f.bytes}})),
    predicateType: PREDICATE_TYPE,
    predicate: {generator: 'kiln', files: files.length, bytes: files.reduce((n, f) => n + f.bytes, 0)},
  }
}

/** Every file of `dir` except the signature bundle, with digests: exactly what a signature covers. */
export async function collectSignedFiles(dir: string, known?: Map<string, string>): Promise<SignedFile[]> {
  const rels = (await listFiles(dir)).filter((rel) => rel !== SIGNATURE_FILE)
  const out: SignedFile[] = []
  for (const rel of rels) {
    const abs = path.join(dir, rel)
    out.push({path: rel, sha256: known?.get(rel) ?? (await sha256File(abs)), bytes: (await fsp.stat(abs)).size})
  }
  return out
}

export function signStatement(statement: Statement, key: KeyObject, pub: KeyObject): SignatureBundle {
  const payload = Buffer.from(JSON.stringify(statement, null, 2))
  const keyid = publicKeyId(pub)
  const sig = edSign(null, pae(PAYLOAD_TYPE, payload), key)
  return {
    mediaType: BUNDLE_MEDIA_TYPE,
    verificationMaterial: {publicKey: {hint: keyid}},
    dsseEnvelope: {payload: payload.toString('base64'), payloadType: PAYLOAD_TYPE, signatures: [{sig: sig.toString('base64'), keyid}]},
  }
}

/** Options for {@link signDirectory}. */
export interface SignOptions {
  /** Digests already known (relative path → sha256), e.g. from encrypt, to skip re-reading those files. */
  knownDigests?: Map<string, string>
}

/**
 * Sign the files of `dir` as they are: write `model.sig` (a DSSE envelope over an in-toto statement
 * listing every file) into it. An existing bundle is replaced; it is never part of what is signed.
 */
export async function signDirectory(dir: string, key: KeyObject, opts: SignOptions = {}): Promise<{bundle: string; files: SignedFile[]; keyId: string}> {
  const files = await collectSignedFiles(dir, opts.knownDigests)
  if (files.length === 0) throw new KilnError(`nothing to sign in ${dir}`, {code: 'E_SIGN_EMPTY', tryMessage: 'Sign a directory that holds the model files.'})
  const pub = createPublicKey(key)
  const bundle = signStatement(buildStatement(files), key, pub)
  const file = path.join(dir, SIGNATURE_FILE)
  await atomicWriteFile(file, `${JSON.stringify(bundle, null, 2)}\n`)
  return {bundle: file, files, keyId: publicKeyId(pub)}
}

/**
 * Produce a signed copy of an artifact in `outDir`: the input file (or every file of the input
 * directory) plus the signature bundle.
 */
export async function signArtifact(input: string, outDir: string, keyFile: string, opts: SignOptions = {}): Promise<{bundle: string; files: SignedFile[]; keyId: string}> {
  const key = await loadSigningKey(keyFile)
  const st = await fsp.stat(input)
  await fsp.mkdir(outDir, {recursive: true})
  const rels = st.isDirectory() ? (await listFiles(input)).filter((r) => r !== SIGNATURE_FILE) : [path.basename(input)]
  for (const rel of rels) {
    const from = st.isDirectory() ? path.join(input, rel) : input
    const to = path.join(outDir, rel)
    await fsp.mkdir(path.dirname(to), {recursive: true})
    // A reflink where the filesystem offers one: large artifacts are not duplicated block by block.
    await fsp.copyFile(from, to, fsp.constants.COPYFILE_FICLONE)
  }
  return signDirectory(outDir, key, opts)
}

/** The signature bundle of a signed directory, or undefined when it has none. */
export async function findSignatureBundle(dir: string): Promise<string | undefined> {
  const file = path.join(dir, SIGNATURE_FILE)
  return (await exists(file)) ? file : undefined
}

function verifyError(message: string, code: string, tryMessage: string): KilnError {
  return new KilnError(message, {code, tryMessage})
}

/** Check a bundle's signature and return the statement it signs. */
export function openBundle(text: string, pub: KeyObject, where: string): Statement {
  let bundle: SignatureBundle
  try {
    bundle = JSON.parse(text) as SignatureBundle
  } catch {
    throw verifyError(`${where} is not a JSON signature bundle`, 'E_VERIFY_BUNDLE', 'Re-sign the artifact with `kiln sign`.')
  }
  const env = bundle?.dsseEnvelope
  if (!env || typeof env.payload !== 'string' || !Array.isArray(env.signatures) || env.payloadType !== PAYLOAD_TYPE) {
    throw verifyError(`${where} holds no in-toto DSSE envelope`, 'E_VERIFY_BUNDLE', 'Re-sign the artifact with `kiln sign`.')
  }
  const payload = Buffer.from(env.payload, 'base64')
  const message = pae(env.payloadType, payload)
  const good = env.signatures.some((s) => typeof s.sig === 'string' && edVerify(null, message, pub, Buffer.from(s.sig, 'base64')))
  if (!good) {
    const ids = env.signatures.map((s) => s.keyid).filter(Boolean)
    const mine = publicKeyId(pub)
    const hint = ids.length > 0 && !ids.includes(mine) ? ` (signed by key ${ids.join(', ')}; this public key is ${mine})` : ' (the manifest or signature was altered)'
    throw verifyError(`signature in ${where} does not verify${hint}`, 'E_VERIFY_SIGNATURE', 'Check that you use the signing.pub that belongs to the signing key, and that the artifact came from a trusted source.')
  }
  let statement: Statement
  try {
    statement = JSON.parse(payload.toString('utf8')) as Statement
  } catch {
    throw verifyError(`signed payload in ${where} is not JSON`, 'E_VERIFY_BUNDLE', 'Re-sign the artifact with `kiln sign`.')
  }
  if (statement._type !== STATEMENT_TYPE || !Array.isArray(statement.subject)) {
    throw verifyError(`signed payload in ${where} is not an in-toto v1 statement`, 'E_VERIFY_BUNDLE', 'Re-sign the artifact with `kiln sign`.')
  }
  return statement
}

/**
 * Verify a signed directory against a public key: the signature, then every file. A changed,
 * missing or extra file fails with an error naming it. Returns the verified files.
 */
export async function verifyDirectory(dir: string, publicKeyPem: string): Promise<{files: SignedFile[]}> {
  const pub = parsePublicKey(publicKeyPem)
  const bundleFile = await findSignatureBundle(dir)
  if (!bundleFile) {
    throw verifyError(`${dir} has no signature (${SIGNATURE_FILE})`, 'E_VERIFY_UNSIGNED', 'Sign it with `kiln sign DIR --key signing.key`, or point at the signed directory.')
  }
  const statement = openBundle(await fsp.readFile(bundleFile, 'utf8'), pub, bundleFile)
  const expected = new Map<string, Subject>()
  for (const s of statement.subject) expected.set(s.name, s)
  const present = (await listFiles(dir)).filter((rel) => rel !== SIGNATURE_FILE)
  const extra = present.filter((rel) => !expected.has(rel))
  if (extra.length > 0) {
    throw verifyError(`${extra.join(', ')}: not covered by the signature (extra file${extra.length > 1 ? 's' : ''} in ${dir})`, 'E_VERIFY_EXTRA', 'Remove files added after signing, or sign again.')
  }
  const presentSet = new Set(present)
  const missing = [...expected.keys()].filter((name) => !presentSet.has(name))
  if (missing.length > 0) {
    throw verifyError(`${missing.join(', ')}: signed but missing from ${dir}`, 'E_VERIFY_MISSING', 'Download the complete version again.')
  }
  const files: SignedFile[] = []
  for (const [name, subject] of expected) {
    const abs = path.join(dir, name)
    const sha = await sha256File(abs)
    if (sha !== subject.digest?.sha256) {
      throw verifyError(`${name}: content does not match the signature (sha256 ${sha}, signed ${subject.digest?.sha256})`, 'E_VERIFY_DIGEST', 'The file was changed or corrupted after signing; download it again from a trusted source.')
    }
    files.push({path: name, sha256: sha, bytes: (await fsp.stat(abs)).size})
  }
  return {files}
}
