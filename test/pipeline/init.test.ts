import {existsSync} from 'node:fs'
import {readFile, realpath, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {parse} from 'yaml'
import {builtinKinds} from '../../src/stages/registry.js'
import {kiln, ROOT} from '../helpers/cli.js'
import {MODELS} from '../helpers/fixtures.js'
import {project} from './loader-helpers.js'

// Runs the built CLI: `npm test` builds first; while developing run `npx tsc -p tsconfig.build.json`.

const TEMPLATES = ['basic', 'quantize', 'full']

async function workspace(): Promise<string> {
  return realpath(await project({'package.json': '{}'}))
}

describe('kiln init', () => {
  it('writes a basic pipeline for a real model that validates and runs', async () => {
    const dir = await workspace()
    const r = await kiln(['init', '--dir', 'pipeline', '--model', MODELS.blazeface, '--json'], {cwd: dir})
    expect(r.exitCode, r.stderr).toBe(0)
    const file = path.join(dir, 'pipeline', 'kiln.yaml')
    expect(r.json).toMatchObject({template: 'basic', dir: path.join(dir, 'pipeline'), files: [file], modelFound: true})
    const text = await readFile(file, 'utf8')
    // The editor header points at this installation's schema, relative to the new file.
    const header = /^# yaml-language-server: \$schema=(.+)$/m.exec(text)?.[1]
    expect(header).toBeDefined()
    expect(path.resolve(path.dirname(file), header!)).toBe(path.join(ROOT, 'schemas', 'pipeline.schema.json'))
    const doc = parse(text) as {name: string; model: string}
    expect(doc.name).toBe('blazeface_front_128')
    expect(path.resolve(path.dirname(file), doc.model)).toBe(MODELS.blazeface)

    const valid = await kiln(['validate', 'pipeline', '--json'], {cwd: dir})
    expect(valid.exitCode, valid.stderr).toBe(0)
    expect(valid.json.stages).toEqual([
      {id: 'convert', uses: 'convert'},
      {id: 'publish', uses: 'publish'},
    ])

    const run = await kiln(['run', '--json'], {cwd: path.join(dir, 'pipeline')})
    // The run itself is the runner's; what matters here is that the template's stages all ran.
    const stages = (run.json?.stages ?? []) as {id: string; status: string}[]
    expect(stages.map((s) => [s.id, s.status]), run.stderr).toEqual([
      ['convert', 'ran'],
      ['publish', 'ran'],
    ])
    expect(existsSync(path.join(dir, 'pipeline', 'registry', 'blazeface_front_128'))).toBe(true)
  })

  it('writes a quantize pipeline that runs on a real model', async () => {
    const dir = await workspace()
    const r = await kiln(['init', '--template', 'quantize', '--model', MODELS.blazeface], {cwd: dir})
    expect(r.exitCode, r.stderr).toBe(0)
    const run = await kiln(['run', '--json'], {cwd: dir})
    const stages = (run.json?.stages ?? []) as {id: string; status: string}[]
    expect(stages.map((s) => [s.id, s.status]), run.stderr).toEqual([
      ['convert', 'ran'],
      ['quantize', 'ran'],
      ['publish', 'ran'],
    ])
    expect(run.exitCode).toBe(0)
  })

  it('never overwrites an existing file without --force', async () => {
    const dir = await workspace()
    await writeFile(path.join(dir, 'kiln.yaml'), '# my own pipeline\n')
    const refused = await kiln(['init', '--json'], {cwd: dir})
    expect(refused.exitCode).toBe(2)
    expect(refused.json.error.code).toBe('E_EXISTS')
    expect(refused.json.error.try).toContain('--force')
    expect(await readFile(path.join(dir, 'kiln.yaml'), 'utf8')).toBe('# my own pipeline\n')

    const forced = await kiln(['init', '--force', '--template', 'quantize', '--json'], {cwd: dir})
    expect(forced.exitCode, forced.stderr).toBe(0)
    expect(await readFile(path.join(dir, 'kiln.yaml'), 'utf8')).toContain('uses: quantize')
  })

  it('refuses to shadow another pipeline file in the directory', async () => {
    const dir = await workspace()
    await writeFile(path.join(dir, '.kilnrc.yml'), '# an existing pipeline\n')
    const r = await kiln(['init', '--json'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.json.error.message).toBe('.kilnrc.yml already exists; nothing was written')
    expect(existsSync(path.join(dir, 'kiln.yaml'))).toBe(false)
  })

  it('rejects an unknown template with a suggestion', async () => {
    const dir = await workspace()
    const r = await kiln(['init', '--template', 'quantise', '--json'], {cwd: dir})
    expect(r.exitCode).toBe(2)
    expect(r.json.error.code).toBe('E_TEMPLATE')
    expect(r.json.error.try).toContain('did you mean `quantize`?')
    expect(existsSync(path.join(dir, 'kiln.yaml'))).toBe(false)
  })

  it.each(TEMPLATES)('writes the %s template, which validates for every stage kind registered', async (template) => {
    const dir = await workspace()
    const r = await kiln(['init', '--template', template, '--model', 'models/model.onnx', '--json'], {cwd: dir})
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.json).toMatchObject({model: './models/model.onnx', modelFound: false})
    const text = await readFile(path.join(dir, 'kiln.yaml'), 'utf8')
    const kinds = (parse(text) as {stages: {uses: string}[]}).stages.map((s) => s.uses)
    const missing = kinds.filter((k) => !builtinKinds().includes(k))
    const v = await kiln(['validate', '--json'], {cwd: dir, env: {KILN_MODEL_KEY: 'not-a-real-key'}})
    if (missing.length === 0) {
      expect(v.exitCode, JSON.stringify(v.json)).toBe(0)
      expect(v.json.stages.map((s: {uses: string}) => s.uses)).toEqual(kinds)
    } else {
      // Stage kinds not registered in this build are the only acceptable problems.
      expect(v.exitCode).toBe(2)
      const reported = (v.json.error.issues as {message: string}[]).map((i) => /^unknown stage kind `([^`]+)`/.exec(i.message)?.[1] ?? i.message)
      expect(reported).toEqual(missing)
    }
  })
})
