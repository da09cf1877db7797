import {mkdir, realpath} from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {KilnError, PipelineFileError, UsageError} from '../../src/errors.js'
import {interpolateEnv, isSecretRef, resolveSecretRef} from '../../src/pipeline/interpolate.js'
import {findPipelineFile, loadPipeline} from '../../src/pipeline/loader.js'
import {redact} from '../../src/util/redact.js'
import {brief, customStageModule, issuesOf, project} from './loader-helpers.js'

const FULL = `# yaml-language-server: $schema=./schema.json
version: 1
name: fashion-cnn
model: ./models/fashion_cnn.onnx
profiles:
  edge-1t: { threads: 1, batch: [1, 8] }
datasets:
  calib: { path: ./data/calib.npz, inputs: { input: images }, limit: 256 }
  test:  { path: data/test.npz, labels: labels, preprocess: { scale: 0.5, layout: NCHW } }
stages:
  - uses: convert
    with: { opset: 17 }
  - uses: ./stages/step.mjs
    id: tune
    with:
      dataset: calib
      benchmark: { profile: edge-1t }
  - uses: publish
    with: { to: "./registry/{pipeline.name}/" }
`

describe('loadPipeline: a valid file', () => {
  it('resolves paths, fills defaults, loads stages and parses their parameters', async () => {
    const dir = await realpath(await project({
      'kiln.yaml': FULL,
      'stages/step.mjs': customStageModule('z.strictObject({dataset: z.string(), benchmark: z.object({profile: z.string()}), rounds: z.number().default(3)})', 'tuner'),
    }))
    const p = await loadPipeline('kiln.yaml', {cwd: dir, env: {}})
    expect(p.file).toBe(path.join(dir, 'kiln.yaml'))
    expect(p.baseDir).toBe(dir)
    expect(p.version).toBe(1)
    expect(p.name).toBe('fashion-cnn')
    expect(p.model).toBe(path.join(dir, 'models/fashion_cnn.onnx'))
    expect(p.target).toBe('cpu-2t')
    expect(p.profiles['edge-1t']).toMatchObject({name: 'edge-1t', threads: 1, batch: [1, 8], providers: ['cpu']})
    expect(p.datasets.calib).toEqual({name: 'calib', path: path.join(dir, 'data/calib.npz'), inputs: {input: 'images'}, limit: 256})
    expect(p.datasets.test.path).toBe(path.join(dir, 'data/test.npz'))
    expect(p.datasets.test.preprocess).toEqual({scale: 0.5, layout: 'NCHW'})
    expect(p.stages.map((s) => [s.id, s.uses, s.stage.kind])).toEqual([
      ['convert', 'convert', 'convert'],
      ['tune', './stages/step.mjs', 'tuner'],
      ['publish', 'publish', 'publish'],
    ])
    // Parameters come out of each stage's schema, defaults applied.
    expect(p.stages[0].params).toMatchObject({to: 'onnx', opset: 17})
    expect(p.stages[1].params).toEqual({dataset: 'calib', benchmark: {profile: 'edge-1t'}, rounds: 3})
    expect(p.stages[2].with).toEqual({to: './registry/{pipeline.name}/'})
    expect(p.positionOf(['stages', 1, 'with', 'benchmark', 'profile'])).toEqual({line: 17, col: 29})
    expect(p.positionOf(['datasets', 'test', 'preprocess', 'layout'])).toEqual({line: 9, col: 83})
    // A path that does not exist points at the nearest enclosing value.
    expect(p.positionOf(['stages', 0, 'with', 'irVersion'])).toEqual({line: 12, col: 11})
  })

  it('keeps a model URI as written and names the default stage id after a custom stage kind', async () => {
    const dir = await project({
      'kiln.yaml': 'version: 1\nname: remote\nmodel: s3://models/fashion/model.onnx\ntarget: edge\nprofiles: { edge: { threads: 1 } }\nstages:\n  - uses: ./step.mjs\n',
      'step.mjs': customStageModule('z.strictObject({})', 'my-kind'),
    })
    const p = await loadPipeline(path.join(dir, 'kiln.yaml'), {env: {}})
    expect(p.model).toBe('s3://models/fashion/model.onnx')
    expect(p.target).toBe('edge')
    expect(p.stages[0].id).toBe('my-kind')
  })
})

