import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {encryptFile, loadDataKey} from '../../src/delivery/encrypt.js'
import {generateKeys, type GeneratedKeys} from '../../src/delivery/keys.js'
import {publishArtifact} from '../../src/delivery/publish.js'
import {serve, type RunningServer} from '../../src/delivery/serve/index.js'
import {signDirectory} from '../../src/delivery/sign.js'
import {loadSigningKey} from '../../src/delivery/keys.js'
import {parseOipUri} from '../../src/delivery/targets/oip.js'
import {MODELS} from '../helpers/fixtures.js'

const TOKEN = 'oip-test-token-123'
let keys: GeneratedKeys
let server: RunningServer
let work: string

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-oip-'))
  keys = await generateKeys(path.join(work, 'keys'))
  // The project's own Open Inference Protocol server is the real peer here.
  server = await serve({
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    pool: 1,
    threads: 1,
    version: 'test',
    logLevel: 'error',
    security: {publicKeyPem: fs.readFileSync(keys.signingPub, 'utf8'), dataKey: {kind: 'key', key: await loadDataKey(keys.dataKey)}},
  })
  process.env.KILN_TEST_OIP_TOKEN = TOKEN
})

afterAll(async () => {
  await server?.close()
})

const vars = {'run.id': 'r1', 'pipeline.name': 'face', 'stage.id': 'publish'}

describe('publish to an Open Inference Protocol endpoint', () => {
  it('parses target URIs', () => {
    expect(parseOipUri('oip+http://127.0.0.1:8000')).toEqual({base: 'http://127.0.0.1:8000', model: undefined})
    expect(parseOipUri('oip+https://h:1/m/')).toEqual({base: 'https://h:1', model: 'm'})
    expect(() => parseOipUri('oip+ftp://h')).toThrow(/not an Open Inference Protocol target/)
  })

  it('pushes an encrypted, signed model and waits until it is ready', async () => {
    const dir = path.join(work, 'signed')
    fs.mkdirSync(dir)
    await encryptFile(MODELS.blazeface, path.join(dir, 'model.onnx.kenc'), {kind: 'key', key: await loadDataKey(keys.dataKey)})
    await signDirectory(dir, await loadSigningKey(keys.signingKey))
    const uri = `oip+${server.url}/{pipeline.name}`
    const r = await publishArtifact(dir, {to: [uri], baseDir: work, vars, oip: {token: 'env:KILN_TEST_OIP_TOKEN'}})
    expect(r.targets[0]).toMatchObject({status: 'published', files: 2, uri: `oip+${server.url}/face`})
    const ready = await fetch(`${server.url}/v2/models/face/ready`)
    expect(ready.status).toBe(200)
    const meta = (await (await fetch(`${server.url}/v2/models/face`)).json()) as {inputs: {name: string}[]}
    expect(meta.inputs.length).toBeGreaterThan(0)
  })

  it('fails clearly on a wrong token, never printing it', async () => {
    process.env.KILN_TEST_OIP_BAD = 'not-the-token'
    const err = await publishArtifact(MODELS.blazeface, {to: [`oip+${server.url}/x`], baseDir: work, vars, oip: {token: 'env:KILN_TEST_OIP_BAD'}}).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/answered 401/)
    expect((err as Error).message).not.toContain('not-the-token')
  })

  it("says how to raise the server's body limit when the model is too large for it", async () => {
    // A server that takes bodies of 64 KiB: a real model does not fit, base64-encoded in JSON.
    const small = await serve({host: '127.0.0.1', port: 0, token: TOKEN, pool: 0, maxBody: 64 * 1024, version: 'test', logLevel: 'error', security: {}})
    try {
      const err = await publishArtifact(MODELS.blazeface, {to: [`oip+${small.url}/big`], baseDir: work, vars, oip: {token: 'env:KILN_TEST_OIP_TOKEN'}}).catch((e: Error) => e)
      expect(err).toMatchObject({code: 'E_OIP_LOAD'})
      expect((err as Error).message).toMatch(/answered 413/)
      const tryMessage = (err as {tryMessage?: string}).tryMessage ?? ''
      expect(tryMessage).toMatch(/kiln serve --max-body \d+/)
      // The suggested limit fits the request that was refused.
      expect(Number(/--max-body (\d+)/.exec(tryMessage)![1])).toBeGreaterThan(((await fs.promises.stat(MODELS.blazeface)).size * 4) / 3)
    } finally {
      await small.close()
    }
  })

  it('refuses a literal token in the settings', async () => {
    await expect(publishArtifact(MODELS.blazeface, {to: [`oip+${server.url}/x`], baseDir: work, vars, oip: {token: TOKEN}})).rejects.toThrow(/env:NAME/)
  })
})
