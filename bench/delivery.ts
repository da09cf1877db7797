// Delivery throughput, each figure beside a baseline measured in the same run:
//  1. encrypt + sign a large artifact (default 1 GiB) in a fresh process: MB/s and peak RSS, against a
//     bare SHA-256 read of the same file. Targets: ≥ 300 MB/s, peak RSS < 200 MB.
//  2. S3 publish (kiln as the stage runs it, and cold with its own digest pass: existence check, multipart with Content-MD5, read-back, latest
//     pointer) against a bare lib-storage Upload of the same file to the same radosgw, interleaved.
//     Target: kiln ≥ 80% of bare.
//
//   npx tsx bench/delivery.ts [--mb 1024] [--s3-mb 256] [--rounds 3] [--s3-endpoint URL] [--only encrypt|s3]
// Without --s3-endpoint a throw-away radosgw is started with scripts/ceph/start.sh (needs Ceph).
import {execFile, spawn} from 'node:child_process'
import {createReadStream} from 'node:fs'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'
import {CreateBucketCommand, S3Client} from '@aws-sdk/client-s3'
import {Upload} from '@aws-sdk/lib-storage'
import {encryptFile, loadDataKey} from '../src/delivery/encrypt.js'
import {generateKeys, loadSigningKey} from '../src/delivery/keys.js'
import {publishArtifact} from '../src/delivery/publish.js'
import {signDirectory} from '../src/delivery/sign.js'
import {sha256File} from '../src/util/fs.js'
import {MODELS} from '../test/helpers/fixtures.js'

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1]! : dflt
}
const MB = 1e6
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Child mode: encrypt + sign one file, report seconds and peak RSS of this process alone. */
if (process.argv[2] === '--child') {
  const [file, keysDir, outDir] = process.argv.slice(3) as [string, string, string]
  const t0 = performance.now()
  const out = path.join(outDir, `${path.basename(file)}.kenc`)
  const enc = await encryptFile(file, out, {kind: 'key', key: await loadDataKey(path.join(keysDir, 'data.key'))})
  await signDirectory(outDir, await loadSigningKey(path.join(keysDir, 'signing.key')), {knownDigests: new Map([[path.basename(out), enc.sha256]])})
  const seconds = (performance.now() - t0) / 1000
  process.stdout.write(JSON.stringify({seconds, maxRssMb: process.resourceUsage().maxRSS / 1024}))
  process.exit(0)
}

/** A file of `bytes` made of a real model's bytes repeated (content does not change AES or SHA speed). */
async function makeArtifact(file: string, bytes: number): Promise<void> {
  const seed = await fsp.readFile(MODELS.ocrRec)
  const fh = await fsp.open(file, 'w')
  let written = 0
  while (written < bytes) {
    const n = Math.min(seed.length, bytes - written)
    await fh.write(seed, 0, n)
    written += n
  }
  await fh.close()
}

