import {createHash, randomBytes} from 'node:crypto'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {AbortedError, errorMessage, ExitCode, isKilnError, KilnError, UsageError} from '../errors.js'
import type {ArtifactRecord, GateResult, StageContext, StageLogger} from '../stages/types.js'
import {exists, listFiles, sha256} from '../util/fs.js'
import {redact} from '../util/redact.js'
import {artifactDigest, cacheKey, canonicalJson, DigestMemo, runtimeVersions, StageCache} from './cache.js'
import type {Pipeline, PipelineStageSpec} from './loader.js'
import {resolveSecretRef} from './interpolate.js'
import type {LockStage} from './lock.js'
import {writeLock} from './lock.js'
import {getProfile} from '../runtime/profiles.js'
import type {RunReport, StageReport} from './report-types.js'
import {writeReports} from './report.js'
import {inputArtifactFiles} from './inputs.js'

export interface RunOptions {
  /** Run directory (default `<pipeline dir>/.kiln/runs/<time>-<name>`). */
  out?: string
  /** Ignore cached results: run every selected stage. */
  force?: boolean
  /** Take stages before this id from the cache, run it and everything after. */
  from?: string
  /** Run only this stage (its input from the cache); skip the others. */
  only?: string
  signal?: AbortSignal
  /** Runs the stage tasks: sequentially with plain logs, or under a listr2 renderer. */
  executor?: TaskExecutor
  log?: StageLogger
  kilnVersion: string
}

/** One unit of work for a renderer: its title and a body that reports progress text. */
export interface RunTask {
  id: string
  title: string
  run(progress: (message: string) => void, setTitle: (title: string) => void): Promise<void>
}

export type TaskExecutor = (tasks: RunTask[]) => Promise<void>

const PLAIN_PROGRESS_INTERVAL_MS = 3000

/** The default executor: stage after stage, one plain log line per event (CI, no TTY, --json). */
export function plainExecutor(write: (line: string) => void): TaskExecutor {
  return async (tasks) => {
    for (const t of tasks) {
      const started = Date.now()
      let title = t.title
      write(`▶ ${title}`)
      // Plain logs are read later, in CI: one progress line every few seconds per stage, not one per sample.
      let lastProgress = 0
      try {
        await t.run(
          (m) => {
            const now = Date.now()
            if (now - lastProgress < PLAIN_PROGRESS_INTERVAL_MS) return
            lastProgress = now
            write(`  ${t.id}: ${m}`)
          },
          (next) => {
            title = next
          },
        )
      } catch (error) {
        write(`✖ ${title}: ${redact(errorMessage(error)).split('\n')[0]}`)
        throw error
      }
      write(`✔ ${title} (${((Date.now() - started) / 1000).toFixed(1)} s)`)
    }
  }
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').replace('T', '-')
}

/** Parameters with whole-value secret refs (`env:NAME`) replaced by a digest of the value, for the cache key. */
function secretDigests(value: unknown, baseDir: string, out: Record<string, string>): void {
  if (typeof value === 'string' && /^(passphrase:)?env:[A-Za-z_][A-Za-z0-9_]*$/.test(value)) {
    try {
      out[value] = createDigest(resolveSecretRef(value.replace(/^passphrase:/, ''), baseDir))
    } catch {
      out[value] = 'unset'
    }
  } else if (Array.isArray(value)) for (const v of value) secretDigests(v, baseDir, out)
  else if (value && typeof value === 'object') for (const v of Object.values(value)) secretDigests(v, baseDir, out)
}

function createDigest(secret: string): string {
  // Domain-separated so the lock/cache key never equals a plain hash someone could look up.
  return createHash('sha256').update('kiln-secret-v1\0').update(secret).digest('hex')
}

/**
 * Run a pipeline: plan which stages run or come from the cache, execute them, record the lock and
 * write the reports. Returns the report; `status` tells the exit code (see `exitCodeFor`).
 */
