import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand} from '@aws-sdk/client-s3'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {decryptFile, loadDataKey} from '../../src/delivery/encrypt.js'
import {generateKeys} from '../../src/delivery/keys.js'
import {publishArtifact, type PublishOptions} from '../../src/delivery/publish.js'
import {verifyDirectory} from '../../src/delivery/sign.js'
import type {S3Settings} from '../../src/delivery/targets/types.js'
import encryptStage from '../../src/stages/encrypt.js'
import publishStage from '../../src/stages/publish.js'
import signStage from '../../src/stages/sign.js'
import {sha256File} from '../../src/util/fs.js'
import {kiln} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'
import {FaultProxy, type Fault} from './helpers/fault-proxy.js'
import {startS3Server, type S3TestServer} from './helpers/s3-server.js'

const BUCKET = 'kiln-test'
const MIB = 1 << 20
let s3: S3TestServer
let proxy: FaultProxy
let proxyUrl: string
let work: string
let artifact: string

beforeAll(async () => {
  s3 = await startS3Server()
  await s3.createBucket(BUCKET)
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey
  process.env.AWS_REGION = 'us-east-1'
  proxy = new FaultProxy(Number(new URL(s3.endpoint).port))
  proxyUrl = await proxy.start()
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-s3-'))
  // A two-file artifact: a 10.8 MB model (three 5 MiB parts) and a small one (a single PUT).
  artifact = path.join(work, 'artifact')
  fs.mkdirSync(artifact)
  fs.copyFileSync(MODELS.ocrRec, path.join(artifact, 'rec.onnx'))
  fs.copyFileSync(MODELS.blazeface, path.join(artifact, 'a-face.onnx'))
}, 180_000)

afterAll(async () => {
  await proxy?.stop()
  await s3?.stop()
})

async function list(prefix: string): Promise<string[]> {
  const r = await s3.client.send(new ListObjectsV2Command({Bucket: BUCKET, Prefix: prefix}))
  return (r.Contents ?? []).map((o) => o.Key!).sort()
}

async function pendingUploads(prefix: string): Promise<number> {
  const r = await s3.client.send(new ListMultipartUploadsCommand({Bucket: BUCKET, Prefix: prefix}))
  return r.Uploads?.length ?? 0
}

async function download(key: string, to: string): Promise<void> {
  const r = await s3.client.send(new GetObjectCommand({Bucket: BUCKET, Key: key}))
  fs.mkdirSync(path.dirname(to), {recursive: true})
  fs.writeFileSync(to, await r.Body!.transformToByteArray())
}

function opts(version: string, s3Settings: S3Settings, root = 'models'): PublishOptions {
  return {to: [`s3://${BUCKET}/${root}/{pipeline.name}/{run.id}/`], baseDir: work, vars: {'run.id': version, 'pipeline.name': 'ocr', 'stage.id': 'publish'}, s3: s3Settings}
}

describe(`publish to S3`, () => {
  it('publishes a version with SHA-256 metadata, then the latest pointer; never overwrites it', async () => {
    const r = await publishArtifact(artifact, opts('v1', {endpoint: s3.endpoint, partSize: 5 * MIB}))
    expect(r.targets[0]).toMatchObject({status: 'published', files: 2, uri: `s3://${BUCKET}/models/ocr/v1/`})
    expect(await list('models/ocr/')).toEqual(['models/ocr/latest', 'models/ocr/v1/a-face.onnx', 'models/ocr/v1/rec.onnx'])
    const h = await s3.client.send(new HeadObjectCommand({Bucket: BUCKET, Key: 'models/ocr/v1/rec.onnx'}))
    expect(h.Metadata?.sha256).toBe(await sha256File(MODELS.ocrRec))
    expect(h.ContentLength).toBe(fs.statSync(MODELS.ocrRec).size)
    await download('models/ocr/v1/rec.onnx', path.join(work, 'dl', 'rec.onnx'))
    expect(await sha256File(path.join(work, 'dl', 'rec.onnx'))).toBe(await sha256File(MODELS.ocrRec))
    await download('models/ocr/latest', path.join(work, 'dl', 'latest'))
    expect(JSON.parse(fs.readFileSync(path.join(work, 'dl', 'latest'), 'utf8')).version).toBe('v1')

    expect((await publishArtifact(artifact, opts('v1', {endpoint: s3.endpoint}))).targets[0].status).toBe('unchanged')
    const changed = path.join(work, 'changed')
    fs.mkdirSync(changed)
    fs.copyFileSync(MODELS.ocrCls, path.join(changed, 'rec.onnx'))
    await expect(publishArtifact(changed, opts('v1', {endpoint: s3.endpoint}))).rejects.toThrow(/already exists with different content/)
    const again = await s3.client.send(new HeadObjectCommand({Bucket: BUCKET, Key: 'models/ocr/v1/rec.onnx'}))
    expect(again.Metadata?.sha256).toBe(h.Metadata?.sha256)
  })

  it('an object that appears under the version during a publish is not overwritten (If-None-Match, radosgw only)', async (t) => {
    if (s3.kind !== 'radosgw') t.skip('fauxqs ignores If-None-Match')
    // Another writer creates the key while this publish is between its existence check and its upload.
    const key = 'race/ocr/v1/rec.onnx'
    let other: Promise<unknown> | undefined
    const pending = publishArtifact(artifact, {...opts('v1', {endpoint: s3.endpoint, partSize: 5 * MIB}, 'race'), progress: (m) => {
      // While the first (small) file uploads, the other writer stores the second file's key.
      if (m.includes('a-face.onnx')) other = s3.client.send(new PutObjectCommand({Bucket: BUCKET, Key: key, Body: Buffer.from('someone else')}))
    }})
    await expect(pending).rejects.toThrow(/already exists|never overwritten/)
    await other
    await download(key, path.join(work, 'race', 'rec.onnx'))
    expect(fs.readFileSync(path.join(work, 'race', 'rec.onnx'), 'utf8')).toBe('someone else')
    expect(await list('race/ocr/')).toEqual([key])
  })
})

