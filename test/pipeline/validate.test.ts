import {realpath} from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {kiln} from '../helpers/cli.js'
import {customStageModule, project} from './loader-helpers.js'

// Runs the built CLI: `npm test` builds first; while developing run `npx tsc -p tsconfig.build.json`.

const VALID = `version: 1
name: demo
model: \${env:KILN_TEST_MODEL_ROOT}/model.onnx
datasets:
  calib: { path: ./data/calib.npz }
stages:
  - uses: convert
  - uses: publish
    with: { to: "./registry/{pipeline.name}/" }
`

describe('kiln validate', () => {
  it('prints the resolved pipeline as JSON, with interpolated values redacted', async () => {
    const dir = await realpath(await project({'package.json': '{}', 'kiln.yaml': VALID}))
    const r = await kiln(['validate', '--json'], {cwd: dir, env: {KILN_TEST_MODEL_ROOT: '/srv/private-models'}})
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json).toEqual({
      valid: true,
      file: path.join(dir, 'kiln.yaml'),
      name: 'demo',
      model: '***/model.onnx',
      target: 'cpu-2t',
      stages: [
        {id: 'convert', uses: 'convert'},
        {id: 'publish', uses: 'publish'},
      ],
      datasets: [{name: 'calib', path: path.join(dir, 'data/calib.npz')}],
      profiles: [],
    })
    expect(r.stdout).not.toContain('private-models')
  })

  it('says the file is valid in human mode', async () => {
    const dir = await project({'package.json': '{}', 'kiln.yaml': VALID})
    const r = await kiln(['validate', 'kiln.yaml'], {cwd: dir, env: {KILN_TEST_MODEL_ROOT: '/srv'}})
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stdout).toBe("kiln.yaml is valid: 'demo', 2 stage(s): convert → publish")
  })

  it('exits 2 under --json with every issue, each with file, line, col and suggestion', async () => {
    const dir = await project({'package.json': '{}', 'kiln.yaml': 'version: 1\nname: demo\nmodel: ./m.onnx\nstages:\n  - uses: publsh\n  - uses: convert\n    with: { opst: 17 }\n'})
    const r = await kiln(['validate', '--json'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.json.error.code).toBe('E_PIPELINE')
    expect(r.json.error.exitCode).toBe(2)
    expect(r.json.error.issues).toEqual([
      {file: 'kiln.yaml', line: 5, col: 11, message: expect.stringMatching(/^unknown stage kind `publsh`/), suggestion: 'did you mean `publish`?'},
      {file: 'kiln.yaml', line: 7, col: 13, message: expect.stringMatching(/^unknown key `opst` in stages\[1\]\.with/), suggestion: 'did you mean `opset`?'},
    ])
  })

  it('exits 2 with file:line:col lines on stderr in human mode', async () => {
    const dir = await project({'package.json': '{}', 'pipelines/kiln.yaml': 'version: 1\nname: demo\nmodel: ./m.onnx\nstages:\n  - uses: ./stage.mjs\n', 'pipelines/stage.mjs': "throw new Error('stage module exploded')\n"})
    const r = await kiln(['validate', 'pipelines/kiln.yaml'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^Error: pipelines\/kiln\.yaml:5:11: cannot load custom stage module \.\/stage\.mjs: stage module exploded/m)
  })

  it('checks a custom stage module through the CLI', async () => {
    const dir = await project({
      'package.json': '{}',
      'kiln.yaml': 'version: 1\nname: demo\nmodel: ./m.onnx\nstages:\n  - uses: ./stage.mjs\n    with: { factr: 2 }\n',
      'stage.mjs': customStageModule('z.strictObject({factor: z.number().default(1)})'),
    })
    const r = await kiln(['validate', '--json'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.json.error.issues).toEqual([expect.objectContaining({line: 6, col: 13, suggestion: 'did you mean `factor`?'})])
  })

  it('exits 2 when no pipeline file is found', async () => {
    const dir = await project({'package.json': '{}'})
    const r = await kiln(['validate', '--json'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.json.error.code).toBe('E_PIPELINE_NOT_FOUND')
    expect(r.json.error.try).toContain('kiln init')
  })
})
