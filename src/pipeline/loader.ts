import {readFile, stat} from 'node:fs/promises'
import path from 'node:path'
import {errorMessage, PipelineFileError, UsageError, type SourceIssue} from '../errors.js'
import {builtinProfiles, resolveProfiles} from '../runtime/profiles.js'
import {builtinKinds, isCustomStageRef, loadStage} from '../stages/registry.js'
import type {DatasetSpec, HardwareProfile, Stage} from '../stages/types.js'
import {redact} from '../util/redact.js'
import {interpolateEnv, type Env} from './interpolate.js'
import {PipelineSchema, type PipelineFile} from './schema.js'
import {SourceFile, type DocPath} from './source.js'
import {closest, didYouMean} from './suggest.js'
import {mapZodIssues, typeName} from './zod-issues.js'

export interface PipelineStageSpec {
  /** `id`, or the stage's kind; unique within the pipeline. */
  id: string
  /** As written: a built-in kind or a module path. */
  uses: string
  /** After `${env:NAME}` interpolation; whole-value `env:NAME` strings are left for `ctx.secret()`. */
  with: Record<string, unknown>
  stage: Stage<any>
  /** `with` parsed by the stage's schema (defaults applied). */
  params: unknown
}

export interface Pipeline {
  /** Absolute path of the pipeline file. */
  file: string
  /** Its directory: relative paths resolve against it. */
  baseDir: string
  version: 1
  name: string
  /** Absolute path (relative paths resolve against baseDir), or a URI as written. */
  model: string
  /** Profile name benchmarks run on (default `cpu-2t`). */
  target: string
  /** The file's own profiles, completed as `resolveProfiles` does (built-ins live in src/runtime/profiles.ts). */
  profiles: Record<string, HardwareProfile>
  /** Datasets with absolute paths. */
  datasets: Record<string, DatasetSpec>
  stages: PipelineStageSpec[]
  /** Position of a value in the file by path, e.g. `['stages', 2, 'with', 'sparsity']`. */
  positionOf(path: (string | number)[]): {line: number; col: number}
}

/** Options for {@link loadPipeline}. */
export interface LoadPipelineOptions {
  /** Where a relative `file` resolves and the search starts (default `process.cwd()`). */
  cwd?: string
  /** Environment for `${env:NAME}` (default `process.env`). */
  env?: Env
}

/** Files searched, in order, in each directory from the working directory up to the project root. */
export const PIPELINE_FILE_NAMES = ['kiln.yaml', 'kiln.yml', '.kilnrc', '.kilnrc.yaml', '.kilnrc.yml', '.kilnrc.json'] as const

/**
 * The pipeline file in `cwd` or the nearest directory above it, stopping at the project root (the
 * first directory holding a package.json).
 */
export async function findPipelineFile(cwd: string): Promise<string | undefined> {
  // Imported on demand: cosmiconfig pulls in its own parsers, and `kiln --help` must stay fast.
  const {cosmiconfig} = await import('cosmiconfig')
  // Only the location is wanted: the file is parsed later with positions, so loaders just accept it.
  const accept = (): {found: true} => ({found: true})
  const explorer = cosmiconfig('kiln', {
    searchPlaces: [...PIPELINE_FILE_NAMES],
    searchStrategy: 'project',
    ignoreEmptySearchPlaces: false,
    cache: false,
    loaders: {'.yaml': accept, '.yml': accept, '.json': accept, noExt: accept},
  })
  const result = await explorer.search(path.resolve(cwd))
  return result?.filepath
}

function isUri(value: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(value) || /^s3:/.test(value)
}

async function resolveFile(file: string | undefined, cwd: string): Promise<string> {
  if (file === undefined) {
    const found = await findPipelineFile(cwd)
    if (found) return found
    throw new UsageError(`no pipeline file found in ${cwd} or above (looked for ${PIPELINE_FILE_NAMES.join(', ')})`, {
      code: 'E_PIPELINE_NOT_FOUND',
      tryMessage: 'Create one with `kiln init`, or pass the file: `kiln validate path/to/kiln.yaml`.',
    })
  }
  const abs = path.resolve(cwd, file)
  const info = await stat(abs).catch(() => undefined)
  if (info?.isDirectory()) {
    const found = await findPipelineFile(abs)
    if (found && path.dirname(found) === abs) return found
    throw new UsageError(`${file} is a directory without a pipeline file (${PIPELINE_FILE_NAMES.join(', ')})`, {
      code: 'E_PIPELINE_NOT_FOUND',
      tryMessage: `Create one with \`kiln init --dir ${file}\`.`,
    })
  }
  if (!info) {
    throw new UsageError(`pipeline file ${file} does not exist`, {code: 'E_PIPELINE_NOT_FOUND', tryMessage: 'Check the path, or create one with `kiln init`.'})
  }
  return abs
}

function displayName(file: string, cwd: string): string {
  const rel = path.relative(cwd, file)
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file
}

