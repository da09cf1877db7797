import {Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {InitResult} from '../pipeline/templates.js'

export default class Init extends KilnCommand {
  static override summary = 'Create a pipeline file (kiln.yaml) from a template.'
  static override description = `Templates: basic (convert, then publish to a local directory; works on any ONNX model), quantize (convert, quantize, publish) and full (convert, prune, quantize, evaluate, encrypt, sign, publish).

Never overwrites an existing file, or shadows another pipeline file in the directory, unless --force is given.`

  static override examples = [
    '<%= config.bin %> init --model ./models/fashion_cnn.onnx',
    '<%= config.bin %> init --template full --dir pipelines/fashion --model ../../models/fashion_cnn.onnx',
  ]

  static override flags = {
    template: Flags.string({char: 't', description: 'Template: basic, quantize or full.', default: 'basic'}),
    dir: Flags.string({char: 'd', description: 'Directory to write into (created when missing).', default: '.'}),
    model: Flags.string({char: 'm', description: 'Model path or URI to put in `model:` (a path is written relative to --dir).'}),
    force: Flags.boolean({description: 'Overwrite existing files.'}),
  }

  async run(): Promise<InitResult> {
    const {flags} = await this.parse(Init)
    // Loaded on demand so listing commands (`kiln --help`) stays fast.
    const {initPipeline} = await import('../pipeline/templates.js')
    const result = await initPipeline({template: flags.template, dir: flags.dir, model: flags.model, force: flags.force})
    const where = path.relative(process.cwd(), result.dir) || '.'
    for (const f of result.files) this.say(`created ${path.relative(process.cwd(), f) || f}`)
    if (result.modelFound === false) this.say(`note: ${result.model} does not exist yet (relative to ${where}); put the model there before \`kiln run\``)
    this.say(`next: kiln validate ${where === '.' ? '' : where}`.trimEnd())
    return result
  }
}
