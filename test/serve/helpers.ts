import {type ChildProcess, spawn} from 'node:child_process'
import {createInterface} from 'node:readline'
import {BIN, ROOT} from '../helpers/cli.js'

export interface ServeProcess {
  url: string
  proc: ChildProcess
  /** Everything the server wrote to stderr so far (JSON log lines). */
  stderr(): string
  stdout(): string
  /** SIGTERM, then wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{code: number | null; stdout: string; stderr: string}>
}

/**
 * Start `kiln serve` as its own process (the built CLI, as a user runs it) on a free loopback port,
 * wait for the address line and for /v2/health/ready.
 */
export async function startServe(args: string[], env: Record<string, string | undefined> = {}): Promise<ServeProcess> {
  const proc = spawn(process.execPath, [BIN, 'serve', ...args, '--host', '127.0.0.1', '--port', '0'], {
    cwd: ROOT,
    env: {...process.env, CI: 'true', NO_COLOR: '1', KILN_SERVE_TOKEN: undefined, ...env},
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<{code: number | null}>((resolve) => proc.once('exit', (code) => resolve({code})))
  const url = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({input: proc.stdout!})
    const timer = setTimeout(() => reject(new Error(`kiln serve printed no address in 30 s; stderr:\n${err}`)), 30_000)
    rl.on('line', (line) => {
      out += `${line}\n`
      const m = /listening on (http:\/\/\S+)/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    void exited.then(({code}) => {
      clearTimeout(timer)
      reject(new Error(`kiln serve exited (${code}) before listening; stderr:\n${err}`))
    })
  })
  for (let i = 0; i < 300; i++) {
    const r = await fetch(`${url}/v2/health/ready`).catch(() => undefined)
    if (r?.status === 200) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    url,
    proc,
    stderr: () => err,
    stdout: () => out,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null) proc.kill(signal)
      const {code} = await exited
      return {code, stdout: out, stderr: err}
    },
  }
}

/** Parse the JSON log lines a server wrote. */
export function logLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Build a binary-extension infer body: JSON header, then the raw tensors in order. */
export function binaryBody(header: unknown, tensors: ArrayBufferView[]): {body: Buffer; headerLength: number} {
  const json = Buffer.from(JSON.stringify(header))
  return {body: Buffer.concat([json, ...tensors.map((t) => Buffer.from(t.buffer, t.byteOffset, t.byteLength))]), headerLength: json.length}
}

/** Split a binary-extension response into its JSON header and the bytes after it. */
export async function readBinaryResponse(res: Response): Promise<{header: any; tail: Buffer}> {
  const buf = Buffer.from(await res.arrayBuffer())
  const n = Number(res.headers.get('inference-header-content-length'))
  return {header: JSON.parse(buf.subarray(0, n).toString('utf8')), tail: buf.subarray(n)}
}
