import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type {ArtifactRecord, DatasetSpec, HardwareProfile, StageContext} from '../../src/stages/types.js'
import {digestPath} from '../../src/util/fs.js'
import {resolveSecretRef} from '../../src/pipeline/interpolate.js'

/** A StageContext for calling a stage's `run` directly in a unit test. */
export async function makeStageContext(opts: {
  id?: string
  input: string
  datasets?: Record<string, Omit<DatasetSpec, 'name'>>
  profiles?: Record<string, HardwareProfile>
  baseDir?: string
}): Promise<{ctx: StageContext; input: ArtifactRecord; logs: string[]}> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-stage-'))
  const outDir = path.join(root, 'out')
  const tmpDir = path.join(root, 'tmp')
  fs.mkdirSync(outDir)
  fs.mkdirSync(tmpDir)
  const logs: string[] = []
  const d = await digestPath(opts.input)
  const input: ArtifactRecord = {path: opts.input, format: opts.input.endsWith('.onnx') ? 'onnx' : 'file', ...d}
  const defaultProfile: HardwareProfile = {name: 'cpu-2t', threads: 2, providers: ['cpu'], batch: [1]}
  const ctx: StageContext = {
    id: opts.id ?? 'stage',
    runId: 'test-run',
    pipelineName: 'test',
    baseDir: opts.baseDir ?? root,
    outDir,
    tmpDir,
    log: {info: (m) => logs.push(m), warn: (m) => logs.push(`warn: ${m}`), debug: () => {}},
    progress: () => {},
    dataset(name) {
      const spec = opts.datasets?.[name]
      if (!spec) throw new Error(`unknown dataset ${name}`)
      return {name, ...spec}
    },
    profile(name) {
      return opts.profiles?.[name ?? 'cpu-2t'] ?? defaultProfile
    },
    target: 'cpu-2t',
    secret: (ref) => resolveSecretRef(ref, root, {stage: opts.id ?? 'stage'}),
    inputArtifact: input,
    artifacts: new Map(),
    signal: new AbortController().signal,
  }
  return {ctx, input, logs}
}
