import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {publishArtifact, type PublishResult} from '../delivery/publish.js'
import {resolveSecretRef} from '../delivery/secret.js'
import {UsageError} from '../errors.js'

export default class Publish extends KilnCommand {
  static override summary = 'Publish an artifact (file or directory) to one or more targets.'
  static override description = `Each target gets a new version folder that appears complete or not at all, then a 'latest' pointer. A target may use {run.id}, {pipeline.name}, {stage.id}, {artifact.sha256} and {date}; when its last segment has no placeholder, the run id is appended as the version.`
  static override examples = [
    '<%= config.bin %> publish .kiln/runs/latest/artifacts/sign --to ./published/{pipeline.name}/{date}-{artifact.sha256}/ --name fashion-cnn',
  ]

  static override args = {
    artifact: Args.string({description: 'Model file, or a directory produced by sign/encrypt.', required: true}),
  }

  static override flags = {
    to: Flags.string({description: 'Target URI (repeatable).', required: true, multiple: true}),
    name: Flags.string({description: 'Value of {pipeline.name} (default: the artifact name).'}),
    'run-id': Flags.string({description: 'Value of {run.id} and the default version (default: a UTC timestamp).'}),
    's3-endpoint': Flags.string({description: 'S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, else AWS).', helpGroup: 'S3'}),
    's3-region': Flags.string({description: 'S3 region (default: AWS_REGION, else us-east-1).', helpGroup: 'S3'}),
    's3-path-style': Flags.boolean({description: 'Address buckets by path (default: on with a custom endpoint).', allowNo: true, helpGroup: 'S3'}),
    'oip-token': Flags.string({description: 'Serving endpoint token as env:NAME (default: KILN_SERVE_TOKEN).', helpGroup: 'OIP'}),
    'oip-model': Flags.string({description: 'Model name when the oip+http URI has none (default: --name).', helpGroup: 'OIP'}),
  }

  async run(): Promise<PublishResult> {
    const {args, flags} = await this.parse(Publish)
    // Options for a kind of target that none of the targets is would be read by nothing.
    const kinds = [
      {prefix: 's3://', flags: ['s3-endpoint', 's3-region', 's3-path-style'] as const, what: 'an s3:// target'},
      {prefix: 'oip+http', flags: ['oip-token', 'oip-model'] as const, what: 'an oip+http(s):// target'},
    ]
    for (const kind of kinds) {
      const given = kind.flags.filter((f) => flags[f] !== undefined)
      if (given.length && !flags.to.some((t) => t.startsWith(kind.prefix))) {
        throw new UsageError(`--${given.join(', --')} ${given.length === 1 ? 'applies' : 'apply'} to ${kind.what}, and none of --to is one`, {tryMessage: 'Drop them, or add such a target.'})
      }
    }
    const artifact = path.resolve(args.artifact)
    const runId = flags['run-id'] ?? new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
    const result = await publishArtifact(artifact, {
      to: flags.to,
      baseDir: process.cwd(),
      vars: {'run.id': runId, 'pipeline.name': flags.name ?? path.basename(artifact).replace(/\.[^.]+$/, ''), 'stage.id': 'publish'},
      secret: resolveSecretRef,
      s3: {endpoint: flags['s3-endpoint'], region: flags['s3-region'], forcePathStyle: flags['s3-path-style']},
      oip: {token: flags['oip-token'], model: flags['oip-model']},
    })
    for (const t of result.targets) this.say(`${t.status}: ${t.uri} (${t.files} file(s), ${t.bytes} bytes, ${t.seconds.toFixed(2)} s)`)
    return result
  }
}
