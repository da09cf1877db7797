import {Args, Flags} from '@oclif/core'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {DataKeySource} from '../delivery/encrypt.js'
import {UsageError} from '../errors.js'
import {registerSecret} from '../util/redact.js'

export interface ServeResult {
  url: string
  /** Whether every in-flight request finished before the drain timeout. */
  drained: boolean
  /** Requests cut off when the drain timeout passed. */
  abandoned: number
}

export default class Serve extends KilnCommand {
  static override summary = 'Serve ONNX models over the Open Inference Protocol (KServe v2 / Triton HTTP).'
  static override description = `Loads every model of a folder (one model per .onnx file, or version folders as \`kiln publish\` writes them) or an s3:// prefix, and answers health, metadata, infer (JSON and the binary tensor extension), the model repository API (load/unload/index, protected by --token) and /metrics. With --pub, only signed versions that verify are loaded; with --key, encrypted models are decrypted in memory. Logs are JSON lines on stderr. SIGINT/SIGTERM stop accepting, finish the requests in flight and exit.`

  static override examples = [
    '<%= config.bin %> serve ./published/fashion-cnn --port 8000 --pub keys/signing.pub --key keys/data.key --token env:KILN_SERVE_TOKEN',
    '<%= config.bin %> serve ./models --port 0 --pool 2',
  ]

  static override args = {
    repository: Args.string({description: 'Folder of models, a folder `publish` wrote, or s3://bucket/prefix/. Omit to start empty and load models through the repository API.'}),
  }

  static override flags = {
    host: Flags.string({description: 'Interface to listen on.', default: '127.0.0.1'}),
    port: Flags.integer({description: 'Port; 0 picks a free one (the address is printed).', default: 8000, min: 0, max: 65535}),
    token: Flags.string({description: 'Token for the model repository API (Bearer or X-API-Key); or env:NAME. Default: $KILN_SERVE_TOKEN.'}),
    key: Flags.string({description: 'Data key for encrypted models: data.key path, env:NAME or passphrase:env:NAME. Decrypted in memory only.'}),
    pub: Flags.string({description: 'Ed25519 public key (signing.pub): refuse any model version whose signature does not verify.'}),
    pool: Flags.integer({description: 'Inference workers: requests that run at once. 0 runs inference on the HTTP thread itself: the least overhead per request for small fast models, but health checks and metrics wait while a model runs.', default: 1, min: 0}),
    threads: Flags.integer({description: 'onnxruntime intra-op threads per worker (default: cores / pool).', min: 1}),
    'max-queue': Flags.integer({description: 'Requests that may wait for a worker, beyond those the workers hold (each takes up to 10 ms of runs, at most 16); bodies still arriving count. Beyond it the answer is 429 with Retry-After, before the body is read.', default: 64, min: 0}),
    'max-body': Flags.integer({description: 'Largest request body in bytes (413 beyond).', default: 64 * 1024 * 1024, min: 1024}),
    'drain-timeout': Flags.integer({description: 'Seconds shutdown waits for in-flight requests.', default: 30, min: 0}),
    's3-endpoint': Flags.string({description: 'S3 endpoint URL for an s3:// repository (default: AWS_ENDPOINT_URL_S3 / AWS).'}),
    's3-region': Flags.string({description: 'S3 region (default: AWS_REGION, else us-east-1).'}),
    's3-path-style': Flags.boolean({description: 'Address buckets by path (default: on with a custom endpoint).', allowNo: true}),
  }

  async run(): Promise<ServeResult> {
    const {args, flags} = await this.parse(Serve)
    const s3Flags = (['s3-endpoint', 's3-region', 's3-path-style'] as const).filter((f) => flags[f] !== undefined)
    if (s3Flags.length > 0 && !args.repository?.startsWith('s3://')) {
      throw new UsageError(`${s3Flags.map((f) => `--${f}`).join(', ')} ${s3Flags.length > 1 ? 'apply' : 'applies'} to an s3:// repository, not ${args.repository ?? 'an empty server'}`, {tryMessage: 'Drop them, or serve s3://bucket/prefix/.'})
    }
    const {resolveSecretRef} = await import('../delivery/secret.js')
    const token = flags.token ? resolveSecretRef(flags.token) : process.env.KILN_SERVE_TOKEN || undefined
    if (token !== undefined) {
      if (token.length < 8) throw new UsageError('the repository token must be at least 8 characters', {tryMessage: 'Use a long random token, e.g. `openssl rand -hex 24`.'})
      registerSecret(token)
    }
    let publicKeyPem: string | undefined
    if (flags.pub) {
      try {
        publicKeyPem = await fsp.readFile(path.resolve(flags.pub), 'utf8')
      } catch (error) {
        throw new UsageError(`cannot read the public key ${flags.pub}: ${(error as Error).message}`, {tryMessage: 'Pass the signing.pub that `kiln keys generate` wrote.'})
      }
      const {parsePublicKey} = await import('../delivery/keys.js')
      parsePublicKey(publicKeyPem, flags.pub)
    }

    let dataKey: DataKeySource | undefined
    if (flags.key) {
      const {resolveDataKey} = await import('../delivery/encrypt.js')
      dataKey = await resolveDataKey(flags.key)
    }

    const {serve} = await import('../delivery/serve/index.js')
    const server = await serve({
      repository: args.repository,
      host: flags.host,
      port: flags.port,
      token,
      pool: flags.pool,
      threads: flags.threads,
      maxQueue: flags['max-queue'],
      maxBody: flags['max-body'],
      drainTimeoutSeconds: flags['drain-timeout'],
      s3: {endpoint: flags['s3-endpoint'], region: flags['s3-region'], forcePathStyle: flags['s3-path-style']},
      security: {publicKeyPem, dataKey},
      logLevel: flags.verbose ? 'debug' : 'info',
      version: this.config.version,
      onListening: (url) => this.say(`kiln serve listening on ${url}`),
    })

    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'))
      process.once('SIGTERM', () => resolve('SIGTERM'))
    })
    process.stderr.write(`${JSON.stringify({time: new Date().toISOString(), level: 'info', msg: 'shutting down', signal})}\n`)
    const closed = await server.close()
    // Requests still running when the drain timeout passed had their connections closed: say how many.
    const level = closed.drained ? 'info' : 'warn'
    process.stderr.write(`${JSON.stringify({time: new Date().toISOString(), level, msg: 'stopped', drained: closed.drained, abandoned: closed.inflight})}\n`)
    return {url: server.url, drained: closed.drained, abandoned: closed.inflight}
  }
}
