import * as fs from 'node:fs'
import path from 'node:path'
import {execa} from 'execa'
import {beforeAll, describe, expect, it} from 'vitest'
import {BIN, kiln, ROOT} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'

/**
 * The runner end to end through the CLI, with custom stages (the same contract as built-ins) so each
 * behaviour is visible: what ran, what came from the cache, what the lock and reports say.
 */
const TMP = path.join(ROOT, 'test', '.tmp')

function workspace(name: string): string {
  fs.mkdirSync(TMP, {recursive: true})
  const dir = fs.mkdtempSync(path.join(TMP, `${name}-`))
  fs.copyFileSync(MODELS.blazeface, path.join(dir, 'model.onnx'))
  // A custom stage that copies its input and appends a marker, counting its runs in a file.
  fs.writeFileSync(
    path.join(dir, 'tag.mjs'),
    `import {z} from 'zod'
import * as fs from 'node:fs'
import path from 'node:path'
export default {
  kind: 'tag', version: '1', description: 'copy the input and append a tag',
  schema: z.strictObject({tag: z.string(), sleepMs: z.number().default(0), fail: z.boolean().default(false), score: z.number().optional(), companion: z.string().optional(), needCompanion: z.boolean().default(false)}),
  async run(ctx, input, params) {
    fs.appendFileSync(path.join(ctx.baseDir, 'runs.log'), ctx.id + '\\n')
    if (params.fail) throw new Error('tag stage failed on purpose')
    if (params.needCompanion && !fs.existsSync(path.join(path.dirname(input.path), 'weights.data'))) throw new Error('companion file missing')
    const end = Date.now() + params.sleepMs
    while (Date.now() < end) { if (ctx.signal.aborted) throw new Error('aborted'); await new Promise((r) => setTimeout(r, 20)) }
    const out = path.join(ctx.outDir, 'model.onnx')
    fs.copyFileSync(input.path, out)
    fs.appendFileSync(out, params.tag)
    if (params.companion) fs.writeFileSync(path.join(ctx.outDir, 'weights.data'), params.companion)
    const gates = params.score === undefined ? [] : [{name: 'score', value: params.score, limit: 0.5, passed: params.score >= 0.5, message: 'score must be at least 0.5'}]
    return {artifact: {path: out, format: 'bytes'}, metrics: {tag: params.tag}, gates}
  },
}
`,
  )
  return dir
}

function pipeline(dir: string, stages: string): string {
  const file = path.join(dir, 'kiln.yaml')
  fs.writeFileSync(file, `version: 1\nname: runner-test\nmodel: ./model.onnx\nstages:\n${stages}`)
  return file
}

const THREE = `  - {id: a, uses: ./tag.mjs, with: {tag: A}}
  - {id: b, uses: ./tag.mjs, with: {tag: B}}
  - {id: c, uses: ./tag.mjs, with: {tag: C}}
`

function runsLog(dir: string): string[] {
  const f = path.join(dir, 'runs.log')
  const lines = fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : []
  fs.rmSync(f, {force: true})
  return lines
}

