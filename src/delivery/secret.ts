import {UsageError} from '../errors.js'
import {registerSecret} from '../util/redact.js'

/**
 * Resolve `env:NAME` or `${env:NAME}` to the variable's value (registered for redaction); anything
 * else is returned as written. Used where no StageContext is at hand (commands).
 */
export function resolveSecretRef(ref: string): string {
  const m = /^(?:env:|\$\{env:)([A-Za-z_][A-Za-z0-9_]*)\}?$/.exec(ref)
  if (!m) return ref
  const value = process.env[m[1]]
  if (value === undefined || value === '') {
    throw new UsageError(`environment variable ${m[1]} is not set`, {code: 'E_SECRET_MISSING', tryMessage: `Export ${m[1]} before running kiln.`})
  }
  registerSecret(value)
  return value
}