function child(file: string, keysDir: string, outDir: string): Promise<{seconds: number; maxRssMb: number}> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', file, keysDir, outDir], {stdio: ['ignore', 'pipe', 'inherit']})
    let out = ''
    p.stdout.on('data', (d) => (out += d))
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}`))))
  })
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-delivery-'))
const rounds = Number(arg('rounds', '3'))
const only = arg('only', '')
try {
  // 1. encrypt + sign
  if (only !== 's3') {
  const bytes = Number(arg('mb', '1024')) * 2 ** 20
  const big = path.join(work, 'model.onnx')
  await makeArtifact(big, bytes)
  const keys = await generateKeys(path.join(work, 'keys'))
  const hashRates: number[] = []
  const rates: number[] = []
  let rss = 0
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now()
    await sha256File(big)
    hashRates.push(bytes / MB / ((performance.now() - t0) / 1000))
    const outDir = path.join(work, `signed-${r}`)
    await fsp.mkdir(outDir)
    const c = await child(big, keys.dir, outDir)
    rates.push(bytes / MB / c.seconds)
    rss = Math.max(rss, c.maxRssMb)
    await fsp.rm(outDir, {recursive: true})
  }
  const rate = median(rates)
  console.log(
    `encrypt+sign ${(bytes / MB).toFixed(0)} MB: ${rate.toFixed(0)} MB/s (target ≥ 300), peak RSS ${rss.toFixed(0)} MB (target < 200); ` +
      `bare SHA-256 read ${median(hashRates).toFixed(0)} MB/s; ratio ${(rate / median(hashRates)).toFixed(2)} [rounds: ${rates.map((x) => x.toFixed(0)).join(', ')}]`,
  )
  await fsp.rm(big)
  }
  if (only !== 'encrypt') {

  // 2. S3 publish vs bare lib-storage Upload
  let endpoint = arg('s3-endpoint', '')
  let stop: (() => Promise<void>) | undefined
  const env = {...process.env}
  if (!endpoint) {
    const free = async (): Promise<number> =>
      new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const {port} = s.address() as net.AddressInfo
          s.close(() => resolve(port))
        })
      })
    Object.assign(env, {KILN_CEPH_DIR: path.join(work, 'ceph'), KILN_MON_PORT: String(await free()), KILN_RGW_PORT: String(await free()), KILN_S3_ACCESS: 'BENCHKEY', KILN_S3_SECRET: 'BENCHSECRET'})
    const {stdout} = await promisify(execFile)('bash', [path.join(ROOT, 'scripts/ceph/start.sh')], {env})
    endpoint = /ready (\S+)/.exec(stdout)![1]!
    process.env.AWS_ACCESS_KEY_ID = 'BENCHKEY'
    process.env.AWS_SECRET_ACCESS_KEY = 'BENCHSECRET'
    stop = async () => void (await promisify(execFile)('bash', [path.join(ROOT, 'scripts/ceph/stop.sh')], {env}))
  }
  try {
    const s3Bytes = Number(arg('s3-mb', '256')) * 2 ** 20
    const file = path.join(work, 'upload.onnx')
    await makeArtifact(file, s3Bytes)
    const partSize = 8 * 2 ** 20
    const queueSize = 4
    const client = new S3Client({endpoint, region: 'us-east-1', forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED'})
    await client.send(new CreateBucketCommand({Bucket: 'bench'})).catch(() => {})
    const bare: number[] = []
    const kiln: number[] = []
    const kilnCold: number[] = []
    const known = await sha256File(file)
    for (let r = 0; r < rounds; r++) {
      const runBare = async (): Promise<void> => {
        const t0 = performance.now()
        await new Upload({client, partSize, queueSize, params: {Bucket: 'bench', Key: `bare/${r}/upload.onnx`, Body: createReadStream(file, {highWaterMark: 2 ** 20}), ContentLength: s3Bytes}}).done()
        bare.push(s3Bytes / MB / ((performance.now() - t0) / 1000))
      }
      // As the publish stage runs it (the run's record supplies the digest), and cold as `kiln publish` does.
      const runKiln = async (): Promise<void> => {
        for (const [list, sha, tag] of [[kiln, known, 'k'], [kilnCold, undefined, 'c']] as const) {
          const t0 = performance.now()
          await publishArtifact(file, {to: ['s3://bench/kiln/{run.id}/'], baseDir: work, vars: {'run.id': `${tag}${r}`, 'pipeline.name': 'bench', 'stage.id': 'publish'}, knownSha256: sha, s3: {endpoint, partSize, queueSize}})
          list.push(s3Bytes / MB / ((performance.now() - t0) / 1000))
        }
      }
      // Alternate the order so drift on a shared machine hits both.
      if (r % 2) await runKiln().then(runBare)
      else await runBare().then(runKiln)
    }
    client.destroy()
    console.log(
      `S3 publish ${(s3Bytes / MB).toFixed(0)} MB to radosgw: kiln ${median(kiln).toFixed(0)} MB/s, bare lib-storage Upload ${median(bare).toFixed(0)} MB/s, ` +
        `ratio ${(median(kiln) / median(bare)).toFixed(2)} (target ≥ 0.80); cold with its own digest pass ${median(kilnCold).toFixed(0)} MB/s, ratio ${(median(kilnCold) / median(bare)).toFixed(2)} ` +
        `[kiln: ${kiln.map((x) => x.toFixed(0)).join(', ')}; cold: ${kilnCold.map((x) => x.toFixed(0)).join(', ')}; bare: ${bare.map((x) => x.toFixed(0)).join(', ')}]`,
    )
  } finally {
    await stop?.()
  }
  }
} finally {
  await fsp.rm(work, {recursive: true, force: true})
}
