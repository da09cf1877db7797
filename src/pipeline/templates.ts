import {link, mkdir, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {KilnError, UsageError} from '../errors.js'
import {atomicWriteFile, tempPathFor} from '../util/fs.js'
import {PIPELINE_FILE_NAMES} from './loader.js'
import {didYouMean} from './suggest.js'

/**
 * `kiln init`: copy a pipeline template from the package's `templates/<name>/` into a directory,
 * pointing its schema header at this installation's JSON Schema and its `model:` at the user's model.
 */

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const TEMPLATES_DIR = path.join(PACKAGE_ROOT, 'templates')
export const SCHEMA_FILE = path.join(PACKAGE_ROOT, 'schemas', 'pipeline.schema.json')
const SCHEMA_HEADER = /^# yaml-language-server: \$schema=.*$/m

export interface TemplateInfo {
  name: string
  /** First comment line after the schema header. */
  description: string
}

export async function listTemplates(): Promise<TemplateInfo[]> {
  const entries = await readdir(TEMPLATES_DIR, {withFileTypes: true}).catch(() => [])
  const out: TemplateInfo[] = []
  for (const e of entries) {
    if (!e.isDirectory()) continue
    const text = await readFile(path.join(TEMPLATES_DIR, e.name, 'kiln.yaml'), 'utf8').catch(() => undefined)
    if (text === undefined) continue
    const description = text.split('\n').find((l) => l.startsWith('# ') && !SCHEMA_HEADER.test(l))?.slice(2) ?? ''
    out.push({name: e.name, description})
  }
  return out.sort((a, b) => a.name.localeCompare(b.name))
}

/** Options for {@link initPipeline}. */
export interface InitOptions {
  /** Template name (default `basic`). */
  template?: string
  /** Directory to write into, created when missing (default: the working directory). */
  dir?: string
  /** Model path or URI written to `model:` (paths are made relative to `dir`). */
  model?: string
  /** Overwrite files that already exist. */
  force?: boolean
  /** Base for relative `dir` and `model` (default `process.cwd()`). */
  cwd?: string
}

export interface InitResult {
  template: string
  dir: string
  /** Absolute paths of the files written. */
  files: string[]
  /** `model:` as written into the pipeline. */
  model: string
  /** Whether a local model path given with `--model` exists. */
  modelFound?: boolean
}

async function templateFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(path.join(dir, rel), {withFileTypes: true})) {
    const r = path.join(rel, e.name)
    if (e.isDirectory()) out.push(...(await templateFiles(dir, r)))
    else if (e.isFile()) out.push(r)
  }
  return out.sort()
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/')
}

/** A YAML scalar for `value`: plain when unambiguous, else double-quoted. */
function yamlScalar(value: string): string {
  return /^[A-Za-z0-9_./~+-][A-Za-z0-9_./~+:@-]*$/.test(value) && !/^(true|false|null|yes|no|on|off|~)$/i.test(value) && !/^[-+]?(\d|\.\d)/.test(value)
    ? value
    : JSON.stringify(value)
}

function isUri(value: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(value) || /^s3:/.test(value)
}

/** A pipeline name derived from a model file name (`fashion_cnn.onnx` → `fashion_cnn`). */
function nameFromModel(model: string): string | undefined {
  const base = path.basename(model.replace(/\/+$/, ''))
  const stem = base === 'model.json' ? path.basename(path.dirname(model)) : base.replace(/\.(onnx|json)$/i, '')
  const safe = stem.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '')
  return safe || undefined
}

function render(text: string, dir: string, model: string | undefined): string {
  let out = text.replace(SCHEMA_HEADER, `# yaml-language-server: $schema=${toPosix(path.relative(dir, SCHEMA_FILE))}`)
  if (model !== undefined) {
    out = setTopLevelValue(out, 'model', yamlScalar(model))
    const name = nameFromModel(model)
    if (name) out = setTopLevelValue(out, 'name', name)
  }
  return out
}