type RawStage = {uses?: unknown; id?: unknown; with?: unknown}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
}

/**
 * Read, validate and resolve a pipeline file. Every problem (syntax, schema, unknown stage kinds,
 * stage parameters, references between datasets/profiles/stages, duplicate ids, custom stage
 * modules) is collected and thrown together as one {@link PipelineFileError}, each with its position.
 */
export async function loadPipeline(file?: string, options: LoadPipelineOptions = {}): Promise<Pipeline> {
  const cwd = path.resolve(options.cwd ?? process.cwd())
  const abs = await resolveFile(file, cwd)
  const baseDir = path.dirname(abs)
  const shown = displayName(abs, cwd)
  let text: string
  try {
    text = await readFile(abs, 'utf8')
  } catch (error) {
    throw new UsageError(`cannot read pipeline file ${shown}: ${errorMessage(error)}`, {code: 'E_PIPELINE_READ'})
  }
  const source = new SourceFile(abs, shown, text)
  const syntax = source.syntaxIssues()
  if (syntax.length > 0) throw new PipelineFileError(syntax)
  if (!asRecord(source.doc.contents?.toJSON())) {
    throw new PipelineFileError([
      source.issueAt([], `expected a mapping with \`version\`, \`name\`, \`model\` and \`stages\`, got ${source.doc.contents === null ? 'an empty file' : typeName(source.doc.contents.toJSON())}`, {
        suggestion: 'start from `kiln init`',
      }),
    ])
  }

  const issues: SourceIssue[] = []
  const interpolated = interpolateEnv(source.doc.toJS({maxAliasCount: 1000}), options.env ?? process.env)
  for (const i of interpolated.issues) issues.push(source.issueAt(i.path, i.message, {suggestion: i.suggestion}))
  const raw = interpolated.value as Record<string, unknown>

  const parsed = PipelineSchema.safeParse(raw)
  if (!parsed.success) issues.push(...mapZodIssues(parsed.error, raw, PipelineSchema, source))

  // Checks below run on the raw document as far as its shape allows, so one run reports everything.
  const datasetNames = Object.keys(asRecord(raw.datasets) ?? {})
  const profileNames = [...new Set([...Object.keys(builtinProfiles()), ...Object.keys(asRecord(raw.profiles) ?? {})])]
  if (typeof raw.target === 'string' && !profileNames.includes(raw.target)) {
    issues.push(unknownName(source, ['target'], 'profile', raw.target, profileNames))
  }
  const stages = await checkStages(source, raw.stages, baseDir, datasetNames, profileNames, issues)

  if (issues.length > 0 || !parsed.success) {
    issues.sort((a, b) => a.line - b.line || a.col - b.col)
    // Messages may quote values that came from ${env:NAME}; issues travel as data (--json), so redact here.
    throw new PipelineFileError(issues.map((i) => ({...i, message: redact(i.message), ...(i.suggestion ? {suggestion: redact(i.suggestion)} : {})})))
  }
  return buildPipeline(parsed.data, abs, baseDir, stages, source)
}

function unknownName(source: SourceFile, at: DocPath, what: string, name: string, known: string[]): SourceIssue {
  const listed = known.length > 0 ? `; declared ${what}s: ${known.map((k) => `\`${k}\``).join(', ')}` : `; no ${what}s are declared`
  const near = closest(name, known)
  return source.issueAt(at, `unknown ${what} \`${name}\`${listed}`, {
    suggestion: near ? `did you mean \`${near}\`?` : what === 'dataset' ? 'declare it under `datasets:`' : what === 'profile' ? 'declare it under `profiles:`' : undefined,
  })
}