export async function runPipeline(pipeline: Pipeline, options: RunOptions): Promise<RunReport> {
  const started = new Date()
  const signal = options.signal ?? new AbortController().signal
  const log: StageLogger = options.log ?? {info: () => {}, warn: () => {}, debug: () => {}}
  const stages = pipeline.stages
  const ids = stages.map((s) => s.id)
  for (const [flag, id] of [['--from', options.from], ['--only', options.only]] as const) {
    if (id !== undefined && !ids.includes(id)) {
      throw new UsageError(`${flag} ${id}: no stage with that id`, {tryMessage: `Stage ids: ${ids.join(', ')}`})
    }
  }
  const kilnDir = path.join(pipeline.baseDir, '.kiln')
  const runId = `${timestamp(started)}-${randomBytes(3).toString('hex')}`
  const runDir = path.resolve(options.out ?? path.join(kilnDir, 'runs', `${timestamp(started)}-${pipeline.name}`))
  await ensureWritableDir(runDir)
  const cache = new StageCache(path.join(kilnDir, 'cache'))
  const memo = new DigestMemo(path.join(kilnDir, 'cache', 'digests.json'))
  await memo.load()
  const runtime = runtimeVersions(options.kilnVersion)

  const inputFiles = await inputArtifactFiles(pipeline.model, memo)
  const modelDir = path.dirname(inputFiles[0]!)
  const inputDigest =
    inputFiles.length === 1 ? await memo.digestFile(inputFiles[0]!) : await memo.digestSet(modelDir, inputFiles.map((f) => path.relative(modelDir, f).split(path.sep).join('/')))
  const input: ArtifactRecord = {path: pipeline.model, format: pipeline.model.endsWith('.json') ? 'tfjs' : 'onnx', ...inputDigest}

  const reports: StageReport[] = stages.map((s) => ({id: s.id, uses: s.uses, status: 'skipped', seconds: 0, metrics: {}}))
  const gates: GateResult[] = []
  const lockStages: LockStage[] = []
  const artifacts = new Map<string, ArtifactRecord>()
  let current = input
  let failed = false
  const fromIndex = options.from ? ids.indexOf(options.from) : -1
  const onlyIndex = options.only ? ids.indexOf(options.only) : -1

  const tasks: RunTask[] = stages.map((spec, index) => ({
    id: spec.id,
    title: spec.id === spec.uses ? spec.id : `${spec.id} (${spec.uses})`,
    run: async (progress, setTitle) => {
      const report = reports[index]!
      // A failed stage stops the run; so does a failed quality gate: nothing that missed its gate is
      // signed, encrypted or published. The remaining stages are reported as skipped.
      if (failed || gates.some((g) => !g.passed)) return
      if (signal.aborted) throw new AbortedError()
      const t0 = performance.now()
      const datasets: Record<string, string> = {}
      for (const name of spec.stage.datasets?.(spec.params as never) ?? []) {
        const ds = pipeline.datasets[name]
        if (ds) datasets[name] = (await memo.digest(ds.path)).sha256
      }
      const secrets: Record<string, string> = {}
      secretDigests(spec.with, pipeline.baseDir, secrets)
      const key = cacheKey({
        inputSha256: current.sha256,
        kind: spec.uses,
        stageVersion: spec.stage.version,
        params: spec.params,
        runtime,
        datasets,
        secrets,
        pipelineInputSha256: input.sha256,
      })
      report.key = key
      if (onlyIndex >= 0 && index > onlyIndex) return
      const mustRun = options.force || (fromIndex >= 0 && index >= fromIndex) || onlyIndex === index
      const mayRun = onlyIndex < 0 || onlyIndex === index
      const cached = mustRun || spec.stage.cacheable === false ? undefined : await cache.get(key, memo)
      const artifactDir = path.join(runDir, 'artifacts', spec.id)
      try {
        if (cached) {
          const out = cached.artifact ? await linkIntoRun(cached.outDir, cached.artifact.rel, artifactDir) : undefined
          current = out ? {path: out, format: cached.artifact!.format, sha256: cached.artifact!.sha256, bytes: cached.artifact!.bytes} : current
          Object.assign(report, {status: 'cached', metrics: cached.metrics, report: cached.report})
          gates.push(...cached.gates.map((g) => ({...g, stage: spec.id})))
          setTitle(`${spec.id}: cached`)
        } else if (!mayRun) {
          throw new KilnError(`--only ${options.only}: stage '${spec.id}' before it has no cached result`, {
            exitCode: ExitCode.invalid,
            tryMessage: 'Run the whole pipeline once first (or use --from).',
          })
        } else {
          const result = await runOneStage(spec, current, {pipeline, runId, runDir, artifacts, input, signal, log, progress, key, cache, memo})
          current = result.artifact ?? current
          Object.assign(report, {status: 'ran', metrics: result.metrics, report: result.report})
          gates.push(...result.gates)
        }
      } catch (error) {
        failed = true
        report.status = 'failed'
        report.error = {
          message: redact(errorMessage(error)),
          code: isKilnError(error) ? error.code : (error as Error)?.name,
          try: isKilnError(error) && error.tryMessage ? redact(error.tryMessage) : undefined,
        }
        if (error instanceof AbortedError || signal.aborted) throw new AbortedError(`cancelled during stage '${spec.id}'`)
        if (isKilnError(error)) throw error
        // Whatever a stage throws is that stage's failure (exit 1), not the runner's: keep the stack for --verbose.
        log.debug((error as Error)?.stack ?? String(error))
        throw new KilnError(`stage '${spec.id}' failed: ${errorMessage(error)}`, {code: 'E_STAGE', cause: error})
      } finally {
        report.seconds = (performance.now() - t0) / 1000
      }
      artifacts.set(spec.id, current)
      if (current !== input) report.artifact = {path: current.path, sha256: current.sha256, bytes: current.bytes, format: current.format}
      lockStages.push({
        id: spec.id,
        uses: spec.uses,
        version: spec.stage.version,
        key,
        input: reports[index - 1]?.artifact?.sha256 ?? input.sha256,
        params: sha256(canonicalJson(spec.params)),
        datasets,
        output: report.artifact ? {sha256: current.sha256, bytes: current.bytes, format: current.format} : undefined,
      })
    },
  }))

  let runError: unknown
  try {
    await (options.executor ?? plainExecutor((l) => log.info(l)))(tasks)
  } catch (error) {
    runError = error
  }
  await memo.save()
  const gateFailed = gates.some((g) => !g.passed)
  const report: RunReport = {
    kiln: options.kilnVersion,
    pipeline: pipeline.name,
    file: pipeline.file,
    runId,
    runDir,
    status: runError || failed ? 'failed' : gateFailed ? 'gate-failed' : 'passed',
    startedAt: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    input,
    stages: reports,
    gates,
    runtime,
  }
  await writeReports(report, runDir)
  // The lock records a complete pass only: a failed or partial (--only) run leaves it as it was.
  if (!runError && !failed && onlyIndex < 0) {
    await writeLock(path.join(pipeline.baseDir, 'kiln.lock'), {
      lockfileVersion: 1,
      pipeline: pipeline.name,
      input: {path: path.relative(pipeline.baseDir, pipeline.model) || pipeline.model, sha256: input.sha256},
      runtime,
      stages: lockStages,
    })
  }
  // Bugs propagate with their stack; a usage fault met mid-run (exit 2) keeps its exit code. Other
  // stage failures are in the report, and the run exits 1.
  if (runError && !(runError instanceof AbortedError) && (!isKilnError(runError) || runError.exitCode === ExitCode.invalid)) throw runError
  if (runError instanceof AbortedError) throw Object.assign(runError, {report})
  return report
}

