import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import ort from 'onnxruntime-node'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {kiln} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {prepareVersion} from '../../src/delivery/serve/version-loader.js'
import {type ServeProcess, startServe} from './helpers.js'
import {blazefaceInput, maxAbsDiff, runDirect} from './inputs.js'

const TOKEN = 'secure-serve-token-abcdef'
let tmp: string
let keys: string
let published: string

async function cli(args: string[]): Promise<void> {
  const r = await kiln(args)
  if (r.exitCode !== 0) throw new Error(`kiln ${args.join(' ')} failed (${r.exitCode}):\n${r.stderr}`)
}

/** Encrypt a model into a fresh folder, sign the folder, publish it as `<published>/<name>/v1/`, all with the CLI. */
async function encryptSignPublish(model: string, name: string, keyDir: string): Promise<string> {
  const art = path.join(tmp, `art-${name}`)
  await fsp.mkdir(art)
  await cli(['encrypt', model, '--key', path.join(keyDir, 'data.key'), '-o', path.join(art, 'model.onnx.kenc')])
  await cli(['sign', art, '--key', path.join(keyDir, 'signing.key')])
  await cli(['publish', art, '--to', path.join(published, name), '--run-id', 'v1'])
  return path.join(published, name, 'v1')
}

const authHeaders = {authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json'}

async function index(server: ServeProcess): Promise<Array<{name: string; version?: string; state: string; reason: string}>> {
  return (await fetch(`${server.url}/v2/repository/index`, {method: 'POST', headers: authHeaders, body: '{}'})).json()
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-secure-'))
  keys = path.join(tmp, 'keys')
  published = path.join(tmp, 'published')
  await cli(['keys', 'generate', '--out', keys])
  await cli(['keys', 'generate', '--out', path.join(tmp, 'other-keys')])
  await encryptSignPublish(MODELS.blazeface, 'face', keys)
  // Copies of the published model: one with a flipped ciphertext byte, one re-signed with another key.
  await fsp.cp(path.join(published, 'face'), path.join(published, 'tampered'), {recursive: true})
  const file = path.join(published, 'tampered', 'v1', 'model.onnx.kenc')
  const bytes = await fsp.readFile(file)
  bytes[bytes.length - 100]! ^= 0x01
  await fsp.writeFile(file, bytes)
  await fsp.cp(path.join(published, 'face'), path.join(published, 'foreign'), {recursive: true})
  await cli(['sign', path.join(published, 'foreign', 'v1'), '--key', path.join(tmp, 'other-keys', 'signing.key')])
  await fsp.copyFile(MODELS.ocrCls, path.join(published, 'loose.onnx'))
}, 180_000)

afterAll(async () => {
  if (tmp) await fsp.rm(tmp, {recursive: true, force: true})
})

