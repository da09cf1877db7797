/**
 * Secret redaction. Every secret kiln resolves (env:NAME values, passphrases, keys) is registered
 * here, and every log line, report and error message passes through `redact` before it leaves.
 */
const secrets = new Set<string>()

export function registerSecret(value: string): void {
  // Very short values would redact ordinary words; they are still never printed by kiln itself.
  if (value.length >= 4) secrets.add(value)
}

export function redact(text: string): string {
  let out = text
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('***')
  return out
}

/** Redact every string inside a JSON-like value. */
export function redactDeep<T>(value: T): T {
  if (secrets.size === 0) return value
  return JSON.parse(redact(JSON.stringify(value))) as T
}
