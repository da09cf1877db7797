// Harness overhead: kiln's benchmark loop against a bare `session.run` loop on the same session and
// inputs, interleaved in rounds so machine drift hits both. Target: overhead ≤ 3%.
//
//   npx tsx bench/harness.ts [--rounds 10] [--iterations 300]
import {performance} from 'node:perf_hooks'
import {benchmark, measureLoop} from '../src/runtime/bench.js'
import {createSession, loadOrt} from '../src/runtime/ort.js'
import {getProfile} from '../src/runtime/profiles.js'
import {meanCi} from '../src/runtime/stats.js'
import {ensureTrainedModels, MODELS} from '../test/helpers/fixtures.js'

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const rounds = arg('rounds', 10)
const iterations = arg('iterations', 300)
const ort = await loadOrt()
const profile = getProfile('cpu-1t')
const t = ensureTrainedModels()

for (const [name, model, batch] of [['fashion_cnn b1', t.cnn, 1], ['fashion_mlp b32', t.mlp, 32], ['blazeface b1', MODELS.blazeface, 1]] as const) {
  const session = await createSession(model, profile)
  const meta = session.inputMetadata[0]!
  const dims = (meta as unknown as {shape: (number | string)[]}).shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? batch : 1))
  const feeds = {[meta.name]: new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.5), dims)}
  for (let i = 0; i < 20; i++) await session.run(feeds)
  const bare = async () => {
    const t0 = performance.now()
    for (let i = 0; i < iterations; i++) await session.run(feeds)
    return (performance.now() - t0) / iterations
  }
  // kiln's harness, on its own session of the same model and inputs of the same shape.
  const harness = async () => {
    const r = await benchmark(model, profile, {batch: [batch], iterations, warmup: 20, compressedSize: false, feeds: () => feeds})
    // Wall-clock time per run, as the bare loop measures it (the gaps between runs included).
    return (1000 * batch) / r.runs[0]!.throughput
  }
  const ratios: number[] = []
  let bareSum = 0
  let harnessSum = 0
  for (let r = 0; r < rounds; r++) {
    const [a, b] = r % 2 ? [await harness(), await bare()] : [await bare(), await harness()].reverse()
    harnessSum += a!
    bareSum += b!
    ratios.push(a! / b!)
  }
  await session.release()
  const ci = meanCi(ratios.map(Math.log))
  console.log(
    `${name.padEnd(16)} bare ${(bareSum / rounds).toFixed(4)} ms  harness ${(harnessSum / rounds).toFixed(4)} ms  overhead ${((Math.exp(ci.mean) - 1) * 100).toFixed(2)}% (95% CI ${((Math.exp(ci.low) - 1) * 100).toFixed(2)}% – ${((Math.exp(ci.high) - 1) * 100).toFixed(2)}%)`,
  )
}

// The harness's own cost per run, free of model noise: both loops drive a stand-in session whose
// run() resolves at once, so any difference is the harness's bookkeeping.
const noop = {run: async () => ({})} as unknown as Parameters<typeof measureLoop>[0]
const n = 200_000
const costs: number[] = []
for (let r = 0; r < 5; r++) {
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await noop.run({})
  const bare = (performance.now() - t0) / n
  const loop = await measureLoop(noop, {}, n, undefined, 1)
  costs.push((loop.wallMs / n - bare) * 1000)
}
costs.sort((a, b) => a - b)
console.log(`harness bookkeeping: ${costs[2]!.toFixed(3)} µs per run (median of 5 × ${n} runs); against the fastest model above that is the overhead bound`)
