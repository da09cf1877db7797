/**
 * Typed errors. A {@link KilnError} is a user fault: it carries what to try next and the exit code
 * the CLI must return. Anything else that escapes is a bug and exits 1 with a stack trace on request.
 */

/** Exit codes, documented in the README. */
export const ExitCode = {
  ok: 0,
  /** A stage failed (bad model, unreachable endpoint, tampered artifact...). */
  stageFailed: 1,
  /** Invalid pipeline file or command-line usage. */
  invalid: 2,
  /** A quality gate failed. */
  gateFailed: 3,
} as const
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode]

export interface KilnErrorOptions {
  /** What the user can do about it. */
  tryMessage?: string
  /** Exit code; defaults to 1 (a stage or operation failed). */
  exitCode?: ExitCode
  /** Stable machine-readable code, e.g. `E_YAML`, `E_MODEL_CORRUPT`. */
  code?: string
  cause?: unknown
}

export class KilnError extends Error {
  readonly tryMessage?: string
  readonly exitCode: ExitCode
  readonly code: string

  constructor(message: string, options: KilnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : {cause: options.cause})
    this.name = 'KilnError'
    this.tryMessage = options.tryMessage
    this.exitCode = options.exitCode ?? ExitCode.stageFailed
    this.code = options.code ?? 'E_KILN'
  }
}

/** Invalid pipeline file, flags or arguments (exit 2). */
export class UsageError extends KilnError {
  constructor(message: string, options: Omit<KilnErrorOptions, 'exitCode'> = {}) {
    super(message, {code: 'E_USAGE', ...options, exitCode: ExitCode.invalid})
    this.name = 'UsageError'
  }
}

/** One problem in a pipeline file, with its position. */
export interface SourceIssue {
  file: string
  line: number
  col: number
  message: string
  suggestion?: string
}

/** A pipeline file with one or more problems, each with `file:line:col` (exit 2). */
export class PipelineFileError extends UsageError {
  readonly issues: SourceIssue[]
  constructor(issues: SourceIssue[]) {
    super(issues.map((i) => formatSourceIssue(i)).join('\n'), {code: 'E_PIPELINE'})
    this.name = 'PipelineFileError'
    this.issues = issues
  }
}

export function formatSourceIssue(i: SourceIssue): string {
  return `${i.file}:${i.line}:${i.col}: ${i.message}${i.suggestion ? ` (${i.suggestion})` : ''}`
}

/** A model file that cannot be read as ONNX. */
export class ModelError extends KilnError {
  constructor(message: string, options: Omit<KilnErrorOptions, 'exitCode'> = {}) {
    super(message, {code: 'E_MODEL', ...options, exitCode: ExitCode.stageFailed})
    this.name = 'ModelError'
  }
}

/** The run was cancelled (Ctrl-C or an abort signal). */
export class AbortedError extends KilnError {
  constructor(message = 'cancelled') {
    super(message, {code: 'E_ABORTED', exitCode: ExitCode.stageFailed})
    this.name = 'AbortedError'
  }
}

/** Something kiln itself got wrong. */
export class BugError extends Error {
  constructor(message: string, options?: {cause?: unknown}) {
    super(message, options)
    this.name = 'BugError'
  }
}

export function isKilnError(e: unknown): e is KilnError {
  return e instanceof KilnError
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
