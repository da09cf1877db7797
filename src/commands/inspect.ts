import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {InspectResult} from '../onnx/inspect.js'

export default class Inspect extends KilnCommand {
  static override summary = 'Describe an ONNX model: IR and opsets, inputs/outputs, ops, parameters, sparsity, sizes.'
  static override description =
    'Parameters count every weight wherever it lives: initializers and Constant nodes, in the main graph and in If/Loop/Scan subgraphs. Sparsity is the fraction of exact zeros in float weights. The zstd size is what the delivered artifact compresses to.'
  static override examples = ['<%= config.bin %> inspect model.onnx', '<%= config.bin %> inspect model.onnx --json --top 5']

  static override args = {
    model: Args.string({description: 'Path to the .onnx file (external data is read from beside it).', required: true}),
  }

  static override flags = {
    top: Flags.integer({description: 'How many of the largest weight tensors to list.', default: 10, min: 0}),
    'compressed-size': Flags.boolean({description: 'Measure the zstd-compressed size.', default: true, allowNo: true}),
  }

  async run(): Promise<InspectResult> {
    const {args, flags} = await this.parse(Inspect)
    // Loaded here, not at the top: `kiln --help` imports every command module and must stay fast.
    const [{inspectModel}, {formatInspect}] = await Promise.all([import('../onnx/inspect.js'), import('../onnx/inspect-format.js')])
    const result = await inspectModel(path.resolve(args.model), {largest: flags.top, compressedSize: flags['compressed-size']})
    if (!this.jsonEnabled()) this.say(formatInspect(result))
    return result
  }
}
