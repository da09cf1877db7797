import {KilnError, UsageError} from '../errors.js'
import {registerSecret} from '../util/redact.js'

/**
 * Environment interpolation in pipeline files.
 *
 * - `${env:NAME}` inside any string is replaced when the file loads; the value is registered as a
 *   secret so it never reaches a log, report, lock file or error. `$${` writes a literal `${`.
 * - A whole value `env:NAME` is left as written: it names a secret (a key) that the stage resolves
 *   through `ctx.secret()` only when it needs it, so the value never sits in the parsed pipeline or
 *   in the cache key.
 */

const PLACEHOLDER = /\$(\$?)\{([^}]*)\}/g
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const WHOLE_ENV_REF = /^env:([A-Za-z_][A-Za-z0-9_]*)$/

export type Env = Record<string, string | undefined>

/** A problem found while interpolating, at a path in the document. */
export interface InterpolationIssue {
  path: (string | number)[]
  message: string
  suggestion?: string
}

/** Whether `value` is a whole-value secret reference (`env:NAME`). */
export function isSecretRef(value: unknown): value is string {
  return typeof value === 'string' && WHOLE_ENV_REF.test(value)
}

function interpolateString(text: string, env: Env, at: (string | number)[], issues: InterpolationIssue[]): string {
  return text.replace(PLACEHOLDER, (whole, escape: string, body: string) => {
    if (escape) return whole.slice(1)
    const m = /^env:(.*)$/.exec(body)
    if (!m || !ENV_NAME.test(m[1])) {
      issues.push({
        path: at,
        message: `invalid placeholder \`${whole}\`: expected \`\${env:NAME}\` with NAME made of letters, digits and \`_\``,
        suggestion: 'write `$${` for a literal `${`',
      })
      return whole
    }
    const value = env[m[1]]
    if (value === undefined) {
      issues.push({
        path: at,
        message: `environment variable ${m[1]} is not set (referenced as \`${whole}\`)`,
        suggestion: `set it, e.g. \`export ${m[1]}=...\`, before running kiln`,
      })
      return whole
    }
    registerSecret(value)
    return value
  })
}

/**
 * Replace `${env:NAME}` in every string of a parsed document (keys are left alone). Returns the new
 * value and the problems found; a missing variable is a problem with the value's path.
 */
export function interpolateEnv(value: unknown, env: Env = process.env): {value: unknown; issues: InterpolationIssue[]} {
  const issues: InterpolationIssue[] = []
  const walk = (v: unknown, at: (string | number)[]): unknown => {
    if (typeof v === 'string') return v.includes('$') ? interpolateString(v, env, at, issues) : v
    if (Array.isArray(v)) return v.map((item, i) => walk(item, [...at, i]))
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {}
      for (const [k, item] of Object.entries(v)) out[k] = walk(item, [...at, k])
      return out
    }
    return v
  }
  return {value: walk(value, []), issues}
}

/** Options for {@link resolveSecretRef}. */
export interface ResolveSecretOptions {
  /** Stage id, named in errors. */
  stage?: string
  /** Environment to read (default `process.env`). */
  env?: Env
}

/**
 * Resolve a secret reference: `env:NAME` (or a whole `${env:NAME}`) gives the variable's value,
 * registered for redaction; anything else (a key file path, a literal) is returned as written, and
 * the stage reads a path relative to `baseDir` itself. Errors name the variable and the stage,
 * never a value.
 */
export function resolveSecretRef(ref: string, _baseDir: string, options: ResolveSecretOptions = {}): string {
  const env = options.env ?? process.env
  const where = options.stage ? ` (stage '${options.stage}')` : ''
  const envRef = WHOLE_ENV_REF.exec(ref) ?? /^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(ref)
  if (!envRef) {
    if (/^env:/.test(ref)) {
      throw new UsageError(`invalid secret reference${where}: expected env:NAME with NAME made of letters, digits and _`, {code: 'E_SECRET_REF'})
    }
    // Paths stay paths: the stage resolves them against the pipeline's directory (`_baseDir`).
    return ref
  }
  const value = env[envRef[1]]
  if (value === undefined || value === '') {
    throw new KilnError(`secret ${ref}${where}: environment variable ${envRef[1]} is ${value === undefined ? 'not set' : 'empty'}`, {
      code: 'E_SECRET_MISSING',
      exitCode: 2,
      tryMessage: `Set ${envRef[1]} in the environment (in CI, from the secret store) and run again.`,
    })
  }
  registerSecret(value)
  return value
}
