import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {sign, verify} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {generateKeys, loadPublicKey, loadSigningKey, parseDataKey} from '../../src/delivery/keys.js'
import {kiln} from '../helpers/cli.js'

describe('keys', () => {
  it('generates an Ed25519 pair and a 32-byte data key with private modes, and never overwrites', async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-keys-')), 'k')
    const keys = await generateKeys(dir)
    expect(fs.statSync(keys.signingKey).mode & 0o777).toBe(0o600)
    expect(fs.statSync(keys.dataKey).mode & 0o777).toBe(0o600)
    expect(fs.readFileSync(keys.signingKey, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/)
    expect(fs.readFileSync(keys.signingPub, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/)
    const data = parseDataKey(fs.readFileSync(keys.dataKey, 'utf8'), keys.dataKey)
    expect(data.length).toBe(32)
    const priv = await loadSigningKey(keys.signingKey)
    const pub = await loadPublicKey(keys.signingPub)
    const sig = sign(null, Buffer.from('x'), priv)
    expect(verify(null, Buffer.from('x'), pub, sig)).toBe(true)
    const before = fs.readFileSync(keys.signingKey, 'utf8')
    await expect(generateKeys(dir)).rejects.toThrow(/never overwrites keys/)
    expect(fs.readFileSync(keys.signingKey, 'utf8')).toBe(before)
    expect(fs.readdirSync(dir).sort()).toEqual(['data.key', 'signing.key', 'signing.pub'])
  })

  it('rejects the wrong kind of key file clearly', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-keys-'))
    const keys = await generateKeys(dir)
    await expect(loadSigningKey(keys.signingPub)).rejects.toThrow(/not a PEM private key/)
    expect(() => parseDataKey('c2hvcnQ=', 'x')).toThrow(/32-byte/)
  })

  it('kiln keys generate --out DIR writes the three files and refuses a second time', async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-keys-')), 'k')
    const r = await kiln(['keys', 'generate', '--out', dir, '--json'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(fs.readdirSync(dir).sort()).toEqual(['data.key', 'signing.key', 'signing.pub'])
    expect(r.stdout).not.toContain(fs.readFileSync(path.join(dir, 'data.key'), 'utf8').trim())
    const again = await kiln(['keys', 'generate', '--out', dir])
    expect(again.exitCode).toBe(2)
    expect(again.stderr).toMatch(/never overwrites keys/)
  })
})
