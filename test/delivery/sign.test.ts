import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {generateKeys, type GeneratedKeys} from '../../src/delivery/keys.js'
import {findSignatureBundle, pae, PREDICATE_TYPE, signArtifact, verifyDirectory} from '../../src/delivery/sign.js'
import signStage from '../../src/stages/sign.js'
import {sha256File} from '../../src/util/fs.js'
import {kiln} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'

let keys: GeneratedKeys
let other: GeneratedKeys
let pubPem: string

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-sign-'))
}

beforeAll(async () => {
  keys = await generateKeys(path.join(tmp(), 'k'))
  other = await generateKeys(path.join(tmp(), 'k2'))
  pubPem = fs.readFileSync(keys.signingPub, 'utf8')
})

async function signedCopy(): Promise<string> {
  const src = path.join(tmp(), 'src')
  fs.mkdirSync(path.join(src, 'extra'), {recursive: true})
  fs.copyFileSync(MODELS.sileroV5, path.join(src, 'model.onnx'))
  fs.writeFileSync(path.join(src, 'extra', 'config.json'), '{"labels": 10}')
  const out = path.join(tmp(), 'signed')
  await signArtifact(src, out, keys.signingKey)
  return out
}

describe('sign and verify', () => {
  it('uses the DSSE pre-authentication encoding', () => {
    expect(pae('t', Buffer.from('hello')).toString()).toBe('DSSEv1 1 t 5 hello')
  })

  it('writes an in-toto statement with one subject per file and verifies it', async () => {
    const dir = await signedCopy()
    const bundle = JSON.parse(fs.readFileSync((await findSignatureBundle(dir))!, 'utf8'))
    const statement = JSON.parse(Buffer.from(bundle.dsseEnvelope.payload, 'base64').toString())
    expect(statement._type).toBe('https://in-toto.io/Statement/v1')
    expect(statement.predicateType).toBe(PREDICATE_TYPE)
    expect(statement.subject.map((s: {name: string}) => s.name)).toEqual(['extra/config.json', 'model.onnx'])
    expect(statement.subject[1].digest.sha256).toBe(await sha256File(MODELS.sileroV5))
    const r = await verifyDirectory(dir, pubPem)
    expect(r.files.find((f) => f.path === 'model.onnx')?.bytes).toBe(fs.statSync(MODELS.sileroV5).size)
  })

  it('fails naming the file when one is changed, missing or extra, and on a wrong key', async () => {
    const changed = await signedCopy()
    const f = path.join(changed, 'model.onnx')
    const bytes = fs.readFileSync(f)
    bytes[bytes.length >> 1] ^= 1
    fs.writeFileSync(f, bytes)
    await expect(verifyDirectory(changed, pubPem)).rejects.toThrow(/model\.onnx: content does not match/)

    const missing = await signedCopy()
    fs.rmSync(path.join(missing, 'extra', 'config.json'))
    await expect(verifyDirectory(missing, pubPem)).rejects.toThrow(/extra\/config\.json: signed but missing/)

    const extra = await signedCopy()
    fs.writeFileSync(path.join(extra, 'payload.bin'), 'x')
    await expect(verifyDirectory(extra, pubPem)).rejects.toThrow(/payload\.bin: not covered by the signature/)

    const ok = await signedCopy()
    await expect(verifyDirectory(ok, fs.readFileSync(other.signingPub, 'utf8'))).rejects.toThrow(/does not verify \(signed by key/)

    const forged = await signedCopy()
    const sigFile = path.join(forged, 'model.sig')
    const b = JSON.parse(fs.readFileSync(sigFile, 'utf8'))
    const st = JSON.parse(Buffer.from(b.dsseEnvelope.payload, 'base64').toString())
    st.subject[1].digest.sha256 = '0'.repeat(64)
    b.dsseEnvelope.payload = Buffer.from(JSON.stringify(st)).toString('base64')
    fs.writeFileSync(sigFile, JSON.stringify(b))
    await expect(verifyDirectory(forged, pubPem)).rejects.toThrow(/does not verify/)
  })

  it('sign stage outputs the input file plus the bundle', async () => {
    const {ctx, input} = await makeStageContext({input: MODELS.ocrCls})
    const params = signStage.schema.parse({key: keys.signingKey})
    const r = await signStage.run(ctx, input, params)
    expect(r.artifact?.path).toBe(ctx.outDir)
    expect(fs.readdirSync(ctx.outDir).sort()).toEqual([path.basename(MODELS.ocrCls), 'model.sig'].sort())
    expect((await verifyDirectory(ctx.outDir, pubPem)).files[0].sha256).toBe(input.sha256)
  })

  it('kiln sign / kiln verify exit 0 on a good signature and non-zero naming the file otherwise', async () => {
    const out = path.join(tmp(), 'signed')
    const s = await kiln(['sign', MODELS.blazeface, '--key', keys.signingKey, '-o', out, '--json'])
    expect(s.exitCode, s.stderr).toBe(0)
    expect(s.json.files).toHaveLength(1)
    const v = await kiln(['verify', out, '--pub', keys.signingPub])
    expect(v.exitCode, v.stderr).toBe(0)
    fs.appendFileSync(path.join(out, path.basename(MODELS.blazeface)), 'x')
    const bad = await kiln(['verify', out, '--pub', keys.signingPub, '--json'])
    expect(bad.exitCode).toBe(1)
    expect(bad.json.error.message).toContain(path.basename(MODELS.blazeface))
  })
})