export function exitCodeFor(report: RunReport): number {
  return report.status === 'passed' ? ExitCode.ok : report.status === 'gate-failed' ? ExitCode.gateFailed : ExitCode.stageFailed
}

interface RunEnv {
  pipeline: Pipeline
  runId: string
  runDir: string
  artifacts: Map<string, ArtifactRecord>
  input: ArtifactRecord
  signal: AbortSignal
  log: StageLogger
  progress: (m: string) => void
  key: string
  cache: StageCache
  memo: DigestMemo
}

/** Run one stage in a scratch directory; on success its output moves into the cache, then the run dir. */
async function runOneStage(
  spec: PipelineStageSpec,
  input: ArtifactRecord,
  env: RunEnv,
): Promise<{artifact?: ArtifactRecord; metrics: Record<string, unknown>; gates: GateResult[]; report?: Record<string, unknown>}> {
  const scratch = path.join(env.runDir, '.work', `${spec.id}-${randomBytes(3).toString('hex')}`)
  const outDir = path.join(scratch, 'out')
  const tmpDir = path.join(scratch, 'tmp')
  await fsp.mkdir(outDir, {recursive: true})
  await fsp.mkdir(tmpDir, {recursive: true})
  const prefix = `[${spec.id}] `
  const ctx: StageContext = {
    id: spec.id,
    runId: env.runId,
    pipelineName: env.pipeline.name,
    baseDir: env.pipeline.baseDir,
    outDir,
    tmpDir,
    log: {
      info: (m) => env.log.info(prefix + redact(m)),
      warn: (m) => env.log.warn(prefix + redact(m)),
      debug: (m) => env.log.debug(prefix + redact(m)),
    },
    progress: (m) => env.progress(redact(m)),
    dataset(name) {
      const ds = env.pipeline.datasets[name]
      if (!ds) {
        throw new UsageError(`stage '${spec.id}' reads dataset '${name}', which the pipeline does not declare`, {
          tryMessage: `Declared datasets: ${Object.keys(env.pipeline.datasets).join(', ') || '(none)'}`,
        })
      }
      return ds
    },
    profile: (name) => getProfile(name ?? env.pipeline.target, env.pipeline.profiles),
    target: env.pipeline.target,
    secret: (ref) => resolveSecretRef(ref, env.pipeline.baseDir, {stage: spec.id}),
    inputArtifact: env.input,
    artifacts: env.artifacts,
    signal: env.signal,
  }
  try {
    const result = await spec.stage.run(ctx, input, spec.params)
    if (env.signal.aborted) throw new AbortedError()
    const gates = (result.gates ?? []).map((g) => ({...g, stage: spec.id}))
    let artifact: ArtifactRecord | undefined
    let source: string | undefined
    let rel: string | undefined
    if (result.artifact) {
      source = path.resolve(result.artifact.path)
      if (!source.startsWith(outDir + path.sep) && source !== outDir) {
        throw new KilnError(`stage '${spec.id}' returned an artifact outside its output directory: ${result.artifact.path}`, {
          tryMessage: 'A stage must write its output under ctx.outDir.',
        })
      }
      if (!(await exists(source))) throw new KilnError(`stage '${spec.id}' returned an artifact that does not exist: ${result.artifact.path}`)
      rel = path.relative(outDir, source) || '.'
    }
    if (source && rel) {
      const digest = await artifactDigest(outDir, rel, env.memo)
      const put = await env.cache.put(
        env.key,
        {artifact: {rel, format: result.artifact!.format, ...digest}, metrics: result.metrics, gates, report: result.report},
        outDir,
      )
      const out = await linkIntoRun(put.outDir, rel, path.join(env.runDir, 'artifacts', spec.id))
      artifact = {path: out, format: result.artifact!.format, ...digest}
    } else {
      await env.cache.put(env.key, {metrics: result.metrics, gates, report: result.report})
    }
    return {artifact, metrics: result.metrics, gates, report: result.report}
  } finally {
    await fsp.rm(scratch, {recursive: true, force: true})
    await fsp.rmdir(path.join(env.runDir, '.work')).catch(() => {})
  }
}

