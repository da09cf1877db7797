// Evaluation throughput: kiln's evaluation loop (dataset reader with prefetch, metrics) against two
// bare onnxruntime loops with the same batch size, each on a fresh session timed from its creation:
//  - over the same data already in memory (the strict ratio: no reading at all on that side);
//  - reading the same file first and then running over it (the plain loop a user would write,
//    where loading is not overlapped with inference).
// Target: within 10%.
//
//   npx tsx bench/eval.ts
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {performance} from 'node:perf_hooks'
import {BLAZEFACE_LFW_TASK, writeLfwNpz} from '../src/data/lfw.js'
import {readNpz} from '../src/data/npy.js'
import {readBatches} from '../src/data/dataset.js'
import {evaluateModel} from '../src/eval/evaluate.js'
import {createSession, loadOrt} from '../src/runtime/ort.js'
import {getProfile, usesAllCores} from '../src/runtime/profiles.js'
import {ensureTrainedModels, fixture, MODELS} from '../test/helpers/fixtures.js'

const ort = await loadOrt()
const ROUNDS = 9
const profile = getProfile(process.argv[2] ?? 'cpu-2t')
const t = ensureTrainedModels()
const lfw = await writeLfwNpz(fixture('data/lfw_subset.npy'), path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-')), 'lfw.npz'))

const cases = [
  {name: 'fashion_cnn 10k b64', model: t.cnn, data: t.test, input: 'input', batch: 64, extra: {}},
  {name: 'fashion_mlp 10k b64', model: t.mlp, data: t.test, input: 'input', batch: 64, extra: {}},
  {name: 'blazeface lfw b1', model: MODELS.blazeface, data: lfw, input: 'input:0', batch: 1, extra: {...BLAZEFACE_LFW_TASK, outputs: [...BLAZEFACE_LFW_TASK.outputs]}},
]

for (const c of cases) {
  // Bare loop: the whole array in memory, one tensor per batch made before timing, no metrics.
  const arrays = await readNpz(c.data)
  const x = arrays.get(c.input)!
  const per = x.shape.slice(1).reduce((a, b) => a * b, 1)
  const n = x.shape[0]!
  const session = await createSession(c.model, profile)
  // Tensors built up front over their own buffers: the bare loop is nothing but runs.
  const tensors: InstanceType<typeof ort.Tensor>[] = []
  for (let s = 0; s < n; s += c.batch) {
    const m = Math.min(c.batch, n - s)
    tensors.push(new ort.Tensor('float32', (x.data as Float32Array).slice(s * per, (s + m) * per), [m, ...x.shape.slice(1)]))
  }
  // Each pass gets a fresh session, as kiln's evaluation does: a new session's first runs fault in
  // its memory arena, and both sides pay that alike. The clock starts once the session exists.
  const bare = async () => {
    const s = await createSession(c.model, profile)
    const t0 = performance.now()
    for (const t of tensors) await s.run({[c.input]: t})
    const rate = n / ((performance.now() - t0) / 1000)
    await s.release()
    return rate
  }
  // The plain loop a user would write: read the file, then run over views of it.
  const bareRead = async () => {
    const s = await createSession(c.model, profile)
    const t0 = performance.now()
    const xs = (await readNpz(c.data)).get(c.input)!
    const data = xs.data as Float32Array
    for (let i = 0; i < n; i += c.batch) {
      const m = Math.min(c.batch, n - i)
      await s.run({[c.input]: new ort.Tensor('float32', data.subarray(i * per, (i + m) * per), [m, ...xs.shape.slice(1)])})
    }
    const rate = n / ((performance.now() - t0) / 1000)
    await s.release()
    return rate
  }
  const kiln = async () => {
    const r = await evaluateModel({model: c.model, dataset: {name: 'd', path: c.data}, batchSize: c.batch, profile, metrics: ['accuracy'], ...c.extra})
    return {rate: r.samplesPerSecond, acc: r.metrics.accuracy}
  }
  await bare()
  await bareRead()
  const bares: number[] = []
  const bareReads: number[] = []
  const readRatios: number[] = []
  const kilns: number[] = []
  let acc = 0
  const ratios: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which goes first, so drift in the machine's speed does not favour one.
    if (r % 2) bares.push(await bare())
    const k = await kiln()
    if (r % 2 === 0) bares.push(await bare())
    bareReads.push(await bareRead())
    kilns.push(k.rate)
    ratios.push(k.rate / bares.at(-1)!)
    readRatios.push(k.rate / bareReads.at(-1)!)
    acc = k.acc!
  }
  // The data path alone (reader, no model): what the overlap has to hide behind inference.
  const meta = session.inputMetadata.map((m) => ({name: m.name, type: 'float32', dims: [...(m as unknown as {shape: (number | string)[]}).shape]}))
  const r0 = performance.now()
  for await (const b of readBatches({name: 'd', path: c.data}, {batchSize: c.batch, inputs: meta, reuse: true, inline: usesAllCores(profile)})) void b
  const readerRate = n / ((performance.now() - r0) / 1000)
  await session.release()
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  // The spread of the per-round ratios (each kiln pass against the bare pass next to it) shows how
  // much of a difference between runs is the machine's noise.
  const q = (xs: number[], f: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(f * xs.length))]!
  console.log(
    `${c.name.padEnd(22)} bare ${med(bares).toFixed(0)}/s  kiln eval ${med(kilns).toFixed(0)}/s  ratio ${(med(kilns) / med(bares)).toFixed(3)} (per round ${q(ratios, 0.25).toFixed(2)}–${q(ratios, 0.75).toFixed(2)} interquartile)  bare reading the file ${med(bareReads).toFixed(0)}/s  ratio ${(med(kilns) / med(bareReads)).toFixed(3)} (${q(readRatios, 0.25).toFixed(2)}–${q(readRatios, 0.75).toFixed(2)})  reader alone ${readerRate.toFixed(0)}/s  accuracy ${acc.toFixed(4)}`,
  )
}