describe('kiln serve: signed and encrypted artifacts', () => {
  it('serves a verified, encrypted version and refuses the others with the reason in the index', async () => {
    // A private TMPDIR shows whether anything of the pushed files stays on disk.
    const serverTmp = path.join(tmp, 'server-tmp')
    await fsp.mkdir(serverTmp)
    const server = await startServe([published, '--pub', path.join(keys, 'signing.pub'), '--key', path.join(keys, 'data.key'), '--token', TOKEN], {TMPDIR: serverTmp})
    try {
      const entries = await index(server)
      const byName = new Map(entries.map((e) => [e.name, e]))
      expect(byName.get('face')).toEqual({name: 'face', version: 'v1', state: 'READY', reason: ''})
      expect(byName.get('tampered')).toMatchObject({version: 'v1', state: 'UNAVAILABLE'})
      expect(byName.get('tampered')!.reason).toMatch(/^signature verification failed: model\.onnx\.kenc: content does not match the signature/)
      expect(byName.get('foreign')!.reason).toMatch(/^signature verification failed: signature in .*model\.sig does not verify \(signed by key/)
      expect(byName.get('loose')).toMatchObject({state: 'UNAVAILABLE', reason: 'loose.onnx is a loose model file with no signature'})
      expect((await fetch(`${server.url}/v2/models/tampered/ready`)).status).toBe(400)

      const input = await blazefaceInput(1)
      const direct = await runDirect(MODELS.blazeface, {'input:0': new ort.Tensor('float32', input, [1, 128, 128, 3])})
      const res = await fetch(`${server.url}/v2/models/face/infer`, {
        method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3], data: Array.from(input)}], outputs: [{name: 'Identity:0'}]}),
      })
      expect(res.status).toBe(200)
      const out = (await res.json()).outputs[0]
      expect(maxAbsDiff(out.data, direct['Identity:0']!.data as Float32Array)).toBeLessThanOrEqual(1e-5)

      // The same protections apply to files pushed through the repository API.
      const version = path.join(published, 'face', 'v1')
      const files = {
        'file:5/model.onnx.kenc': (await fsp.readFile(path.join(version, 'model.onnx.kenc'))).toString('base64'),
        'file:5/model.sig': (await fsp.readFile(path.join(version, 'model.sig'))).toString('base64'),
      }
      const ok = await fetch(`${server.url}/v2/repository/models/face2/load`, {method: 'POST', headers: authHeaders, body: JSON.stringify({parameters: {config: '{}', ...files}})})
      expect(ok.status).toBe(200)
      expect((await fetch(`${server.url}/v2/models/face2/versions/5/ready`)).status).toBe(200)
      const unsigned = await fetch(`${server.url}/v2/repository/models/face3/load`, {
        method: 'POST',
        headers: authHeaders,
        body: JSON.stringify({parameters: {config: '{}', 'file:1/model.onnx.kenc': files['file:5/model.onnx.kenc']}}),
      })
      expect(unsigned.status).toBe(400)
      expect((await unsigned.json()).error).toMatch(/failed to load 'face3': version 1: signature verification failed: .*has no signature/)
      expect(server.stderr()).not.toContain(TOKEN)
    } finally {
      const {code} = await server.stop()
      expect(code).toBe(0)
    }
    // Pushed files were only materialised (still encrypted) in private temp folders, all removed.
    expect(await fsp.readdir(serverTmp)).toEqual([])
  })

  it('decrypts loose encrypted files too, and refuses encrypted models without the data key or with the wrong one', async () => {
    // A folder holding a publish root and a loose encrypted model file.
    const mixed = path.join(tmp, 'mixed')
    await fsp.cp(path.join(published, 'face'), path.join(mixed, 'face'), {recursive: true})
    await fsp.copyFile(path.join(published, 'face', 'v1', 'model.onnx.kenc'), path.join(mixed, 'loose.onnx.kenc'))
    const withKey = await startServe([mixed, '--key', path.join(keys, 'data.key'), '--token', TOKEN])
    try {
      expect(await index(withKey)).toEqual([
        {name: 'face', version: 'v1', state: 'READY', reason: ''},
        {name: 'loose', version: '1', state: 'READY', reason: ''},
      ])
    } finally {
      await withKey.stop()
    }
    const wrongKey = await startServe([mixed, '--key', path.join(tmp, 'other-keys', 'data.key'), '--token', TOKEN])
    try {
      const entries = await index(wrongKey)
      expect(entries.map((e) => [e.name, e.state])).toEqual([
        ['face', 'UNAVAILABLE'],
        ['loose', 'UNAVAILABLE'],
      ])
      expect(entries[0]!.reason).toMatch(/^cannot decrypt model\.onnx\.kenc: /)
      expect(entries[1]!.reason).toMatch(/^cannot decrypt loose\.onnx\.kenc: /)
    } finally {
      await wrongKey.stop()
    }
    const keyless = await startServe([path.join(published, 'face'), '--token', TOKEN])
    try {
      expect(await index(keyless)).toEqual([{name: 'face', version: 'v1', state: 'UNAVAILABLE', reason: 'model.onnx.kenc is encrypted and the server has no data key'}])
    } finally {
      await keyless.stop()
    }
  })
})

describe('kiln serve: a verified plain model', () => {
  it('is loaded from the bytes whose digest the signature gives, not read again by path', async () => {
    const dir = path.join(tmp, 'plain-signed')
    await fsp.mkdir(dir)
    await fsp.copyFile(MODELS.ocrCls, path.join(dir, 'model.onnx'))
    await cli(['sign', dir, '--key', path.join(keys, 'signing.key')])
    const publicKeyPem = await fsp.readFile(path.join(keys, 'signing.pub'), 'utf8')
    const verified = await prepareVersion({kind: 'dir', dir}, {publicKeyPem})
    expect(verified.verified).toBe(true)
    expect('bytes' in verified.payload && Buffer.from(verified.payload.bytes).equals(await fsp.readFile(MODELS.ocrCls))).toBe(true)
    // Without --pub there is nothing to hold the file to: onnxruntime opens it by path.
    expect((await prepareVersion({kind: 'dir', dir}, {})).payload).toEqual({path: path.join(dir, 'model.onnx')})
  })
})
