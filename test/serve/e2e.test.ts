import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import ort from 'onnxruntime-node'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {readNpz} from '../../src/data/npy.js'
import {decryptToBuffer, loadDataKey} from '../../src/delivery/encrypt.js'
import {kiln} from '../helpers/cli.js'
import {ensureTrainedModels} from '../helpers/fixtures.js'
import {type ServeProcess, startServe} from './helpers.js'
import {maxAbsDiff} from './inputs.js'

const TOKEN = 'e2e-serve-token-0123456789'
let tmp: string
let server: ServeProcess

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-e2e-'))
  const r = await kiln(['keys', 'generate', '--out', path.join(tmp, 'keys')])
  expect(r.exitCode, r.stderr).toBe(0)
  // An empty server that only accepts signed models it can decrypt, loaded through the repository API.
  server = await startServe(['--pub', path.join(tmp, 'keys', 'signing.pub'), '--key', path.join(tmp, 'keys', 'data.key'), '--token', TOKEN])
})

afterAll(async () => {
  await server?.stop()
  if (tmp) await fsp.rm(tmp, {recursive: true, force: true})
})

describe('kiln run → publish to kiln serve', () => {
  it('serves what the pipeline published, with the outputs onnxruntime gives on the published model', async () => {
    const trained = ensureTrainedModels()
    await fsp.copyFile(trained.cnn, path.join(tmp, 'fashion_cnn.onnx'))
    const port = new URL(server.url).port
    await fsp.writeFile(
      path.join(tmp, 'kiln.yaml'),
      `version: 1
name: fashion-served
model: ./fashion_cnn.onnx
stages:
  - uses: encrypt
    with: { key: ./keys/data.key }
  - uses: sign
    with: { key: ./keys/signing.key }
  - uses: publish
    with:
      to: ["oip+http://127.0.0.1:${port}"]
      oip: { token: env:KILN_SERVE_TOKEN }
`,
    )
    const run = await kiln(['run', 'kiln.yaml', '--json', '--out', path.join(tmp, 'run')], {cwd: tmp, env: {KILN_SERVE_TOKEN: TOKEN}})
    expect(run.exitCode, run.stderr).toBe(0)
    expect(run.json.status).toBe('passed')
    expect(run.stdout).not.toContain(TOKEN)

    const index = await (await fetch(`${server.url}/v2/repository/index`, {method: 'POST', headers: {authorization: `Bearer ${TOKEN}`}})).json()
    expect(index).toEqual([{name: 'fashion-served', version: '1', state: 'READY', reason: ''}])

    // The reference: the published (signed, encrypted) artifact, decrypted here and run directly.
    const signed = run.json.stages.find((s: any) => s.id === 'sign').artifact.path as string
    const files = await fsp.readdir(signed)
    expect(files.sort()).toEqual([expect.stringMatching(/\.onnx\.kenc$/), 'model.sig'])
    const published = await decryptToBuffer(path.join(signed, files.find((f) => f.endsWith('.kenc'))!), await loadDataKey(path.join(tmp, 'keys', 'data.key')))
    const session = await ort.InferenceSession.create(published, {logSeverityLevel: 3, intraOpNumThreads: 2, interOpNumThreads: 1, executionMode: 'sequential'})
    const images = (await readNpz(trained.calib)).get('input')!
    const batch = 8
    const x = (images.data as Float32Array).slice(0, batch * 784)
    const direct = (await session.run({input: new ort.Tensor('float32', x, [batch, 1, 28, 28])})).logits!
    await session.release()

    const res = await fetch(`${server.url}/v2/models/fashion-served/infer`, {
      method: 'POST',
      body: JSON.stringify({id: 'e2e', inputs: [{name: 'input', datatype: 'FP32', shape: [batch, 1, 28, 28], data: Array.from(x)}]}),
    })
    expect(res.status).toBe(200)
    const body = await res.json()
    expect(body).toMatchObject({model_name: 'fashion-served', model_version: '1', id: 'e2e'})
    expect(body.outputs[0]).toMatchObject({name: 'logits', datatype: 'FP32', shape: [batch, 10]})
    expect(maxAbsDiff(body.outputs[0].data, direct.data as Float32Array)).toBeLessThanOrEqual(1e-5)
  })
})
