import {execa} from 'execa'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const BIN = path.join(ROOT, 'bin', 'run.js')

export interface KilnRun {
  exitCode: number
  stdout: string
  stderr: string
  /** stdout parsed as JSON, when it is. */
  json?: any
}

/**
 * Run the built CLI (`bin/run.js`, from dist/) as a user would: a separate process, no TTY.
 * `npm test` builds first; while developing run `npx tsc -p tsconfig.build.json`.
 */
export async function kiln(args: string[], opts: {cwd?: string; env?: Record<string, string | undefined>; input?: string; timeout?: number} = {}): Promise<KilnRun> {
  const r = await execa(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: {CI: 'true', NO_COLOR: '1', ...opts.env},
    reject: false,
    input: opts.input,
    timeout: opts.timeout ?? 300_000,
  })
  let json: unknown
  try {
    json = JSON.parse(r.stdout)
  } catch {
    json = undefined
  }
  return {exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr, json}
}
