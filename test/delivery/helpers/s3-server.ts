import {execFile} from 'node:child_process'
import * as fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'
import {CreateBucketCommand, S3Client} from '@aws-sdk/client-s3'
import {ROOT} from '../../helpers/cli.js'

const run = promisify(execFile)

export interface S3TestServer {
  kind: 'radosgw' | 'fauxqs'
  endpoint: string
  accessKeyId: string
  secretAccessKey: string
  /** A plain client (no kiln code) for setting up buckets and reading back what was published. */
  client: S3Client
  createBucket(name: string): Promise<void>
  stop(): Promise<void>
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const {port} = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

async function hasRadosgw(): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v radosgw && command -v ceph-mon && command -v ceph-osd'])
    return true
  } catch {
    return false
  }
}

function plainClient(endpoint: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({endpoint, region: 'us-east-1', forcePathStyle: true, credentials: {accessKeyId, secretAccessKey}, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED'})
}

/**
 * Start a real S3 server for one test file: Ceph radosgw through scripts/ceph/start.sh when it is
 * installed (required under CI=true), otherwise the fauxqs npm server, announced on stderr.
 * `KILN_TEST_S3=fauxqs` picks fauxqs even where radosgw is installed (never under CI=true).
 */
export async function startS3Server(): Promise<S3TestServer> {
  const accessKeyId = 'KILNTESTKEY'
  const secretAccessKey = 'KILNTESTSECRET'
  // KILN_TEST_S3=fauxqs exercises the fallback on a machine that has radosgw too.
  const forceFauxqs = process.env.KILN_TEST_S3 === 'fauxqs' && process.env.CI !== 'true'
  if (!forceFauxqs && (await hasRadosgw())) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ceph-'))
    const env = {...process.env, KILN_CEPH_DIR: dir, KILN_MON_PORT: String(await freePort()), KILN_RGW_PORT: String(await freePort()), KILN_S3_ACCESS: accessKeyId, KILN_S3_SECRET: secretAccessKey}
    const stop = async (): Promise<void> => {
      await run('bash', [path.join(ROOT, 'scripts/ceph/stop.sh')], {env}).catch(() => {})
    }
    try {
      const {stdout} = await run('bash', [path.join(ROOT, 'scripts/ceph/start.sh')], {env, timeout: 120_000})
      const endpoint = /ready (\S+)/.exec(stdout)?.[1]
      if (!endpoint) throw new Error(`radosgw start printed no endpoint: ${stdout}`)
      const client = plainClient(endpoint, accessKeyId, secretAccessKey)
      process.stderr.write(`[s3 tests] using Ceph radosgw at ${endpoint}\n`)
      return {kind: 'radosgw', endpoint, accessKeyId, secretAccessKey, client, createBucket: async (b) => void (await client.send(new CreateBucketCommand({Bucket: b}))), stop: async () => (client.destroy(), stop())}
    } catch (error) {
      await stop()
      throw error
    }
  }
  if (process.env.CI === 'true') {
    throw new Error('radosgw is required for the S3 tests under CI=true: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common')
  }
  const {startFauxqs} = await import('fauxqs')
  const server = await startFauxqs({port: 0, logger: false})
  const endpoint = `http://127.0.0.1:${server.port}`
  const client = plainClient(endpoint, accessKeyId, secretAccessKey)
  process.stderr.write(`[s3 tests] ${forceFauxqs ? 'KILN_TEST_S3=fauxqs' : 'radosgw is not installed'}: using the fauxqs npm S3 server at ${endpoint} (no signature, Content-MD5 or If-None-Match checks)\n`)
  return {kind: 'fauxqs', endpoint, accessKeyId, secretAccessKey, client, createBucket: async (b) => void (await client.send(new CreateBucketCommand({Bucket: b}))), stop: async () => (client.destroy(), server.stop())}
}
