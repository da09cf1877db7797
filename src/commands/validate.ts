import {Args} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'

/** `kiln validate --json` result. */
export interface ValidateResult {
  valid: true
  /** Absolute path of the pipeline file. */
  file: string
  name: string
  /** Absolute model path, or the URI as written. */
  model: string
  target: string
  stages: {id: string; uses: string}[]
  datasets: {name: string; path: string}[]
  /** The file's own hardware profiles. */
  profiles: string[]
}

export default class Validate extends KilnCommand {
  static override summary = 'Check a pipeline file without running it.'
  static override description = `Reports every problem at once, each as file:line:col with what was expected and a suggestion: YAML syntax, unknown keys, wrong types, unknown stage kinds, stage parameters (checked by each stage's own schema), references to undeclared datasets, profiles or stages, duplicate stage ids, custom stage modules that fail to load, and unset environment variables in \${env:NAME}.

Exits 0 when the file is valid and 2 when it is not (also under --json, which then prints {error: {issues}}).`

  static override examples = [
    '<%= config.bin %> validate',
    '<%= config.bin %> validate examples/quickstart/kiln.yaml --json',
  ]

  static override args = {
    file: Args.string({description: 'Pipeline file or its directory (default: kiln.yaml or .kilnrc* found from the current directory upward).'}),
  }

  async run(): Promise<ValidateResult> {
    const {args} = await this.parse(Validate)
    // Loaded on demand so listing commands (`kiln --help`) does not pay for zod and yaml.
    const {loadPipeline} = await import('../pipeline/loader.js')
    const pipeline = await loadPipeline(args.file)
    const shown = path.relative(process.cwd(), pipeline.file) || pipeline.file
    this.say(`${shown} is valid: '${pipeline.name}', ${pipeline.stages.length} stage(s): ${pipeline.stages.map((s) => s.id).join(' → ')}`)
    return {
      valid: true,
      file: pipeline.file,
      name: pipeline.name,
      model: pipeline.model,
      target: pipeline.target,
      stages: pipeline.stages.map((s) => ({id: s.id, uses: s.uses})),
      datasets: Object.values(pipeline.datasets).map((d) => ({name: d.name, path: d.path})),
      profiles: Object.keys(pipeline.profiles),
    }
  }
}
