/**
 * Runner overhead: a rerun with nothing changed must report every stage `cached` in under a second
 * for a small model. Measures the in-process `runPipeline` time and the whole `kiln run` process
 * (start-up included), for a first run and a cached rerun, on the real BlazeFace model.
 *
 *   npx tsx bench/runner.ts
 */
import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {loadPipeline} from '../src/pipeline/loader.js'
import {runPipeline} from '../src/pipeline/runner.js'
import {MODELS} from '../test/helpers/fixtures.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-runner-'))
fs.copyFileSync(MODELS.blazeface, path.join(dir, 'model.onnx'))
fs.writeFileSync(
  path.join(dir, 'kiln.yaml'),
  `version: 1
name: bench-runner
model: ./model.onnx
stages:
  - uses: convert
    with: { to: onnx, opset: 17 }
  - uses: publish
    with: { to: ["./registry/{pipeline.name}/{run.id}/"] }
`,
)
const quiet = {info: () => {}, warn: () => {}, debug: () => {}}
async function once(): Promise<{seconds: number; statuses: string}> {
  const p = await loadPipeline(path.join(dir, 'kiln.yaml'))
  const t0 = performance.now()
  const r = await runPipeline(p, {kilnVersion: 'bench', log: quiet})
  return {seconds: (performance.now() - t0) / 1000, statuses: r.stages.map((s) => s.status).join(',')}
}
const first = await once()
const reruns = []
for (let i = 0; i < 5; i++) reruns.push(await once())
const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const cli: number[] = []
for (let i = 0; i < 5; i++) {
  const t0 = performance.now()
  execFileSync(process.execPath, ['bin/run.js', 'run', path.join(dir, 'kiln.yaml')], {stdio: 'ignore', env: {...process.env, CI: 'true'}})
  cli.push((performance.now() - t0) / 1000)
}
console.log(`first run (in-process):        ${first.seconds.toFixed(3)} s  [${first.statuses}]`)
console.log(`cached rerun (in-process, p50): ${median(reruns.map((r) => r.seconds)).toFixed(3)} s  [${reruns.at(-1)!.statuses}]`)
console.log(`cached rerun (kiln run process, p50, start-up included): ${median(cli).toFixed(3)} s`)
console.log(`rerun / first ratio: ${(median(reruns.map((r) => r.seconds)) / first.seconds).toFixed(3)}`)
fs.rmSync(dir, {recursive: true, force: true})