describe('environment interpolation', () => {
  it('replaces ${env:NAME} in strings, registers the values as secrets and leaves whole env:NAME refs alone', async () => {
    const token = `tok-${process.pid}-${Date.now()}`
    const dir = await project({
      'kiln.yaml': `version: 1\nname: demo\nmodel: \${env:MODEL_DIR}/m.onnx\nstages:\n  - uses: publish\n    with:\n      to: "oip+http://127.0.0.1:8000/?token=\${env:SERVE_TOKEN}&literal=$\${env:NOT_A_REF}"\n  - uses: ./step.mjs\n    with: { key: env:KILN_MODEL_KEY }\n`,
      'step.mjs': customStageModule('z.strictObject({key: z.string()})', 'encryptish'),
    })
    const p = await loadPipeline(path.join(dir, 'kiln.yaml'), {env: {MODEL_DIR: '/opt/models', SERVE_TOKEN: token}})
    expect(p.model).toBe('/opt/models/m.onnx')
    expect(p.stages[0].with.to).toBe(`oip+http://127.0.0.1:8000/?token=${token}&literal=\${env:NOT_A_REF}`)
    expect(redact(`sent ${token}`)).toBe('sent ***')
    // Whole-value refs name a secret the stage resolves itself, when it needs it.
    expect(p.stages[1].with.key).toBe('env:KILN_MODEL_KEY')
    expect(p.stages[1].params).toEqual({key: 'env:KILN_MODEL_KEY'})
  })

  it('reports a missing variable and a malformed placeholder at their values', async () => {
    const issues = await issuesOf('version: 1\nname: demo\nmodel: ./m.onnx\nstages:\n  - uses: publish\n    with:\n      to: ./out/${env:RELEASE_CHANNEL}/${HOME}\n')
    expect(issues.map(brief)).toEqual([
      '7:11 environment variable RELEASE_CHANNEL is not set (referenced as `${env:RELEASE_CHANNEL}`) (set it, e.g. `export RELEASE_CHANNEL=...`, before running kiln)',
      '7:11 invalid placeholder `${HOME}`: expected `${env:NAME}` with NAME made of letters, digits and `_` (write `$${` for a literal `${`)',
    ])
  })

  it('never quotes an interpolated value in an error', async () => {
    const secret = `profile-${process.pid}-${Date.now()}`
    const issues = await issuesOf('version: 1\nname: demo\nmodel: ./m.onnx\ntarget: ${env:KILN_TEST_TARGET}\nstages:\n  - uses: publish\n    with: { to: ./out }\n', {env: {KILN_TEST_TARGET: secret}})
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^4:9 unknown profile `\*\*\*`; declared profiles: /)])
    expect(JSON.stringify(issues)).not.toContain(secret)
  })

  it('interpolates nested values and reports paths', () => {
    const r = interpolateEnv({a: ['x-${env:A}', {b: '${env:B}'}], c: 3}, {A: 'one'})
    expect(r.value).toEqual({a: ['x-one', {b: '${env:B}'}], c: 3})
    expect(r.issues.map((i) => i.path)).toEqual([['a', 1, 'b']])
    expect(isSecretRef('env:KILN_MODEL_KEY')).toBe(true)
    expect(isSecretRef('./keys/data.key')).toBe(false)
  })
})

