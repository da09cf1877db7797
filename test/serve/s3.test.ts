import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {PutObjectCommand} from '@aws-sdk/client-s3'
import ort from 'onnxruntime-node'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {kiln} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {type S3TestServer, startS3Server} from '../delivery/helpers/s3-server.js'
import {type ServeProcess, startServe} from './helpers.js'
import {blazefaceInput, maxAbsDiff, runDirect} from './inputs.js'

const BUCKET = 'kiln-serve'
const TOKEN = 's3-serve-token-0123456789'
let s3: S3TestServer
let tmp: string
let env: Record<string, string>

async function cli(args: string[]): Promise<void> {
  const r = await kiln(args, {env})
  if (r.exitCode !== 0) throw new Error(`kiln ${args.join(' ')} failed (${r.exitCode}):\n${r.stderr}`)
}

beforeAll(async () => {
  s3 = await startS3Server()
  await s3.createBucket(BUCKET)
  env = {AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_S3: s3.endpoint}
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-s3-'))
  const keys = path.join(tmp, 'keys')
  const art = path.join(tmp, 'art')
  await fsp.mkdir(art)
  await cli(['keys', 'generate', '--out', keys])
  await cli(['encrypt', MODELS.blazeface, '--key', path.join(keys, 'data.key'), '-o', path.join(art, 'model.onnx.kenc')])
  await cli(['sign', art, '--key', path.join(keys, 'signing.key')])
  await cli(['publish', art, '--to', `s3://${BUCKET}/models/face/`, '--run-id', 'v7'])
  // A loose model beside it: with --pub it has no signature and must be refused.
  await s3.client.send(new PutObjectCommand({Bucket: BUCKET, Key: 'models/cls.onnx', Body: await fsp.readFile(MODELS.ocrCls)}))
}, 240_000)

afterAll(async () => {
  await s3?.stop()
  if (tmp) await fsp.rm(tmp, {recursive: true, force: true})
})

describe('kiln serve from S3', () => {
  it('serves the version the latest pointer names, verified and decrypted in memory', async () => {
    const keys = path.join(tmp, 'keys')
    const server: ServeProcess = await startServe([`s3://${BUCKET}/models/`, '--pub', path.join(keys, 'signing.pub'), '--key', path.join(keys, 'data.key'), '--token', TOKEN], env)
    try {
      const headers = {authorization: `Bearer ${TOKEN}`}
      const index = await (await fetch(`${server.url}/v2/repository/index`, {method: 'POST', headers})).json()
      expect(index.find((e: any) => e.name === 'face')).toEqual({name: 'face', version: 'v7', state: 'READY', reason: ''})
      const cls = index.find((e: any) => e.name === 'cls')
      expect(cls).toMatchObject({version: '1', state: 'UNAVAILABLE'})
      expect(cls.reason).toMatch(/^signature verification failed: .*has no signature/)

      const input = await blazefaceInput(2)
      const direct = await runDirect(MODELS.blazeface, {'input:0': new ort.Tensor('float32', input, [1, 128, 128, 3])})
      const res = await fetch(`${server.url}/v2/models/face/infer`, {
        method: 'POST',
        body: JSON.stringify({inputs: [{name: 'input:0', datatype: 'FP32', shape: [1, 128, 128, 3], data: Array.from(input)}], outputs: [{name: 'Identity_1:0'}]}),
      })
      expect(res.status).toBe(200)
      const out = (await res.json()).outputs[0]
      expect(maxAbsDiff(out.data, direct['Identity_1:0']!.data as Float32Array)).toBeLessThanOrEqual(1e-5)

      // An object replaced behind the pointer's back: a reload is refused, the loaded version keeps serving.
      await s3.client.send(new PutObjectCommand({Bucket: BUCKET, Key: 'models/face/v7/model.onnx.kenc', Body: Buffer.from('replaced')}))
      const reload = await fetch(`${server.url}/v2/repository/models/face/load`, {method: 'POST', headers})
      expect(reload.status).toBe(400)
      expect((await reload.json()).error).toMatch(/^failed to load 'face': .*differs from the .* the latest pointer records \(the loaded versions keep serving\)$/)
      const after = await (await fetch(`${server.url}/v2/repository/index`, {method: 'POST', headers})).json()
      const face = after.find((e: any) => e.name === 'face')
      expect(face.state).toBe('READY')
      expect(face.reason).toMatch(/^reload failed: s3:\/\/kiln-serve\/models\/face\/v7\/model\.onnx\.kenc: sha256 [0-9a-f]{64} differs from the [0-9a-f]{64} the latest pointer records$/)
      expect((await fetch(`${server.url}/v2/models/face/ready`)).status).toBe(200)
    } finally {
      await server.stop()
    }
  })
})