interface FaultCase {
  name: string
  faults: Fault[]
  expect: 'completes' | 'fails'
  radosgwOnly?: boolean
}

const CASES: FaultCase[] = [
  {name: 'connection reset mid-part', faults: [{kind: 'reset', afterBytes: 2 * MIB, times: 1, match: /partNumber=2/}], expect: 'completes'},
  {name: 'connection reset mid single PUT', faults: [{kind: 'reset', afterBytes: 200_000, times: 1, match: /^PUT [^?]*a-face\.onnx(\?|$)/}], expect: 'completes'},
  {name: 'three resets on different parts', faults: [1, 2, 3].map((n) => ({kind: 'reset' as const, afterBytes: MIB, times: 1, match: new RegExp(`partNumber=${n}`)})), expect: 'completes'},
  {name: 'HTTP 503 on a part', faults: [{kind: 'http503', afterBytes: 0, times: 2, match: /partNumber=1/}], expect: 'completes'},
  {name: 'HTTP 503 on complete-multipart', faults: [{kind: 'http503', afterBytes: 0, times: 1, match: /^POST .*uploadId=/}], expect: 'completes'},
  {name: 'HTTP 503 on the latest pointer', faults: [{kind: 'http503', afterBytes: 0, times: 2, match: /^PUT [^?]*\/latest(\?|$)/}], expect: 'completes'},
  {name: 'stalled part upload', faults: [{kind: 'stall', afterBytes: MIB, times: 1, match: /partNumber=2/}], expect: 'completes'},
  {name: 'flipped byte in a part body (Content-MD5)', faults: [{kind: 'corrupt', afterBytes: MIB, times: 1, match: /partNumber=2/}], expect: 'completes', radosgwOnly: true},
  {name: 'flipped byte in a single PUT body (Content-MD5)', faults: [{kind: 'corrupt', afterBytes: 100_000, times: 1, match: /^PUT [^?]*a-face\.onnx(\?|$)/}], expect: 'completes', radosgwOnly: true},
  {name: 'every attempt of one part reset', faults: [{kind: 'reset', afterBytes: MIB, times: Infinity, match: /partNumber=2/}], expect: 'fails'},
  {name: 'every attempt of one part answered 503', faults: [{kind: 'http503', afterBytes: 0, times: Infinity, match: /partNumber=3/}], expect: 'fails'},
  {name: 'every upload request of the large file stalls', faults: [{kind: 'stall', afterBytes: 0, times: Infinity, match: /^PUT [^?]*rec\.onnx/}], expect: 'fails'},
  {name: 'the latest pointer always fails', faults: [{kind: 'reset', afterBytes: 0, times: Infinity, match: /^PUT [^?]*\/latest(\?|$)/}], expect: 'fails'},
]

const tally = {completed: 0, failedCleanly: 0, skipped: 0}

