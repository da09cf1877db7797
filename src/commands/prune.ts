import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {PruneFileResult} from '../compress/prune.js'
import {UsageError} from '../errors.js'

function ratioFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${value}'`, {code: 'E_USAGE', tryMessage: `e.g. --${name} 0.5`})
  return n
}

export default class Prune extends KilnCommand {
  static override summary = 'Prune an ONNX model: unstructured magnitude, N:M, or structured channels.'
  static override description =
    'Writes the pruned model to --output and reports sparsity per layer and overall, parameters, FLOPs (channel), and sizes raw and with zstd. With --eval, a sensitivity analysis picks per-layer ratios that keep the accuracy drop within --max-accuracy-drop.'
  static override examples = [
    '<%= config.bin %> prune model.onnx -o pruned.onnx --sparsity 0.5',
    '<%= config.bin %> prune model.onnx -o pruned.onnx --method nm --pattern 2:4 --protect-first-last',
    '<%= config.bin %> prune model.onnx -o pruned.onnx --method channel --sparsity 0.3 --criterion l2',
    '<%= config.bin %> prune model.onnx -o pruned.onnx --sparsity 0.6 --eval test.npz --max-accuracy-drop 0.01',
  ]

  static override args = {
    model: Args.string({description: 'ONNX model to prune.', required: true}),
  }

  static override flags = {
    output: Flags.string({char: 'o', description: 'Where to write the pruned model.', required: true}),
    sparsity: Flags.string({char: 's', description: 'Fraction to remove, in [0, 1) (weights; channels for --method channel).'}),
    method: Flags.string({description: 'Pruning method.', options: ['magnitude', 'nm', 'channel'], default: 'magnitude'}),
    scope: Flags.string({description: 'One global threshold, or the same sparsity in every layer.', options: ['global', 'layer']}),
    pattern: Flags.string({description: 'N:M pattern for --method nm (keep N of every M); default 2:4.'}),
    criterion: Flags.string({description: 'Channel importance for --method channel; default l1.', options: ['l1', 'l2']}),
    'channel-multiple': Flags.integer({description: 'With --method channel: round kept channel counts to a multiple of this (default 16, the channel block of CPU conv kernels; 1 = exact ratio).'}),
    'protect-first-last': Flags.boolean({description: 'Leave the first and last prunable layers dense.'}),
    override: Flags.string({description: 'Per-layer sparsity, LAYER=RATIO (layer or weight name); repeatable.', multiple: true}),
    eval: Flags.string({description: 'NPZ dataset for sensitivity-guided pruning (labels give accuracy, else agreement).', dependsOn: ['max-accuracy-drop']}),
    'max-accuracy-drop': Flags.string({description: 'Largest accepted accuracy drop with --eval, as a fraction (0.01 = one point).', dependsOn: ['eval']}),
    samples: Flags.integer({description: 'Samples evaluated per sensitivity probe with --eval (default 256).', dependsOn: ['eval']}),
  }

  async run(): Promise<PruneFileResult & {output: string}> {
    const {args, flags} = await this.parse(Prune)
    const {pruneFile} = await import('../compress/prune.js')
    const overrides: Record<string, number> = {}
    for (const o of flags.override ?? []) {
      const eq = o.lastIndexOf('=')
      if (eq <= 0) throw new UsageError(`--override must be LAYER=RATIO, got '${o}'`, {tryMessage: '--override conv1=0.2'})
      overrides[o.slice(0, eq)] = ratioFlag(o.slice(eq + 1), 'override')!
    }
    const output = path.resolve(flags.output)
    const evalPath = flags.eval ? path.resolve(flags.eval) : undefined
    const r = await pruneFile(path.resolve(args.model), output, {
      method: flags.method as 'magnitude' | 'nm' | 'channel',
      sparsity: ratioFlag(flags.sparsity, 'sparsity'),
      scope: flags.scope as 'global' | 'layer' | undefined,
      pattern: flags.pattern,
      criterion: flags.criterion as 'l1' | 'l2' | undefined,
      channelMultiple: flags['channel-multiple'],
      protectFirstLast: flags['protect-first-last'],
      overrides: Object.keys(overrides).length ? overrides : undefined,
      eval: evalPath
        ? {dataset: {name: path.basename(evalPath), path: evalPath}, maxAccuracyDrop: ratioFlag(flags['max-accuracy-drop'], 'max-accuracy-drop')!, samples: flags.samples}
        : undefined,
    }, {log: (m) => this.say(m)})
    this.say(`${r.method}: sparsity ${r.sparsity.toFixed(3)} over ${r.layers.length} layers; nonzero params ${r.params.before.nonzero} → ${r.params.after.nonzero}`)
    if (r.flops) this.say(`FLOPs ${r.flops.before} → ${r.flops.after} (${(r.flops.after / r.flops.before).toFixed(3)}×)`)
    if (r.channel?.skipped.length) this.say(`left whole: ${r.channel.skipped.map((s) => `${s.layer} (blocked by ${s.blockedBy})`).join(', ')}`)
    this.say(`size ${r.sizes.before.raw} → ${r.sizes.after.raw} bytes; with zstd ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes → ${output}`)
    return {...r, output}
  }
}
