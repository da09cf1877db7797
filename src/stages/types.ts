import type {z} from 'zod'

/** A stage's output (or input): one file, or a directory of files. */
export interface Artifact {
  /** Absolute path to the model file or the artifact directory. */
  path: string
  /** `onnx`, `tfjs`, `encrypted`, `signed-dir`... free text shown in reports. */
  format: string
}

/** A resolved artifact as recorded in reports and the lock. */
export interface ArtifactRecord extends Artifact {
  sha256: string
  bytes: number
}

export interface GateResult {
  /** Gate name as written in the pipeline file, e.g. `accuracyDrop`. */
  name: string
  value: number
  limit: number
  passed: boolean
  /** Human text, e.g. `accuracy dropped 0.021, limit 0.010 (missed by 0.011)`. */
  message?: string
  stage?: string
}

export interface StageLogger {
  info(message: string): void
  warn(message: string): void
  debug(message: string): void
}

/** A dataset declared under `datasets:` in the pipeline file, with paths resolved. */
export interface DatasetSpec {
  name: string
  /** Absolute path. */
  path: string
  /** Model input name → field (array) name in the dataset. */
  inputs?: Record<string, string>
  /** Field holding the labels. */
  labels?: string
  limit?: number
  shuffle?: boolean
  seed?: number
  /** Preprocessing options, passed to the dataset reader. */
  preprocess?: Record<string, unknown>
  /** Anything else the reader understands (format, ...). */
  [key: string]: unknown
}

/** A hardware profile for sessions and benchmarks (see src/runtime/profiles.ts). */
export interface HardwareProfile {
  name: string
  threads: number
  interOpThreads?: number
  providers: string[]
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all'
  executionMode?: 'sequential' | 'parallel'
  batch: number[]
  concurrency?: number
  warmup?: number
  iterations?: number
  durationMs?: number
}

/** What a stage gets from the runner. Custom stages get exactly the same. */
export interface StageContext {
  /** The stage id (default: its kind). */
  id: string
  runId: string
  pipelineName: string
  /** Directory of the pipeline file: relative paths in `with` resolve against it. */
  baseDir: string
  /** An empty directory the stage writes its output into; the runner moves it into place atomically. */
  outDir: string
  /** Scratch space, removed after the stage. */
  tmpDir: string
  log: StageLogger
  /** Short progress text shown beside the stage in the terminal. */
  progress(message: string): void
  /** Datasets declared in the pipeline file. Throws a clear error for an unknown name. */
  dataset(name: string): DatasetSpec
  /** Hardware profiles: built-in plus the pipeline's own. Throws a clear error for an unknown name. */
  profile(name?: string): HardwareProfile
  /** The pipeline's `target` profile name. */
  target: string
  /**
   * Resolve a secret reference (`env:NAME`, `${env:NAME}`, or a literal/path). The value is registered
   * for redaction: it never reaches a log, report or error.
   */
  secret(ref: string): string
  /** The pipeline's input model (for `baseline: input`). */
  inputArtifact: ArtifactRecord
  /** Outputs of the stages that ran before this one, by id (for `baseline: <stage id>`). */
  artifacts: ReadonlyMap<string, ArtifactRecord>
  /** Aborted on Ctrl-C: long loops must check it (or pass it on) and stop promptly. */
  signal: AbortSignal
}

export interface StageResult {
  /** The stage's output; omit to pass the input through unchanged (e.g. evaluate). */
  artifact?: Artifact
  metrics: Record<string, unknown>
  gates?: GateResult[]
  /** Extra files for the report (charts data...), name → JSON value. */
  report?: Record<string, unknown>
}

/**
 * The Stage contract. A stage declares its kind, a zod schema for `with`, an implementation version
 * (part of the cache key) and `run`. Built-in and custom stages (`uses: ./my-stage.js`, default export)
 * implement the same interface.
 */
export interface Stage<P = Record<string, unknown>> {
  kind: string
  /** Bump when the output for the same input and params changes: invalidates cached results. */
  version: string
  description: string
  /** Validates and defaults `with`. */
  schema: z.ZodType<P>
  /** Names of the datasets these params read; their digests go into the cache key. */
  datasets?(params: P): string[]
  /**
   * Whether the stage's result may be taken from the cache (default true). A stage whose effect is
   * outside the run directory (publish) still caches: its key covers what it published, and `--force`
   * republishes.
   */
  cacheable?: boolean
  run(ctx: StageContext, input: ArtifactRecord, params: P): Promise<StageResult>
}

/** Helper for stage modules: keeps the params type tied to the schema. */
export function defineStage<S extends z.ZodType>(stage: Omit<Stage<z.output<S>>, 'schema'> & {schema: S}): Stage<z.output<S>> {
  return stage as unknown as Stage<z.output<S>>
}
