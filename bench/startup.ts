/**
 * `kiln --help` start-up time (target < 0.5 s): the median wall time of several runs of
 * `node bin/run.js --help`, beside bare `node -e 0` measured in the same run, plus CPU time. Then a
 * check that start-up loads neither onnxruntime nor TF.js (nor sharp): a preload records every
 * CommonJS module in the process (those packages are CommonJS, even when imported from ESM) and a
 * positive control proves the check sees them when they are loaded.
 *
 *   npx tsc -p tsconfig.build.json && npx tsx bench/startup.ts [--runs 9]
 */
import {execFileSync, spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const argv = process.argv.slice(2)
const runs = Number(argv[argv.indexOf('--runs') + 1] || 0) || 9
const HEAVY = /node_modules[\\/](onnxruntime-node|onnxruntime-common|@tensorflow|sharp)[\\/]/

if (!fs.existsSync(path.join(ROOT, 'dist', 'commands'))) {
  console.error('build first: npx tsc -p tsconfig.build.json')
  process.exit(2)
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** Wall, user+sys seconds of one process, from /usr/bin/time. */
function measure(args: string[]): {wall: number; cpu: number} {
  const stats = path.join(os.tmpdir(), `kiln-startup-${process.pid}`)
  execFileSync('/usr/bin/time', ['-f', '%e %U %S', '-o', stats, process.execPath, ...args], {cwd: ROOT, stdio: 'ignore', env: {...process.env, CI: 'true'}})
  const [wall, user, sys] = fs.readFileSync(stats, 'utf8').trim().split(/\s+/).slice(-3).map(Number)
  fs.rmSync(stats, {force: true})
  return {wall: wall!, cpu: user! + sys!}
}

function series(args: string[]): {wall: number; cpu: number} {
  measure(args) // warm the file cache
  const samples = Array.from({length: runs}, () => measure(args))
  return {wall: median(samples.map((s) => s.wall)), cpu: median(samples.map((s) => s.cpu))}
}

const node = series(['-e', '0'])
const help = series(['bin/run.js', '--help'])
const version = series(['bin/run.js', '--version'])
console.log(`node -e 0:        median wall ${node.wall.toFixed(3)} s, cpu ${node.cpu.toFixed(3)} s (${runs} runs)`)
console.log(`kiln --help:      median wall ${help.wall.toFixed(3)} s, cpu ${help.cpu.toFixed(3)} s — target < 0.5 s: ${help.wall < 0.5 ? 'met' : 'MISSED'}`)
console.log(`kiln --version:   median wall ${version.wall.toFixed(3)} s, cpu ${version.cpu.toFixed(3)} s`)
console.log(`kiln --help above bare node: ${(help.wall - node.wall).toFixed(3)} s wall, ${(help.cpu / node.cpu).toFixed(1)}× the cpu`)

// Which heavy modules a process loaded.
const hook = path.join(os.tmpdir(), `kiln-startup-hook-${process.pid}.mjs`)
fs.writeFileSync(
  hook,
  `import {createRequire} from 'node:module'
import {writeSync} from 'node:fs'
const require = createRequire(import.meta.url)
process.on('exit', () => {
  const heavy = Object.keys(require.cache).filter((p) => ${HEAVY}.test(p)).map((p) => p.replace(/.*node_modules[\\\\/]/, ''))
  writeSync(2, '\\nKILN_HEAVY=' + JSON.stringify([...new Set(heavy.map((p) => p.split(/[\\\\/]/).slice(0, p.startsWith('@') ? 2 : 1).join('/')))]) + '\\n')
})
`,
)
function heavyModules(args: string[]): string[] {
  const r = spawnSync(process.execPath, ['--import', hook, ...args], {cwd: ROOT, encoding: 'utf8', env: {...process.env, CI: 'true'}})
  const line = r.stderr.split('\n').find((l) => l.startsWith('KILN_HEAVY='))
  if (!line) throw new Error(`no module report from ${args.join(' ')}: ${r.stderr.slice(-500)}`)
  return JSON.parse(line.slice('KILN_HEAVY='.length)) as string[]
}
try {
  const control = heavyModules(['--input-type=module', '-e', "await import('onnxruntime-node'); await import('@tensorflow/tfjs')"])
  console.log(`positive control (imports onnxruntime-node and @tensorflow/tfjs): sees ${JSON.stringify(control)}`)
  if (!control.includes('onnxruntime-node') || !control.some((m) => m.startsWith('@tensorflow/'))) throw new Error('the module check cannot see onnxruntime/TF.js: its result would mean nothing')
  for (const args of [['bin/run.js', '--help'], ['bin/run.js', 'inspect', '--help'], ['bin/run.js', '--version']]) {
    const loaded = heavyModules(args)
    console.log(`kiln ${args.slice(1).join(' ')}: heavy modules loaded ${JSON.stringify(loaded)} ${loaded.length === 0 ? '(none: ok)' : '(NOT OK)'}`)
  }
} finally {
  fs.rmSync(hook, {force: true})
}
