import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {PipelineFileError} from '../../src/errors.js'
import {loadPipeline} from '../../src/pipeline/loader.js'
import {brief, customStageModule, issuesOf, project} from './loader-helpers.js'

const HEAD = 'version: 1\nname: demo\nmodel: ./model.onnx\n'

describe('pipeline file errors: file:line:col, what was expected, did-you-mean', () => {
  it('reports a YAML syntax error at its position and stops there', async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: publish\n    with: { to: [ ./out ]\n  - uses: convert\n`)
    expect(issues).toHaveLength(1)
    expect(issues[0].file).toBe('kiln.yaml')
    expect(issues[0].message).toMatch(/^YAML syntax error: flow map .* must be sufficiently indented and end with a \}/)
    expect([issues[0].line, issues[0].col]).toEqual([7, 3])
    expect(issues[0].suggestion).toContain('indentation')
  })

  it('reports a duplicate mapping key as a syntax error', async () => {
    const issues = await issuesOf(`${HEAD}name: again\nstages:\n  - uses: publish\n    with: { to: ./out }\n`)
    expect(issues.map(brief)).toEqual(['4:1 YAML syntax error: map keys must be unique (remove or rename one of the duplicate keys)'])
  })

  it('reports an empty file', async () => {
    const issues = await issuesOf('# nothing yet\n')
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^1:1 expected a mapping with `version`, `name`, `model` and `stages`, got an empty file/)])
  })

  it('reports unknown keys at the key, with the closest known key, at top level and in datasets and profiles', async () => {
    const issues = await issuesOf(
      `${HEAD}profiles:\n  edge: { threads: 1, provders: [cpu] }\ndatasets:\n  calib: { path: ./c.npz, limt: 8, preprocess: { layuot: NCHW } }\nstagse:\n  - uses: publish\n`,
    )
    expect(issues.map(brief)).toEqual([
      '1:1 missing required field `stages` in (top level) (expected a list)',
      expect.stringMatching(/^5:23 unknown key `provders` in profiles\.edge; expected one of: `threads`, .*`providers`.* \(did you mean `providers`\?\)$/),
      expect.stringMatching(/^7:27 unknown key `limt` in datasets\.calib; expected one of: .*`limit`.* \(did you mean `limit`\?\)$/),
      expect.stringMatching(/^7:50 unknown key `layuot` in datasets\.calib\.preprocess; .*\(did you mean `layout`\?\)$/),
      expect.stringMatching(/^8:1 unknown key `stagse` in \(top level\); .*\(did you mean `stages`\?\)$/),
    ])
  })

  it('reports wrong types and values with what was expected', async () => {
    const issues = await issuesOf(
      'version: 2\nname: demo\nmodel: 42\nprofiles:\n  edge: { threads: two, batch: 8, graphOptimizationLevel: al }\ndatasets:\n  d: { path: ./d.npz, limit: 0 }\nstages:\n  - uses: publish\n    with: { to: ./out }\n',
    )
    expect(issues.map(brief)).toEqual([
      '1:10 version: expected 1, got an integer',
      '3:8 model: expected a string, got an integer',
      '5:20 profiles.edge.threads: expected a number, got a string',
      '5:32 profiles.edge.batch: expected a list, got an integer',
      "5:59 profiles.edge.graphOptimizationLevel: expected one of `disabled`, `basic`, `extended`, `all`, got `al` (did you mean `all`?)",
      '7:30 datasets.d.limit: expected number to be >=1',
    ])
  })

  it('points at options nothing would read: a seed without shuffle, a quantize option its mode ignores', async () => {
    const issues = await issuesOf(
      `${HEAD}profiles:\n  edge: { iterations: 10, durationMs: 500, interOpThreads: 2 }\ndatasets:\n  calib: { path: ./c.npz, seed: 3 }\nstages:\n  - uses: quantize\n    with: { mode: dynamic, blockSize: 64 }\n  - uses: publish\n    with: { to: ./out }\n`,
    )
    expect(issues.map(brief)).toEqual([
      expect.stringMatching(/^5:\d+ profiles\.edge\.durationMs: give `iterations` or `durationMs`, not both/),
      expect.stringMatching(/^5:\d+ profiles\.edge\.interOpThreads: `interOpThreads` is used with `executionMode: parallel` only/),
      '7:33 datasets.calib.seed: `seed` applies with `shuffle: true`',
      expect.stringMatching(/^10:39 stages\[0\]\.with\.blockSize: `blockSize` applies to int4 mode only: mode dynamic would ignore it/),
    ])
  })

  it('explains names, list items and alternatives precisely', async () => {
    const issues = await issuesOf(
      'version: 1\nname: "my pipeline"\nmodel: ./m.onnx\ndatasets:\n  "my data": { path: ./x.npz }\n  ok: { path: ./x.npz, preprocess: { resize: big, mean: [0.5, x] } }\nstages:\n  - convert\n  - uses: publish\n    with: 5\n  - uses: convert\n    id: "bad id"\n    with:\n',
    )
    expect(issues.map(brief)).toEqual([
      '2:7 name: expected letters, digits, `.`, `_` and `-`, starting with a letter or digit',
      '5:3 datasets: invalid name `my data`: expected letters, digits, `.`, `_` and `-`, starting with a letter or digit',
      '6:46 datasets.ok.preprocess.resize: expected a number or a list, got a string',
      '6:63 datasets.ok.preprocess.mean[1]: expected a number, got a string',
      '8:5 stages[0]: expected a mapping, got a string',
      '10:11 stages[1].with: expected a mapping, got an integer',
      '12:9 stages[2].id: expected letters, digits, `.`, `_` and `-`, starting with a letter or digit',
    ])
  })

  it('reports a missing required field at the enclosing mapping', async () => {
    const issues = await issuesOf('version: 1\nname: demo\nstages:\n  - with: { to: ./out }\n')
    expect(issues.map(brief)).toEqual([
      '1:1 missing required field `model` in (top level) (expected a string)',
      '4:5 missing required field `uses` in stages[0] (expected a string)',
    ])
  })

  it('reports an unknown stage kind with the closest built-in kind', async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: publsh\n    with: { to: ./out }\n`)
    expect(issues).toHaveLength(1)
    expect(brief(issues[0])).toMatch(/^5:11 unknown stage kind `publsh`; expected a built-in kind \(.*publish.*\) or a module path like \.\/my-stage\.js \(did you mean `publish`\?\)$/)
  })

  it("checks a built-in stage's `with` with the stage's own schema", async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: convert\n    with: { to: onnx, opst: 17 }\n  - uses: encrypt\n    with:\n      kee: ./data.key\n`)
    expect(issues.map(brief)).toEqual([
      expect.stringMatching(/^6:23 unknown key `opst` in stages\[0\]\.with; expected one of: .*`opset`.* \(did you mean `opset`\?\)$/),
      '9:7 missing required field `key` in stages[1].with (expected a string)',
      expect.stringMatching(/^9:7 unknown key `kee` in stages\[1\]\.with; expected one of: `key`.* \(did you mean `key`\?\)$/),
    ])
  })

  it('reports references to undeclared datasets and profiles wherever they are nested in `with`', async () => {
    const schema = 'z.strictObject({calibration: z.object({dataset: z.string()}).optional(), dataset: z.string().optional(), benchmark: z.object({profile: z.string()}).optional()})'
    const issues = await issuesOf(
      `${HEAD}target: cpu-3x\nprofiles:\n  edge-1t: { threads: 1 }\ndatasets:\n  calib: { path: ./c.npz }\n  test: { path: ./t.npz }\nstages:\n  - uses: ./step.mjs\n    with: { calibration: { dataset: calb }, dataset: test }\n  - uses: ./step.mjs\n    id: second\n    with: { dataset: train, benchmark: { profile: edge-lt } }\n`,
      {extra: {'step.mjs': customStageModule(schema)}},
    )
    expect(issues.map(brief)).toEqual([
      "4:9 unknown profile `cpu-3x`; declared profiles: `cpu-1t`, `cpu-2t`, `cpu-all`, `edge-1t` (did you mean `cpu-1t`?)",
      '12:37 unknown dataset `calb`; declared datasets: `calib`, `test` (did you mean `calib`?)',
      '15:22 unknown dataset `train`; declared datasets: `calib`, `test` (declare it under `datasets:`)',
      "15:51 unknown profile `edge-lt`; declared profiles: `cpu-1t`, `cpu-2t`, `cpu-all`, `edge-1t` (did you mean `edge-1t`?)",
    ])
  })

  it('accepts `baseline` naming the input, an earlier stage or a file, and rejects anything else', async () => {
    const schema = 'z.strictObject({baseline: z.string()})'
    const issues = await issuesOf(
      `${HEAD}stages:\n  - uses: ./step.mjs\n    id: a\n    with: { baseline: input }\n  - uses: ./step.mjs\n    id: b\n    with: { baseline: a }\n  - uses: ./step.mjs\n    id: c\n    with: { baseline: ./models/ref.onnx }\n  - uses: ./step.mjs\n    id: d\n    with: { baseline: e }\n  - uses: ./step.mjs\n    id: e\n    with: { baseline: inptu }\n`,
      {extra: {'step.mjs': customStageModule(schema)}},
    )
    expect(issues.map(brief)).toEqual([
      "16:23 `baseline: e` names no earlier stage; expected `input` (the pipeline's model), the id of an earlier stage (`a`, `b`, `c`) or a model path",
      "19:23 `baseline: inptu` names no earlier stage; expected `input` (the pipeline's model), the id of an earlier stage (`a`, `b`, `c`, `d`) or a model path (did you mean `input`?)",
    ])
  })

  it('reports duplicate stage ids, defaulted from the kind or explicit', async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: publish\n    with: { to: ./a }\n  - uses: publish\n    with: { to: ./b }\n  - uses: convert\n    id: publish\n`)
    expect(issues.map(brief)).toEqual([
      '7:11 duplicate stage id `publish` (the stage at line 5 has it too) (give this stage a unique `id:`, e.g. `publish-2`)',
      '10:9 duplicate stage id `publish` (the stage at line 5 has it too) (give this stage a unique `id:`, e.g. `publish-3`)',
    ])
  })

  it('reports a custom stage module that throws on import, with its path (exit 2)', async () => {
    const dir = await project({
      'kiln.yaml': `${HEAD}stages:\n  - uses: ./stages/broken.mjs\n`,
      'stages/broken.mjs': "throw new Error('cannot initialise the frobnicator')\n",
    })
    const error = await loadPipeline(path.join(dir, 'kiln.yaml'), {cwd: dir, env: {}}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(PipelineFileError)
    const {issues, exitCode} = error as PipelineFileError
    expect(exitCode).toBe(2)
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^5:11 cannot load custom stage module \.\/stages\/broken\.mjs: cannot initialise the frobnicator/)])
    expect(issues[0].message).toContain(`(module ${path.join(dir, 'stages', 'broken.mjs')})`)
  })

  it('reports a custom stage module that does not export a stage', async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: ./not-a-stage.mjs\n`, {extra: {'not-a-stage.mjs': 'export default {hello: 1}\n'}})
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^5:11 custom stage module \.\/not-a-stage\.mjs does not export a stage \(missing kind, version, schema, run\)/)])
  })

  it("checks a custom stage's `with` with its own schema", async () => {
    const issues = await issuesOf(`${HEAD}stages:\n  - uses: ./step.mjs\n    with: { threshold: 0.5, windw: 3 }\n`, {
      extra: {'step.mjs': customStageModule('z.strictObject({threshold: z.number(), window: z.number().int().default(5)})')},
    })
    expect(issues.map(brief)).toEqual(["6:29 unknown key `windw` in stages[0].with; expected one of: `threshold`, `window` (did you mean `window`?)"])
  })

  it('reports every problem at once, in file order', async () => {
    const issues = await issuesOf(`version: 1\nname: demo\nmodel: ./m.onnx\ntarget: nowhere\nstages:\n  - uses: publsh\n  - uses: publish\n    with: { to: ./out, retries: 3 }\n  - uses: publish\n    with:\n      to: ./x/\${env:MISSING_DIR}\n`)
    expect(issues.map((i) => `${i.line}:${i.col}`)).toEqual(['4:9', '6:11', '8:24', '9:11', '11:11'])
    expect(issues[4].message).toBe('environment variable MISSING_DIR is not set (referenced as `${env:MISSING_DIR}`)')
  })
})