/** Replace a top-level `key: value` line, keeping its trailing comment in the same column. */
function setTopLevelValue(text: string, key: string, value: string): string {
  const line = new RegExp(`^${key}:[ \\t]*[^#\\n]*?([ \\t]+#.*)?$`, 'm')
  return text.replace(line, (whole, comment: string | undefined) => {
    const head = `${key}: ${value}`
    if (!comment) return head
    const column = whole.length - comment.trimStart().length
    return `${head.padEnd(Math.max(column, head.length + 1))}${comment.trimStart()}`
  })
}

/** Write a new file, failing if it exists (link is atomic and refuses to replace). */
async function writeNew(target: string, data: string): Promise<void> {
  const temp = tempPathFor(target)
  await writeFile(temp, data)
  try {
    await link(temp, target)
  } finally {
    await rm(temp, {force: true})
  }
}

export async function initPipeline(options: InitOptions = {}): Promise<InitResult> {
  const cwd = path.resolve(options.cwd ?? process.cwd())
  const name = options.template ?? 'basic'
  const templates = (await listTemplates()).map((t) => t.name)
  if (!templates.includes(name)) {
    throw new UsageError(`unknown template '${name}'`, {
      code: 'E_TEMPLATE',
      tryMessage: `${didYouMean(name, templates, {listUpTo: 0}) ?? ''} Templates: ${templates.join(', ')}.`.trim(),
    })
  }
  const dir = path.resolve(cwd, options.dir ?? '.')
  const info = await stat(dir).catch(() => undefined)
  if (info && !info.isDirectory()) throw new UsageError(`--dir ${options.dir}: not a directory`, {code: 'E_USAGE'})

  let model: string | undefined
  let modelFound: boolean | undefined
  if (options.model !== undefined) {
    if (isUri(options.model)) {
      model = options.model
    } else {
      const abs = path.resolve(cwd, options.model)
      modelFound = (await stat(abs).catch(() => undefined)) !== undefined
      const rel = toPosix(path.relative(dir, abs))
      model = rel.startsWith('../') || rel === '..' || path.isAbsolute(rel) ? rel : `./${rel}`
    }
  }

  const source = path.join(TEMPLATES_DIR, name)
  const files = await templateFiles(source)
  const targets = files.map((f) => path.join(dir, f))
  if (!options.force) {
    // Another pipeline file beside the new one would be shadowed by it without anyone noticing.
    const candidates = [...new Set([...targets, ...PIPELINE_FILE_NAMES.map((n) => path.join(dir, n))])]
    const existing = (await Promise.all(candidates.map(async (t) => ((await stat(t).catch(() => undefined)) ? t : undefined)))).filter((t): t is string => t !== undefined)
    if (existing.length > 0) {
      throw new UsageError(`${existing.map((t) => path.relative(cwd, t) || t).join(', ')} already exist${existing.length === 1 ? 's' : ''}; nothing was written`, {
        code: 'E_EXISTS',
        tryMessage: 'Pass --force to overwrite, or --dir to write somewhere else.',
      })
    }
  }
  await mkdir(dir, {recursive: true})
  for (const [i, rel] of files.entries()) {
    const target = targets[i]
    await mkdir(path.dirname(target), {recursive: true})
    const text = render(await readFile(path.join(source, rel), 'utf8'), path.dirname(target), rel === 'kiln.yaml' ? model : undefined)
    try {
      await (options.force ? atomicWriteFile(target, text) : writeNew(target, text))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new UsageError(`${path.relative(cwd, target) || target} appeared while writing; it was left as it is`, {code: 'E_EXISTS', tryMessage: 'Pass --force to overwrite.'})
      }
      throw new KilnError(`cannot write ${target}: ${(error as Error).message}`, {code: 'E_WRITE', exitCode: 1, tryMessage: 'Check that the directory is writable.'})
    }
  }
  const written = await readFile(path.join(dir, 'kiln.yaml'), 'utf8')
  const writtenModel = /^model:[ \t]*([^#\n]*?)[ \t]*(#.*)?$/m.exec(written)?.[1] ?? ''
  return {template: name, dir, files: targets, model: model ?? writtenModel, ...(modelFound === undefined ? {} : {modelFound})}
}
