import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {decryptFile, decryptToBuffer, encryptFile, isEncryptedFile, loadDataKey, resolveDataKey} from '../../src/delivery/encrypt.js'
import {HEADER_BYTES, TAG_BYTES} from '../../src/delivery/encrypt-format.js'
import {generateKeys, type GeneratedKeys} from '../../src/delivery/keys.js'
import encryptStage from '../../src/stages/encrypt.js'
import {sha256File} from '../../src/util/fs.js'
import {kiln} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'

const CHUNK = 64 * 1024
let keys: GeneratedKeys
let key: Buffer
let dir: string

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-enc-'))
  keys = await generateKeys(path.join(dir, 'keys'))
  key = await loadDataKey(keys.dataKey)
})

async function encrypted(model = MODELS.sileroV5): Promise<string> {
  const out = path.join(fs.mkdtempSync(path.join(dir, 'e-')), 'm.kenc')
  await encryptFile(model, out, {kind: 'key', key}, {chunkSize: CHUNK})
  return out
}

describe('encrypt / decrypt', () => {
  it('round-trips a real model through several chunks, on disk and in memory', async () => {
    const enc = await encrypted()
    const size = fs.statSync(MODELS.sileroV5).size
    const chunks = Math.floor(size / CHUNK) + 1
    expect(chunks).toBeGreaterThan(10)
    expect(fs.statSync(enc).size).toBe(HEADER_BYTES + size + chunks * TAG_BYTES)
    expect(await isEncryptedFile(enc)).toBe(true)
    expect(await isEncryptedFile(MODELS.sileroV5)).toBe(false)
    const plain = await decryptToBuffer(enc, key)
    expect(plain.equals(fs.readFileSync(MODELS.sileroV5))).toBe(true)
    const out = path.join(path.dirname(enc), 'm.onnx')
    await decryptFile(enc, out, key)
    expect(await sha256File(out)).toBe(await sha256File(MODELS.sileroV5))
  })

  it('handles a plaintext that is an exact multiple of the chunk size, and an empty one', async () => {
    for (const n of [CHUNK * 3, 0]) {
      const src = path.join(dir, `exact-${n}.bin`)
      fs.writeFileSync(src, fs.readFileSync(MODELS.sileroV5).subarray(0, n))
      const enc = `${src}.kenc`
      await encryptFile(src, enc, {kind: 'key', key}, {chunkSize: CHUNK})
      expect((await decryptToBuffer(enc, key)).equals(fs.readFileSync(src))).toBe(true)
    }
  })

  it('detects a tampered byte, truncation, reordering, splicing and a changed header; leaves no plaintext', async () => {
    const cases: Record<string, (b: Buffer, other: Buffer) => Buffer> = {
      'flipped byte': (b) => {
        b[HEADER_BYTES + 5 * CHUNK + 100] ^= 0x40
        return b
      },
      'cut at a chunk boundary': (b) => b.subarray(0, HEADER_BYTES + 4 * (CHUNK + TAG_BYTES)),
      'cut mid-chunk': (b) => b.subarray(0, HEADER_BYTES + 4 * (CHUNK + TAG_BYTES) + 1000),
      'two chunks swapped': (b) => {
        const r = CHUNK + TAG_BYTES
        const a = Buffer.from(b.subarray(HEADER_BYTES + r, HEADER_BYTES + 2 * r))
        b.copy(b, HEADER_BYTES + r, HEADER_BYTES + 2 * r, HEADER_BYTES + 3 * r)
        a.copy(b, HEADER_BYTES + 2 * r)
        return b
      },
      'chunk spliced from another file': (b, other) => {
        other.copy(b, HEADER_BYTES + (CHUNK + TAG_BYTES), HEADER_BYTES + (CHUNK + TAG_BYTES), HEADER_BYTES + 2 * (CHUNK + TAG_BYTES))
        return b
      },
      'header chunk size changed': (b) => {
        b.writeUInt32BE(CHUNK * 2, 16)
        return b
      },
    }
    const otherEnc = fs.readFileSync(await encrypted())
    for (const [name, damage] of Object.entries(cases)) {
      const enc = await encrypted()
      fs.writeFileSync(enc, damage(fs.readFileSync(enc), otherEnc))
      const out = path.join(path.dirname(enc), 'plain.onnx')
      await expect(decryptFile(enc, out, key), name).rejects.toThrow(/failed authentication|truncated|not a readable/)
      expect(fs.readdirSync(path.dirname(enc)), name).toEqual(['m.kenc'])
      await expect(decryptToBuffer(enc, key), name).rejects.toThrow()
    }
  })

  it('names a wrong key or passphrase before decrypting anything', async () => {
    const enc = await encrypted(MODELS.blazeface)
    const other = await generateKeys(path.join(dir, 'other'))
    await expect(decryptToBuffer(enc, await loadDataKey(other.dataKey))).rejects.toThrow(/wrong key .*key id/)
    process.env.KILN_TEST_PASS = 'correct horse battery staple'
    const pass = await resolveDataKey('passphrase:env:KILN_TEST_PASS')
    const pEnc = path.join(path.dirname(enc), 'p.kenc')
    await encryptFile(MODELS.blazeface, pEnc, pass)
    expect((await decryptToBuffer(pEnc, pass)).equals(fs.readFileSync(MODELS.blazeface))).toBe(true)
    process.env.KILN_TEST_PASS = 'wrong horse'
    await expect(decryptToBuffer(pEnc, await resolveDataKey('passphrase:env:KILN_TEST_PASS'))).rejects.toThrow(/wrong passphrase/)
    await expect(decryptToBuffer(pEnc, key)).rejects.toThrow(/encrypted with a passphrase/)
    await expect(resolveDataKey('passphrase:hunter2')).rejects.toThrow(/passphrase:env:NAME/)
  })

  it('encrypt stage writes <name>.kenc with a key from the environment', async () => {
    process.env.KILN_TEST_DATA_KEY = fs.readFileSync(keys.dataKey, 'utf8').trim()
    const {ctx, input} = await makeStageContext({input: MODELS.ocrCls})
    const r = await encryptStage.run(ctx, input, encryptStage.schema.parse({key: 'env:KILN_TEST_DATA_KEY'}))
    expect(r.artifact?.path).toBe(path.join(ctx.outDir, `${path.basename(MODELS.ocrCls)}.kenc`))
    expect((await decryptToBuffer(r.artifact!.path, key)).equals(fs.readFileSync(MODELS.ocrCls))).toBe(true)
    expect(r.metrics.plaintextBytes).toBe(input.bytes)
  })

  it('kiln encrypt / decrypt round-trip; a wrong key exits 1 with no output file', async () => {
    const work = fs.mkdtempSync(path.join(dir, 'cli-'))
    const enc = path.join(work, 'm.kenc')
    const e = await kiln(['encrypt', MODELS.blazeface, '--key', keys.dataKey, '-o', enc])
    expect(e.exitCode, e.stderr).toBe(0)
    const d = await kiln(['decrypt', enc, '--key', keys.dataKey, '-o', path.join(work, 'm.onnx'), '--json'])
    expect(d.exitCode, d.stderr).toBe(0)
    expect(await sha256File(path.join(work, 'm.onnx'))).toBe(await sha256File(MODELS.blazeface))
    const other = await generateKeys(path.join(work, 'k'))
    const bad = await kiln(['decrypt', enc, '--key', other.dataKey, '-o', path.join(work, 'x.onnx')])
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toMatch(/wrong key/)
    expect(fs.existsSync(path.join(work, 'x.onnx'))).toBe(false)
    expect(bad.stderr).not.toContain(fs.readFileSync(other.dataKey, 'utf8').trim())
  })
})