describe('publish to S3 through a fault-injecting proxy', () => {
  afterAll(() => {
    process.stderr.write(`[s3 faults] ${CASES.length} cases on ${s3?.kind}: ${tally.completed} completed correctly after retries, ${tally.failedCleanly} failed clearly with nothing visible, ${tally.skipped} skipped; faults struck: ${JSON.stringify(proxy?.struck)}\n`)
  })

  for (const [i, c] of CASES.entries()) {
    it(`${c.expect === 'completes' ? 'recovers from' : 'fails cleanly on'}: ${c.name}`, async (t) => {
      if (c.radosgwOnly && s3.kind !== 'radosgw') {
        tally.skipped++
        t.skip(`${c.name} needs a server that checks Content-MD5 (radosgw)`)
      }
      proxy.clear()
      for (const f of c.faults) proxy.inject(f)
      const struckBefore = Object.values(proxy.struck).reduce((a, b) => a + b, 0)
      const root = `faults/${i}`
      // Failing cases need few retries to prove the point; recovering ones get room for several faults.
      const settings: S3Settings = {endpoint: proxyUrl, partSize: 5 * MIB, timeoutMs: 1500, retries: c.expect === 'fails' ? 1 : 3}
      const run = publishArtifact(artifact, opts('v1', settings, root))
      if (c.expect === 'completes') {
        const r = await run
        expect(r.targets[0].retries).toBeGreaterThan(0)
        expect(await list(`${root}/`)).toEqual([`${root}/ocr/latest`, `${root}/ocr/v1/a-face.onnx`, `${root}/ocr/v1/rec.onnx`])
        for (const name of ['rec.onnx', 'a-face.onnx']) {
          const to = path.join(work, root, name)
          await download(`${root}/ocr/v1/${name}`, to)
          expect(await sha256File(to)).toBe(await sha256File(path.join(artifact, name)))
        }
        tally.completed++
      } else {
        await expect(run).rejects.toThrow(/S3 .* failed|could not|timed? ?out|ServiceUnavailable|socket|ECONNRESET/i)
        expect(await list(`${root}/`)).toEqual([])
        expect(await pendingUploads(`${root}/`)).toBe(0)
        tally.failedCleanly++
      }
      expect(Object.values(proxy.struck).reduce((a, b) => a + b, 0)).toBeGreaterThan(struckBefore)
      proxy.clear()
    })
  }
})

describe('kiln publish', () => {
  it('publishes with --s3-endpoint / --s3-path-style and the AWS environment for credentials', async () => {
    const env = {AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1'}
    const r = await kiln(['publish', MODELS.ocrCls, '--to', `s3://${BUCKET}/cli/{pipeline.name}/`, '--name', 'cls', '--run-id', 'r7', '--s3-endpoint', s3.endpoint, '--s3-path-style', '--json'], {env})
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json.targets[0]).toMatchObject({uri: `s3://${BUCKET}/cli/cls/r7/`, status: 'published', files: 1})
    expect(await list('cli/cls/')).toEqual(['cli/cls/latest', `cli/cls/r7/${path.basename(MODELS.ocrCls)}`])
    if (s3.kind !== 'radosgw') {
      process.stderr.write('[s3 tests] wrong-secret check left out: fauxqs does not check signatures\n')
      return
    }
    const bad = await kiln(['publish', MODELS.ocrCls, '--to', `s3://${BUCKET}/cli/{pipeline.name}/`, '--name', 'cls', '--run-id', 'r8', '--s3-endpoint', s3.endpoint, '--json'], {env: {...env, AWS_SECRET_ACCESS_KEY: 'wrong-secret-value'}})
    expect(bad.exitCode).toBe(1)
    expect(bad.json.error.message).toMatch(/S3 refused|SignatureDoesNotMatch|403/)
    expect(bad.stdout + bad.stderr).not.toContain('wrong-secret-value')
  })
})

describe('end to end', () => {
  it('encrypt → sign → publish to S3; a plain client downloads, verifies and decrypts byte-identical', async () => {
    const keys = await generateKeys(path.join(work, 'keys'))
    const enc = await makeStageContext({input: MODELS.ocrDet, id: 'encrypt'})
    const e = await encryptStage.run(enc.ctx, enc.input, encryptStage.schema.parse({key: keys.dataKey}))
    const {digestPath} = await import('../../src/util/fs.js')
    const encRecord = {...e.artifact!, ...(await digestPath(e.artifact!.path))}
    const sig = await makeStageContext({input: encRecord.path, id: 'sign'})
    const s = await signStage.run(sig.ctx, encRecord, signStage.schema.parse({key: keys.signingKey}))
    const signedRecord = {...s.artifact!, ...(await digestPath(s.artifact!.path))}
    const pub = await makeStageContext({input: signedRecord.path, id: 'publish'})
    const p = await publishStage.run(pub.ctx, signedRecord, publishStage.schema.parse({to: [`s3://${BUCKET}/e2e/{pipeline.name}/{run.id}/`], s3: {endpoint: s3.endpoint}}))
    const target = (p.metrics.targets as {uri: string; files: number}[])[0]
    expect(target.files).toBe(2)

    const prefix = 'e2e/test/test-run/'
    const keysOnServer = await list(prefix)
    expect(keysOnServer.map((k) => k.slice(prefix.length))).toEqual(['model.sig', `${path.basename(MODELS.ocrDet)}.kenc`])
    const dl = path.join(work, 'e2e-download')
    for (const k of keysOnServer) await download(k, path.join(dl, k.slice(prefix.length)))
    const verified = await verifyDirectory(dl, fs.readFileSync(keys.signingPub, 'utf8'))
    expect(verified.files.map((f) => f.path)).toEqual([`${path.basename(MODELS.ocrDet)}.kenc`])
    const plain = path.join(work, 'e2e-plain.onnx')
    await decryptFile(path.join(dl, `${path.basename(MODELS.ocrDet)}.kenc`), plain, await loadDataKey(keys.dataKey))
    expect(fs.readFileSync(plain).equals(fs.readFileSync(MODELS.ocrDet))).toBe(true)
  })
})
