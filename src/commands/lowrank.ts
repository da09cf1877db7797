import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {LowrankFileResult} from '../compress/lowrank.js'

export default class Lowrank extends KilnCommand {
  static override summary = 'Factorise MatMul/Gemm weights into two smaller MatMuls (truncated SVD).'
  static override description =
    'Give exactly one of --rank, --energy or --max-error. A layer is factorised only where both its parameters and its FLOPs drop; the report gives the rank and relative error of each layer.'
  static override examples = [
    '<%= config.bin %> lowrank model.onnx -o small.onnx --rank 32',
    '<%= config.bin %> lowrank model.onnx -o small.onnx --energy 0.95',
    '<%= config.bin %> lowrank model.onnx -o small.onnx --max-error 0.1',
  ]

  static override args = {
    model: Args.string({description: 'ONNX model to factorise.', required: true}),
  }

  static override flags = {
    output: Flags.string({char: 'o', description: 'Where to write the factorised model.', required: true}),
    rank: Flags.integer({description: 'Singular values kept per layer.', exactlyOne: ['rank', 'energy', 'max-error']}),
    energy: Flags.string({description: 'Fraction of the energy (σ²) kept per layer, in (0, 1].', exactlyOne: ['rank', 'energy', 'max-error']}),
    'max-error': Flags.string({description: 'Per-layer budget on the relative Frobenius error, in (0, 1).', exactlyOne: ['rank', 'energy', 'max-error']}),
    exclude: Flags.string({description: 'Layer or weight name to leave alone; repeatable.', multiple: true}),
  }

  async run(): Promise<LowrankFileResult & {output: string}> {
    const {args, flags} = await this.parse(Lowrank)
    const {lowrankFile} = await import('../compress/lowrank.js')
    const output = path.resolve(flags.output)
    const r = await lowrankFile(path.resolve(args.model), output, {
      rank: flags.rank,
      energy: flags.energy === undefined ? undefined : Number(flags.energy),
      maxError: flags['max-error'] === undefined ? undefined : Number(flags['max-error']),
      exclude: flags.exclude,
    })
    for (const l of r.layers) this.say(`  ${l.layer} [${l.shape.join('×')}]: ${l.rank === undefined ? `kept (${l.skipped})` : `rank ${l.rank}, error ${l.error!.toFixed(4)}`}`)
    this.say(`factorised ${r.factorised}/${r.layers.length} layers; params ${r.params.before} → ${r.params.after}; zstd ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes → ${output}`)
    return {...r, output}
  }
}