describe('kiln run', () => {
  beforeAll(() => {
    fs.mkdirSync(TMP, {recursive: true})
  })

  it('runs every stage, then serves all of them from the cache, and reruns only what changed', async () => {
    const dir = workspace('cache')
    const file = pipeline(dir, THREE)
    const first = await kiln(['run', file, '--json'])
    expect(first.exitCode, first.stderr).toBe(0)
    expect(first.json.stages.map((s: {status: string}) => s.status)).toEqual(['ran', 'ran', 'ran'])
    expect(runsLog(dir)).toEqual(['a', 'b', 'c'])
    const out = fs.readFileSync(first.json.stages[2].artifact.path)
    expect(out.subarray(-3).toString()).toBe('ABC')
    for (const f of ['report.json', 'report.md', 'report.html', 'junit.xml']) expect(fs.existsSync(path.join(first.json.runDir, f))).toBe(true)
    const lock = JSON.parse(fs.readFileSync(path.join(dir, 'kiln.lock'), 'utf8'))
    expect(lock.stages.map((s: {id: string}) => s.id)).toEqual(['a', 'b', 'c'])
    expect(lock.stages[2].output.sha256).toBe(first.json.stages[2].artifact.sha256)

    const second = await kiln(['run', file, '--json'])
    expect(second.exitCode).toBe(0)
    expect(second.json.stages.map((s: {status: string}) => s.status)).toEqual(['cached', 'cached', 'cached'])
    expect(runsLog(dir)).toEqual([])
    expect(second.json.stages[2].artifact.sha256).toBe(first.json.stages[2].artifact.sha256)

    pipeline(dir, THREE.replace('tag: B', 'tag: X'))
    const third = await kiln(['run', file, '--json'])
    expect(third.json.stages.map((s: {status: string}) => s.status)).toEqual(['cached', 'ran', 'ran'])
    expect(runsLog(dir)).toEqual(['b', 'c'])
    expect(fs.readFileSync(third.json.stages[2].artifact.path).subarray(-3).toString()).toBe('AXC')
  })

  it('keeps the files a stage writes beside its artifact, and covers them in the digest', async () => {
    const dir = workspace('companion')
    const file = pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A, companion: one}}\n  - {id: b, uses: ./tag.mjs, with: {tag: B, needCompanion: true}}\n`)
    const one = await kiln(['run', file, '--json'])
    expect(one.exitCode, one.stderr).toBe(0)
    expect(fs.readFileSync(path.join(path.dirname(one.json.stages[0].artifact.path), 'weights.data'), 'utf8')).toBe('one')
    pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A, companion: two}}\n  - {id: b, uses: ./tag.mjs, with: {tag: B, needCompanion: true}}\n`)
    const two = await kiln(['run', file, '--json'])
    // Same model bytes, different companion: a different artifact digest, so b reruns.
    expect(two.json.stages[0].artifact.sha256).not.toBe(one.json.stages[0].artifact.sha256)
    expect(two.json.stages.map((s: {status: string}) => s.status)).toEqual(['ran', 'ran'])
    const cached = await kiln(['run', file, '--json'])
    expect(cached.json.stages.map((s: {status: string}) => s.status)).toEqual(['cached', 'cached'])
    expect(fs.readFileSync(path.join(path.dirname(cached.json.stages[0].artifact.path), 'weights.data'), 'utf8')).toBe('two')
  })

  it('honours --force, --from and --only', async () => {
    const dir = workspace('flags')
    const file = pipeline(dir, THREE)
    expect((await kiln(['run', file, '--json'])).exitCode).toBe(0)
    runsLog(dir)
    const forced = await kiln(['run', file, '--json', '--force'])
    expect(forced.json.stages.map((s: {status: string}) => s.status)).toEqual(['ran', 'ran', 'ran'])
    runsLog(dir)
    const from = await kiln(['run', file, '--json', '--from', 'b'])
    expect(from.json.stages.map((s: {status: string}) => s.status)).toEqual(['cached', 'ran', 'ran'])
    expect(runsLog(dir)).toEqual(['b', 'c'])
    const only = await kiln(['run', file, '--json', '--only', 'b'])
    expect(only.json.stages.map((s: {status: string}) => s.status)).toEqual(['cached', 'ran', 'skipped'])
    expect(runsLog(dir)).toEqual(['b'])
    const bad = await kiln(['run', file, '--json', '--from', 'nope'])
    expect(bad.exitCode).toBe(2)
    expect(bad.json.error.message).toContain('nope')
  })

  it('reports a failing stage with exit 1 and a failing gate with exit 3 and a junit failure', async () => {
    const dir = workspace('fail')
    const file = pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A}}\n  - {id: b, uses: ./tag.mjs, with: {tag: B, fail: true}}\n  - {id: c, uses: ./tag.mjs, with: {tag: C}}\n`)
    const failed = await kiln(['run', file, '--json'])
    expect(failed.exitCode).toBe(1)
    expect(failed.json.status).toBe('failed')
    expect(failed.json.stages.map((s: {status: string}) => s.status)).toEqual(['ran', 'failed', 'skipped'])
    expect(failed.json.stages[1].error.message).toContain('failed on purpose')
    expect(fs.readFileSync(path.join(failed.json.runDir, 'junit.xml'), 'utf8')).toMatch(/<failure message="tag stage failed on purpose"/)

    pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A, score: 0.25}}\n  - {id: publish, uses: ./tag.mjs, with: {tag: P}}\n`)
    runsLog(dir)
    const gate = await kiln(['run', file, '--json'])
    expect(gate.exitCode).toBe(3)
    expect(gate.json.status).toBe('gate-failed')
    // Nothing after a failed gate runs: a model that missed its gate is never published.
    expect(gate.json.stages.map((s: {status: string}) => s.status)).toEqual(['ran', 'skipped'])
    expect(runsLog(dir)).toEqual(['a'])
    expect(gate.json.gates).toEqual([expect.objectContaining({stage: 'a', name: 'score', value: 0.25, limit: 0.5, passed: false})])
    const junit = fs.readFileSync(path.join(gate.json.runDir, 'junit.xml'), 'utf8')
    expect(junit).toContain('failures="1"')
    expect(junit).toMatch(/<failure message="score: value 0.25, limit 0.5/)
    // A gate failure read from the cache still fails the run.
    const again = await kiln(['run', file, '--json'])
    expect(again.json.stages[0].status).toBe('cached')
    expect(again.exitCode).toBe(3)
  })

  it('fails clearly on a bad model, a bad stage module and an unwritable output directory', async () => {
    const dir = workspace('bad')
    const file = pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A}}\n`)
    fs.writeFileSync(path.join(dir, 'model.onnx'), fs.readFileSync(MODELS.blazeface).subarray(0, 5000))
    const truncated = await kiln(['run', file])
    expect(truncated.exitCode).toBe(1)
    expect(truncated.stderr).toMatch(/not a valid ONNX model/)

    fs.rmSync(path.join(dir, 'model.onnx'))
    fs.mkdirSync(path.join(dir, 'model.onnx'))
    const isDir = await kiln(['run', file])
    expect(isDir.exitCode).toBe(1)
    expect(isDir.stderr).toMatch(/directory/)
    fs.rmSync(path.join(dir, 'model.onnx'), {recursive: true})
    fs.copyFileSync(MODELS.blazeface, path.join(dir, 'model.onnx'))

    fs.writeFileSync(path.join(dir, 'nostage.mjs'), 'export const x = 1\n')
    fs.writeFileSync(path.join(dir, 'throws.mjs'), 'throw new Error("module exploded")\n')
    for (const [mod, pattern] of [['./nostage.mjs', /does not export a stage/], ['./throws.mjs', /module exploded/]] as const) {
      pipeline(dir, `  - {id: a, uses: ${mod}, with: {}}\n`)
      const r = await kiln(['run', file])
      expect(r.exitCode, r.stderr).toBe(2)
      expect(r.stderr).toMatch(pattern)
    }

    pipeline(dir, `  - {id: a, uses: ./tag.mjs, with: {tag: A}}\n`)
    const ro = path.join(dir, 'readonly')
    fs.writeFileSync(ro, 'a file where a directory must go')
    const unwritable = await kiln(['run', file, '--out', path.join(ro, 'run')])
    expect(unwritable.exitCode).toBe(2)
    expect(unwritable.stderr).toMatch(/cannot write the run directory/)
  })

  it('leaves nothing a later run would trust when interrupted mid-stage', async () => {
    const dir = workspace('sigint')
    const file = pipeline(dir, `  - {id: slow, uses: ./tag.mjs, with: {tag: S, sleepMs: 20000}}\n`)
    const child = execa(process.execPath, [BIN, 'run', file], {cwd: dir, reject: false, env: {CI: 'true'}})
    // Wait until the stage is running, then Ctrl-C.
    for (let i = 0; i < 200 && !fs.existsSync(path.join(dir, 'runs.log')); i++) await new Promise((r) => setTimeout(r, 50))
    child.kill('SIGINT')
    const r = await child
    expect(r.exitCode).not.toBe(0)
    expect(r.stderr).toMatch(/cancel|Interrupted/i)
    const cacheDir = path.join(dir, '.kiln', 'cache')
    const entries = fs.existsSync(cacheDir) ? fs.readdirSync(cacheDir).filter((e) => !e.endsWith('.json')) : []
    expect(entries).toEqual([])
    expect(fs.existsSync(path.join(dir, 'kiln.lock'))).toBe(false)
    runsLog(dir)
    pipeline(dir, `  - {id: slow, uses: ./tag.mjs, with: {tag: S}}\n`)
    const rerun = await kiln(['run', file, '--json'])
    expect(rerun.json.stages[0].status).toBe('ran')
  })
})
