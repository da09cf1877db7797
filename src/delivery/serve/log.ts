import {redact} from '../../util/redact.js'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

const ORDER: Record<LogLevel, number> = {debug: 10, info: 20, warn: 30, error: 40}

/** Structured logs: one JSON object per line on stderr, secrets redacted. */
export interface ServeLogger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void
}

export function jsonLogger(minLevel: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l)): ServeLogger {
  return {
    log(level, msg, fields = {}) {
      if (ORDER[level] < ORDER[minLevel]) return
      write(`${redact(JSON.stringify({time: new Date().toISOString(), level, msg, ...fields}))}\n`)
    },
  }
}