async function checkStages(
  source: SourceFile,
  rawStages: unknown,
  baseDir: string,
  datasetNames: string[],
  profileNames: string[],
  issues: SourceIssue[],
): Promise<PipelineStageSpec[]> {
  if (!Array.isArray(rawStages)) return []
  const specs: PipelineStageSpec[] = []
  const seenIds = new Map<string, number>()
  const kinds = builtinKinds()
  for (const [index, entry] of (rawStages as RawStage[]).entries()) {
    if (!asRecord(entry) || typeof entry.uses !== 'string' || entry.uses === '') continue
    const at: DocPath = ['stages', index]
    const uses = entry.uses
    let stage: Stage<any> | undefined
    if (kinds.includes(uses) || isCustomStageRef(uses)) {
      try {
        stage = await loadStage(uses, baseDir)
      } catch (error) {
        const builtin = kinds.includes(uses)
        const file = uses.startsWith('file:') ? uses : path.resolve(baseDir, uses)
        let message = errorMessage(error).includes(uses) ? errorMessage(error) : `${builtin ? `built-in stage \`${uses}\`` : `custom stage module ${uses}`}: ${errorMessage(error)}`
        // Name the file the module resolved to, so a wrong base directory is obvious.
        if (!builtin && !message.includes(file)) message += ` (module ${file})`
        issues.push(source.issueAt([...at, 'uses'], message, {suggestion: builtin ? undefined : 'the module must `export default` a stage made with defineStage()'}))
      }
    } else {
      issues.push(
        source.issueAt([...at, 'uses'], `unknown stage kind \`${uses}\`; expected a built-in kind (${kinds.join(', ') || 'none registered'}) or a module path like ./my-stage.js`, {
          suggestion: didYouMean(uses, kinds, {listUpTo: 0}),
        }),
      )
    }

    const id = typeof entry.id === 'string' ? entry.id : (stage?.kind ?? uses)
    const idAt: DocPath = typeof entry.id === 'string' ? [...at, 'id'] : [...at, 'uses']
    const first = seenIds.get(id)
    if (first !== undefined) {
      const firstLine = source.positionOf(['stages', first]).line
      issues.push(source.issueAt(idAt, `duplicate stage id \`${id}\` (the stage at line ${firstLine} has it too)`, {suggestion: `give this stage a unique \`id:\`, e.g. \`${id}-${index + 1}\``}))
    } else {
      seenIds.set(id, index)
    }

    const withValue = entry.with === undefined || entry.with === null ? {} : entry.with
    const withRecord = asRecord(withValue)
    if (withRecord) {
      checkReferences(source, withRecord, [...at, 'with'], {datasetNames, profileNames, earlierIds: [...seenIds.keys()].filter((k) => seenIds.get(k)! < index)}, issues)
    }
    if (!stage || !withRecord) continue
    let result: ReturnType<Stage<any>['schema']['safeParse']>
    try {
      result = stage.schema.safeParse(withRecord)
    } catch (error) {
      issues.push(source.issueAt([...at, 'with'], `stage \`${uses}\` could not check its parameters: ${errorMessage(error)}`))
      continue
    }
    if (!result.success) {
      issues.push(...mapZodIssues(result.error, withRecord, stage.schema, source, [...at, 'with']))
      continue
    }
    specs.push({id, uses, with: withRecord, stage, params: result.data})
  }
  return specs
}

interface ReferenceScope {
  datasetNames: string[]
  profileNames: string[]
  /** Ids of the stages before this one (what `baseline:` may name). */
  earlierIds: string[]
}

/**
 * Names in `with` that must refer to something declared elsewhere, found by key wherever they are
 * nested, so a new stage kind gets the checks without registering anything: `dataset` names a
 * dataset, `profile` a hardware profile, `baseline` the input model, an earlier stage or a file.
 */
function checkReferences(source: SourceFile, value: unknown, at: DocPath, scope: ReferenceScope, issues: SourceIssue[]): void {
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkReferences(source, item, [...at, i], scope, issues))
    return
  }
  const record = asRecord(value)
  if (!record) return
  for (const [key, item] of Object.entries(record)) {
    const here = [...at, key]
    if (key === 'dataset' || key === 'profile') {
      const names = key === 'dataset' ? scope.datasetNames : scope.profileNames
      const refs = typeof item === 'string' ? [[item, here] as const] : Array.isArray(item) ? item.flatMap((v, i) => (typeof v === 'string' ? [[v, [...here, i]] as const] : [])) : []
      for (const [name, where] of refs) if (!names.includes(name)) issues.push(unknownName(source, where, key, name, names))
    } else if (key === 'baseline' && typeof item === 'string') {
      const looksLikeFile = item.includes('/') || /\.(onnx|json)$/i.test(item) || isUri(item)
      if (item !== 'input' && !looksLikeFile && !scope.earlierIds.includes(item)) {
        const candidates = ['input', ...scope.earlierIds]
        issues.push(
          source.issueAt(here, `\`baseline: ${item}\` names no earlier stage; expected \`input\` (the pipeline's model), the id of an earlier stage (${scope.earlierIds.map((k) => `\`${k}\``).join(', ') || 'none'}) or a model path`, {
            suggestion: didYouMean(item, candidates, {listUpTo: 0}),
          }),
        )
      }
    } else {
      checkReferences(source, item, here, scope, issues)
    }
  }
}

function buildPipeline(file: PipelineFile, abs: string, baseDir: string, stages: PipelineStageSpec[], source: SourceFile): Pipeline {
  const resolvePath = (p: string): string => (isUri(p) ? p : path.resolve(baseDir, p))
  // Completed the way the benchmark code completes them, so every consumer sees the same values.
  const resolved = resolveProfiles(file.profiles)
  const profiles: Record<string, HardwareProfile> = {}
  for (const name of Object.keys(file.profiles)) profiles[name] = resolved[name]
  const datasets: Record<string, DatasetSpec> = {}
  for (const [name, spec] of Object.entries(file.datasets)) datasets[name] = {...spec, name, path: resolvePath(spec.path)}
  return {
    file: abs,
    baseDir,
    version: 1,
    name: file.name,
    model: resolvePath(file.model),
    target: file.target,
    profiles,
    datasets,
    stages,
    positionOf: (p) => source.positionOf(p),
  }
}
