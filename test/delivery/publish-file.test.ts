import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {publishArtifact} from '../../src/delivery/publish.js'
import {expandTemplate, splitVersion} from '../../src/delivery/template.js'
import publishStage from '../../src/stages/publish.js'
import {MODELS} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'
import {sha256File} from '../../src/util/fs.js'

const vars = {'run.id': 'r1', 'pipeline.name': 'blaze', 'stage.id': 'publish', 'artifact.sha256': 'abc', date: '2026-01-02'}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pub-'))
}

describe('publish targets: templates', () => {
  it('expands known placeholders and rejects unknown ones', () => {
    expect(expandTemplate('m/{pipeline.name}/{date}-{run.id}', vars)).toBe('m/blaze/2026-01-02-r1')
    expect(() => expandTemplate('m/{runid}/', vars)).toThrow(/unknown placeholder \{runid\}/)
    expect(() => expandTemplate('m/{run.id}/', {...vars, 'run.id': '../x'})).toThrow(/path segment/)
  })

  it('takes a templated last segment as the version, else appends the run id', () => {
    expect(splitVersion('/srv/m/{pipeline.name}/{run.id}/', vars)).toEqual({root: '/srv/m/blaze/', version: 'r1'})
    expect(splitVersion('/srv/m/', vars)).toEqual({root: '/srv/m/', version: 'r1'})
    expect(splitVersion('/srv/m/{pipeline.name}/', vars)).toEqual({root: '/srv/m/blaze/', version: 'r1'})
    expect(splitVersion('m/{date}-{artifact.sha256}', vars)).toEqual({root: 'm/', version: '2026-01-02-abc'})
  })
})

describe('publish to a directory', () => {
  it('publishes a real model as a complete version folder, then the latest pointer', async () => {
    const dest = tmp()
    const r = await publishArtifact(MODELS.blazeface, {to: [`file://${dest}/{pipeline.name}/{run.id}/`], baseDir: dest, vars: {'run.id': 'r1', 'pipeline.name': 'blaze', 'stage.id': 'publish'}})
    const versionDir = path.join(dest, 'blaze', 'r1')
    const published = path.join(versionDir, path.basename(MODELS.blazeface))
    expect(await sha256File(published)).toBe(await sha256File(MODELS.blazeface))
    expect(fs.readdirSync(versionDir)).toEqual([path.basename(MODELS.blazeface)])
    const latest = JSON.parse(fs.readFileSync(path.join(dest, 'blaze', 'latest'), 'utf8'))
    expect(latest.version).toBe('r1')
    expect(latest.files[0].sha256).toBe(r.artifact.sha256)
    expect(r.targets[0]).toMatchObject({status: 'published', version: 'r1', files: 1, bytes: fs.statSync(MODELS.blazeface).size})
    // No temp leftovers beside the versions.
    expect(fs.readdirSync(path.join(dest, 'blaze')).sort()).toEqual(['latest', 'r1'])
  })

  it('never overwrites an existing version; identical content is a no-op', async () => {
    const dest = tmp()
    const src = path.join(tmp(), 'art')
    fs.mkdirSync(path.join(src, 'sub'), {recursive: true})
    fs.copyFileSync(MODELS.sileroV5, path.join(src, 'model.onnx'))
    fs.writeFileSync(path.join(src, 'sub', 'note.txt'), 'v1')
    const opts = {to: [path.join(dest, '{run.id}')], baseDir: dest, vars: {'run.id': 'v1', 'pipeline.name': 'p', 'stage.id': 's'}}
    const first = await publishArtifact(src, opts)
    expect(first.targets[0].files).toBe(2)
    expect(fs.readFileSync(path.join(dest, 'v1', 'sub', 'note.txt'), 'utf8')).toBe('v1')
    const again = await publishArtifact(src, opts)
    expect(again.targets[0].status).toBe('unchanged')
    fs.writeFileSync(path.join(src, 'sub', 'note.txt'), 'v2')
    await expect(publishArtifact(src, opts)).rejects.toThrow(/already exists with different content/)
    expect(fs.readFileSync(path.join(dest, 'v1', 'sub', 'note.txt'), 'utf8')).toBe('v1')
    // A new version moves the pointer.
    await publishArtifact(src, {...opts, vars: {...opts.vars, 'run.id': 'v2'}})
    expect(JSON.parse(fs.readFileSync(path.join(dest, 'latest'), 'utf8')).version).toBe('v2')
  })

  it('leaves nothing visible when the copy fails midway', async () => {
    const dest = tmp()
    const src = path.join(tmp(), 'art')
    fs.mkdirSync(src)
    fs.copyFileSync(MODELS.blazeface, path.join(src, 'a.onnx'))
    fs.writeFileSync(path.join(src, 'b.bin'), 'x')
    // A file that disappears between listing and copying makes the publish fail after the first file.
    const pending = publishArtifact(src, {
      to: [path.join(dest, '{run.id}')],
      baseDir: dest,
      vars: {'run.id': 'v1', 'pipeline.name': 'p', 'stage.id': 's'},
      progress: (m) => {
        if (m.includes('b.bin')) fs.rmSync(path.join(src, 'b.bin'))
      },
    })
    await expect(pending).rejects.toThrow()
    expect(fs.readdirSync(dest)).toEqual([])
  })

  it('runs as a stage with per-target metrics for two targets', async () => {
    const dest = tmp()
    const {ctx, input} = await makeStageContext({input: MODELS.ocrCls, id: 'ship'})
    const params = publishStage.schema.parse({to: ['./a/{stage.id}-{run.id}/', `file://${dest}/b/`]})
    ctx.baseDir = dest
    const r = await publishStage.run(ctx, input, params)
    const targets = r.metrics.targets as {uri: string; version: string; files: number; bytes: number; seconds: number}[]
    expect(targets).toHaveLength(2)
    expect(targets[0].version).toBe('ship-test-run')
    expect(targets[1].version).toBe('test-run')
    for (const t of targets) {
      expect(t.bytes).toBe(input.bytes)
      expect(t.seconds).toBeGreaterThanOrEqual(0)
      const file = path.join(new URL(t.uri).pathname, path.basename(MODELS.ocrCls))
      expect(await sha256File(file)).toBe(input.sha256)
    }
    expect(r.artifact).toBeUndefined()
    await fsp.rm(dest, {recursive: true})
  })
})

describe('publish stage default target', () => {
  it('publishes to the local registry beside the pipeline file when no target is named', async () => {
    const {ctx, input} = await makeStageContext({input: MODELS.blazeface})
    const params = publishStage.schema.parse({})
    expect(params.to).toEqual(['./.kiln/registry/{pipeline.name}/'])
    const result = await publishStage.run(ctx, input, params)
    const [target] = result.metrics.targets as {uri: string; status: string}[]
    expect(target!.status).toBe('published')
    const root = path.join(ctx.baseDir, '.kiln', 'registry', ctx.pipelineName)
    expect(fs.existsSync(path.join(root, 'latest'))).toBe(true)
    expect(fs.readdirSync(path.join(root, ctx.runId))).toContain(path.basename(MODELS.blazeface))
  })
})
