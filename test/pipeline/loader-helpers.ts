import {mkdir, mkdtemp, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {PipelineFileError, type SourceIssue} from '../../src/errors.js'
import {loadPipeline, type LoadPipelineOptions} from '../../src/pipeline/loader.js'

/** A fresh temporary directory. */
export async function tempDir(prefix = 'kiln-pipeline-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Write `files` (relative path → text) into a fresh directory; returns the directory. */
export async function project(files: Record<string, string>): Promise<string> {
  const dir = await tempDir()
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, rel)), {recursive: true})
    await writeFile(path.join(dir, rel), text)
  }
  return dir
}

/** Load `text` as kiln.yaml and return the issues it is rejected with (fails if it loads). */
export async function issuesOf(text: string, options: LoadPipelineOptions & {extra?: Record<string, string>} = {}): Promise<SourceIssue[]> {
  const dir = await project({'kiln.yaml': text, ...options.extra})
  try {
    await loadPipeline(path.join(dir, 'kiln.yaml'), {cwd: dir, env: options.env ?? {}})
  } catch (error) {
    if (error instanceof PipelineFileError) return error.issues
    throw error
  }
  throw new Error('expected the pipeline to be rejected')
}

/** `line:col message (suggestion)` for compact assertions. */
export function brief(i: SourceIssue): string {
  return `${i.line}:${i.col} ${i.message}${i.suggestion ? ` (${i.suggestion})` : ''}`
}

/** A custom stage module (ESM) whose `with` schema is given as zod source, importing zod by absolute URL. */
export function customStageModule(schemaSource: string, kind = 'custom-step'): string {
  const zodUrl = import.meta.resolve('zod')
  return `import {z} from ${JSON.stringify(zodUrl)}
export default {
  kind: ${JSON.stringify(kind)},
  version: '1',
  description: 'test stage',
  schema: ${schemaSource},
  async run(ctx, input, params) { return {metrics: {params}} },
}
`
}
