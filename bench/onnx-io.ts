/**
 * ONNX model I/O at scale, on generated MatMul-stack models (float32 2048×2048 layers, 16 MiB each):
 * - `kiln inspect` wall time on a ≥ 400 MB model (with and without the zstd size);
 * - read → write throughput (MB/s) and the peak RSS of a read, each in a fresh child process,
 *   against a baseline child that only loads the modules;
 * - the memory ratio of reading a ~1 GB model (peak RSS above baseline / file size; target ≤ 2);
 * - a > 2 GiB model written through external data, read back and run in onnxruntime.
 * Temporary models are removed at the end. Skip the largest step with `--no-2gib`;
 * `--quick` runs tiny sizes to check the bench itself.
 *
 *   npx tsx bench/onnx-io.ts [--layers 26] [--no-2gib] [--quick]
 */
import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../src/onnx/build.js'
import {readModel, writeModel} from '../src/onnx/model.js'
import {DataType} from '../src/onnx/proto.js'
import {makeTensor} from '../src/onnx/tensor.js'

const DIM = 2048
const LAYER_BYTES = DIM * DIM * 4
const HERE = fileURLToPath(import.meta.url)
const ROOT = path.resolve(path.dirname(HERE), '..')
const MB = 1e6

function layerWeights(seed: number): Float32Array {
  // Uniform in ±sqrt(3/DIM): unit variance through each MatMul, so activations stay finite.
  const w = new Float32Array(DIM * DIM)
  const a = Math.sqrt(3 / DIM)
  let s = (seed * 2654435761) >>> 0
  for (let i = 0; i < w.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    w[i] = ((s / 2 ** 32) * 2 - 1) * a
  }
  return w
}

/** A chain of `layers` MatMuls; `distinct` bounds how many different weight buffers back them (memory). */
async function generate(file: string, layers: number, distinct = layers): Promise<{bytes: number; external: boolean}> {
  const buffers = new Map<number, Float32Array>()
  const nodes = []
  const inits = []
  for (let i = 0; i < layers; i++) {
    const key = i % distinct
    if (!buffers.has(key)) buffers.set(key, layerWeights(key + 1))
    inits.push(makeTensor(`w${i}`, DataType.FLOAT, [DIM, DIM], buffers.get(key)!))
    nodes.push(makeNode('MatMul', [i === 0 ? 'x' : `h${i - 1}`, `w${i}`], [i === layers - 1 ? 'y' : `h${i}`], {}, {name: `mm${i}`}))
  }
  const model = makeModel(
    makeGraph({name: 'matmul_stack', node: nodes, initializer: inits, input: [makeValueInfo('x', DataType.FLOAT, [1, DIM])], output: [makeValueInfo('y', DataType.FLOAT, [1, DIM])]}),
    {'': 17},
    8,
  )
  const r = await writeModel(model, file)
  return {bytes: r.bytes, external: Boolean(r.externalFile)}
}

/** Run this file in a child under /usr/bin/time: wall seconds, peak RSS and what the child printed. */
function child(args: string[]): {wall: number; maxRssMB: number; out: Record<string, number>} {
  const stats = path.join(os.tmpdir(), `kiln-bench-time-${process.pid}-${Date.now()}`)
  const stdout = execFileSync('/usr/bin/time', ['-f', '%e %M', '-o', stats, process.execPath, '--import', 'tsx', HERE, '--child', ...args], {cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26})
  const [wall, rssKb] = fs.readFileSync(stats, 'utf8').trim().split(/\s+/).slice(-2).map(Number)
  fs.rmSync(stats, {force: true})
  const last = stdout.trim().split('\n').at(-1) ?? '{}'
  return {wall: wall!, maxRssMB: (rssKb! * 1024) / MB, out: JSON.parse(last.startsWith('{') ? last : '{}')}
}

/** Wall and CPU (user + sys) seconds of a command: on a shared, loaded machine CPU time is the steadier figure. */
function timed(args: string[]): {wall: number; cpu: number} {
  const stats = path.join(os.tmpdir(), `kiln-bench-time-${process.pid}-${Date.now()}`)
  execFileSync('/usr/bin/time', ['-f', '%e %U %S', '-o', stats, process.execPath, ...args], {cwd: ROOT, stdio: 'ignore', env: {...process.env, CI: 'true'}})
  const [wall, user, sys] = fs.readFileSync(stats, 'utf8').trim().split(/\s+/).slice(-3).map(Number)
  fs.rmSync(stats, {force: true})
  return {wall: wall!, cpu: user! + sys!}
}

const fmt = (t: {wall: number; cpu: number}) => `${t.wall.toFixed(2)} s wall / ${t.cpu.toFixed(2)} s cpu`
const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1e6
}