describe('resolveSecretRef', () => {
  it('resolves env:NAME to the value and registers it for redaction', () => {
    const value = `k-${process.pid}-${Math.random()}`
    expect(resolveSecretRef('env:KILN_TEST_KEY', '/tmp', {env: {KILN_TEST_KEY: value}})).toBe(value)
    expect(resolveSecretRef('${env:KILN_TEST_KEY}', '/tmp', {env: {KILN_TEST_KEY: value}})).toBe(value)
    expect(redact(`key=${value}`)).toBe('key=***')
  })

  it('returns paths and literals as written, for the stage to read', () => {
    expect(resolveSecretRef('./keys/signing.key', '/tmp', {env: {}})).toBe('./keys/signing.key')
  })

  it('names the variable and the stage when the variable is missing, and never a value', () => {
    let error: unknown
    try {
      resolveSecretRef('env:KILN_MODEL_KEY', '/tmp', {stage: 'encrypt', env: {OTHER: 'x'}})
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(KilnError)
    expect((error as KilnError).message).toBe("secret env:KILN_MODEL_KEY (stage 'encrypt'): environment variable KILN_MODEL_KEY is not set")
    expect((error as KilnError).exitCode).toBe(2)
    expect((error as KilnError).tryMessage).toContain('KILN_MODEL_KEY')
    expect(() => resolveSecretRef('env:9BAD', '/tmp', {env: {}})).toThrow(UsageError)
  })
})

describe('finding the pipeline file (cosmiconfig)', () => {
  const minimal = 'version: 1\nname: found\nmodel: ./m.onnx\nstages:\n  - uses: publish\n    with: { to: ./out }\n'

  it('searches from the working directory upward to the project root', async () => {
    const root = await realpath(await project({'package.json': '{}', 'kiln.yaml': minimal}))
    const deep = path.join(root, 'a', 'b')
    await mkdir(deep, {recursive: true})
    expect(await findPipelineFile(deep)).toBe(path.join(root, 'kiln.yaml'))
    const p = await loadPipeline(undefined, {cwd: deep, env: {}})
    expect(p.name).toBe('found')
    expect(p.baseDir).toBe(root)
  })

  it('prefers kiln.yaml, then kiln.yml and the .kilnrc forms, in each directory', async () => {
    const dir = await realpath(await project({'package.json': '{}', '.kilnrc.yml': minimal, 'kiln.yml': minimal}))
    expect(await findPipelineFile(dir)).toBe(path.join(dir, 'kiln.yml'))
    const rc = await realpath(await project({'package.json': '{}', '.kilnrc': minimal}))
    expect(await findPipelineFile(rc)).toBe(path.join(rc, '.kilnrc'))
  })

  it('does not look above the project root', async () => {
    const outer = await project({'kiln.yaml': minimal, 'inner/package.json': '{}'})
    expect(await findPipelineFile(path.join(outer, 'inner'))).toBeUndefined()
    const error = await loadPipeline(undefined, {cwd: path.join(outer, 'inner')}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(UsageError)
    expect((error as UsageError).code).toBe('E_PIPELINE_NOT_FOUND')
    expect((error as UsageError).tryMessage).toContain('kiln init')
  })

  it('reads .kilnrc.json with positions', async () => {
    const dir = await project({
      'package.json': '{}',
      '.kilnrc.json': '{\n  "version": 1,\n  "name": "json",\n  "model": "./m.onnx",\n  "stages": [\n    {"uses": "publish", "with": {"to": "./out", "tp": 1}}\n  ]\n}\n',
    })
    const error = await loadPipeline(undefined, {cwd: dir, env: {}}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(PipelineFileError)
    expect((error as PipelineFileError).issues.map(brief)).toEqual([expect.stringMatching(/^6:49 unknown key `tp` in stages\[0\]\.with; expected one of: `to`.* \(did you mean `to`\?\)$/)])
    expect((error as PipelineFileError).issues[0].file).toBe('.kilnrc.json')
  })

  it('accepts a directory as the file argument', async () => {
    const dir = await realpath(await project({'package.json': '{}', 'pipelines/a/kiln.yaml': minimal}))
    const p = await loadPipeline('pipelines/a', {cwd: dir, env: {}})
    expect(p.file).toBe(path.join(dir, 'pipelines/a/kiln.yaml'))
  })
})