/**
 * Hard-link (or copy) a stage's cached output directory into the run directory under
 * `artifacts/<id>/`; returns the artifact's path there.
 */
async function linkIntoRun(outDir: string, rel: string, artifactDir: string): Promise<string> {
  await fsp.rm(artifactDir, {recursive: true, force: true})
  await fsp.mkdir(artifactDir, {recursive: true})
  for (const f of await listFiles(outDir)) {
    const dest = path.join(artifactDir, f)
    await fsp.mkdir(path.dirname(dest), {recursive: true})
    try {
      await fsp.link(path.join(outDir, f), dest)
    } catch {
      await fsp.copyFile(path.join(outDir, f), dest)
    }
  }
  return rel === '.' ? artifactDir : path.join(artifactDir, rel)
}

async function ensureWritableDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, {recursive: true})
    await fsp.access(dir, fsp.constants.W_OK)
    const probe = path.join(dir, `.write-test-${process.pid}`)
    await fsp.writeFile(probe, '')
    await fsp.rm(probe)
  } catch (error) {
    throw new KilnError(`cannot write the run directory ${dir}: ${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}`, {
      code: 'E_OUT_DIR',
      exitCode: ExitCode.invalid,
      tryMessage: 'Pass a writable directory with --out, or fix the permissions.',
    })
  }
}