async function childMain(mode: string, file: string, out?: string): Promise<void> {
  if (mode === 'baseline') {
    // Same modules as the read child, no model.
    console.log(JSON.stringify({ok: 1}))
    return
  }
  if (mode === 'ort') {
    const {createSession, loadOrt} = await import('../src/runtime/ort.js')
    const ort = await loadOrt()
    const t1 = performance.now()
    const session = await createSession(file)
    const x = new ort.Tensor('float32', new Float32Array(DIM).fill(0.5), [1, DIM])
    const y = (await session.run({x})).y!.data as Float32Array
    const finite = y.every((v) => Number.isFinite(v)) ? 1 : 0
    return console.log(JSON.stringify({ortS: (performance.now() - t1) / 1000, finite}))
  }
  const t0 = performance.now()
  const c0 = process.cpuUsage()
  const model = await readModel(file)
  const readS = (performance.now() - t0) / 1000
  const readCpuS = cpuSeconds(c0)
  if (mode === 'read') return console.log(JSON.stringify({readS, readCpuS}))
  if (mode === 'readwrite') {
    const t1 = performance.now()
    const c1 = process.cpuUsage()
    await writeModel(model, out!)
    return console.log(JSON.stringify({readS, readCpuS, writeS: (performance.now() - t1) / 1000, writeCpuS: cpuSeconds(c1)}))
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  // --quick: tiny sizes, to check the bench itself runs.
  const quick = argv.includes('--quick')
  const layers = quick ? 2 : Number(argv[argv.indexOf('--layers') + 1] || 0) || 26
  const layers1g = quick ? 4 : 64
  const big = !quick && !argv.includes('--no-2gib')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-onnx-io-'))
  const rows: string[] = []
  const say = (s: string) => {
    rows.push(s)
    console.log(s)
  }
  try {
    const base = child(['baseline', '-'])
    say(`baseline child (modules only): peak RSS ${base.maxRssMB.toFixed(0)} MB`)

    // 1. A ≥ 400 MB model: inspect, read → write throughput, read peak RSS.
    const m400 = path.join(dir, 'm400.onnx')
    let t0 = performance.now()
    const g = await generate(m400, layers)
    say(`generated ${layers} × 2048² fp32 MatMuls: ${(g.bytes / MB).toFixed(0)} MB in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const size400 = fs.statSync(m400).size
    const inspectNoZstd = timed(['bin/run.js', 'inspect', m400, '--json', '--no-compressed-size'])
    const inspectZstd = timed(['bin/run.js', 'inspect', m400, '--json'])
    const help = timed(['bin/run.js', '--help'])
    say(`kiln inspect (${(size400 / MB).toFixed(0)} MB model): ${fmt(inspectNoZstd)}; with the zstd size ${fmt(inspectZstd)}; kiln --help in the same conditions ${fmt(help)}`)
    const rw = child(['readwrite', m400, path.join(dir, 'm400-out.onnx')])
    const read = child(['read', m400])
    const mbs = (s: number) => (size400 / MB / s).toFixed(0)
    say(
      `read ${mbs(rw.out.readS!)} MB/s, write ${mbs(rw.out.writeS!)} MB/s, read→write ${mbs(rw.out.readS! + rw.out.writeS!)} MB/s (wall); per CPU-second: read ${mbs(rw.out.readCpuS!)}, write ${mbs(rw.out.writeCpuS!)}, read→write ${mbs(rw.out.readCpuS! + rw.out.writeCpuS!)} MB/s`,
    )
    say(`peak RSS: read ${read.maxRssMB.toFixed(0)} MB, read+write ${rw.maxRssMB.toFixed(0)} MB (model ${(size400 / MB).toFixed(0)} MB; read above baseline = ${((read.maxRssMB - base.maxRssMB) / (size400 / MB)).toFixed(2)}× the file)`)
    const same = Buffer.compare(fs.readFileSync(m400), fs.readFileSync(path.join(dir, 'm400-out.onnx'))) === 0
    say(`written copy byte-identical to the original: ${same}`)
    fs.rmSync(path.join(dir, 'm400-out.onnx'))
    fs.rmSync(m400)

    // 2. ~1 GB model: memory ratio of a read.
    const m1g = path.join(dir, 'm1g.onnx')
    t0 = performance.now()
    await generate(m1g, layers1g)
    const size1g = fs.statSync(m1g).size
    const read1g = child(['read', m1g])
    say(
      `1 GB read: file ${(size1g / MB).toFixed(0)} MB, peak RSS ${read1g.maxRssMB.toFixed(0)} MB, above baseline ${((read1g.maxRssMB - base.maxRssMB) / (size1g / MB)).toFixed(2)}× the file (target ≤ 2), ${(size1g / MB / read1g.out.readS!).toFixed(0)} MB/s`,
    )
    fs.rmSync(m1g)

    // 3. > 2 GiB of weights: must go through external data, read back and run.
    if (big) {
      const free = fs.statfsSync(dir)
      if (free.bavail * free.bsize < 6 * 2 ** 30) say('skipped the > 2 GiB model: less than 6 GiB free')
      else {
        const m2g = path.join(dir, 'm2g.onnx')
        const bigLayers = Math.ceil((2.1 * 2 ** 30) / LAYER_BYTES)
        t0 = performance.now()
        const r = await generate(m2g, bigLayers, 8)
        const writeS = (performance.now() - t0) / 1000
        const dataBytes = fs.statSync(`${m2g}.data`).size
        say(`> 2 GiB model: ${bigLayers} layers, ${(r.bytes / 2 ** 30).toFixed(2)} GiB, external data ${r.external} (${(dataBytes / 2 ** 30).toFixed(2)} GiB data file, ${fs.statSync(m2g).size} B .onnx), generated+written in ${writeS.toFixed(1)} s`)
        const back = child(['read', m2g])
        say(`  kiln read back: ${back.out.readS!.toFixed(1)} s (${(dataBytes / MB / back.out.readS!).toFixed(0)} MB/s), peak RSS ${back.maxRssMB.toFixed(0)} MB`)
        const run = child(['ort', m2g])
        say(`  onnxruntime: session + one run ${run.out.ortS!.toFixed(1)} s, outputs finite: ${run.out.finite === 1}, peak RSS ${run.maxRssMB.toFixed(0)} MB`)
      }
    }
  } finally {
    fs.rmSync(dir, {recursive: true, force: true})
  }
}

const at = process.argv.indexOf('--child')
if (at >= 0) await childMain(process.argv[at + 1]!, process.argv[at + 2]!, process.argv[at + 3])
else await main()
