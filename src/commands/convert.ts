import {Args, Flags} from '@oclif/core'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {UsageError} from '../errors.js'

export interface ConvertCommandResult {
  input: string
  output: string
  from: 'tfjs' | 'onnx'
  metrics: Record<string, unknown>
}

export default class Convert extends KilnCommand {
  static override summary = 'Convert a TF.js model (model.json) to ONNX, verified against TF.js; or upgrade an ONNX model.'
  static override description =
    'TF.js layers and graph models (with sharded, uint8- or float16-quantized weights) become one ONNX file. By default the result is run in onnxruntime and the source in TF.js on the same inputs, and the command fails if any output differs by more than --tolerance relative to its scale. An .onnx input is upgraded to --opset instead.'

  static override examples = [
    '<%= config.bin %> convert web_model/model.json -o model.onnx',
    '<%= config.bin %> convert model.json -o model.onnx --layout nchw --tolerance 1e-3 --images ./photos',
    '<%= config.bin %> convert model.json -o model.onnx --custom-op-domain com.example.tfjs --no-verify',
    '<%= config.bin %> convert old.onnx -o new.onnx --opset 17',
  ]

  static override args = {
    model: Args.string({description: 'TF.js model.json (or a folder holding one), or an .onnx file.', required: true}),
  }

  static override flags = {
    out: Flags.string({char: 'o', description: 'ONNX file to write.', required: true}),
    layout: Flags.string({description: 'Interface layout of image inputs and outputs (TF.js input).', options: ['nhwc', 'nchw'], default: 'nhwc'}),
    opset: Flags.integer({description: 'ONNX opset to target (default 17 for TF.js input; for ONNX input, the opset to upgrade to).'}),
    verify: Flags.boolean({description: 'Compare the result with TF.js on sample inputs.', default: true, allowNo: true}),
    tolerance: Flags.string({description: 'Largest allowed max abs error relative to each output\'s scale (default 1e-4).'}),
    samples: Flags.integer({description: 'Number of sample inputs for verification (default 4).', min: 1}),
    images: Flags.string({description: 'Folder of PNG/JPEG photos to feed image inputs during verification.'}),
    dataset: Flags.string({description: 'npz/npy file of verification inputs, named like the model inputs, in the ONNX interface layout.'}),
    'custom-op-domain': Flags.string({description: 'Keep unsupported ops as nodes in this custom-op domain instead of failing.'}),
  }

  async run(): Promise<ConvertCommandResult> {
    const {args, flags} = await this.parse(Convert)
    let input = path.resolve(args.model)
    const output = path.resolve(flags.out)
    const stat = await fsp.stat(input).catch(() => undefined)
    if (stat?.isDirectory()) input = path.join(input, 'model.json')
    if (input.endsWith('.onnx')) return this.upgradeOnnx(input, output, flags)
    const verifyOnly = (['tolerance', 'samples', 'images', 'dataset'] as const).filter((k) => flags[k] !== undefined)
    if (!flags.verify && verifyOnly.length) throw new UsageError(`--${verifyOnly.join(', --')} ${verifyOnly.length === 1 ? 'sets' : 'set'} up verification, which --no-verify turns off`, {tryMessage: 'Drop --no-verify, or drop those flags.'})
    const tolerance = flags.tolerance === undefined ? undefined : Number(flags.tolerance)
    if (tolerance !== undefined && (!Number.isFinite(tolerance) || tolerance <= 0)) throw new UsageError(`--tolerance must be a positive number, got '${flags.tolerance}'`, {tryMessage: 'For example --tolerance 1e-4.'})
    const {convertTfjs} = await import('../convert/tfjs/index.js')
    const r = await convertTfjs(input, output, {
      layout: flags.layout as 'nhwc' | 'nchw',
      opset: flags.opset,
      verify: flags.verify ? {tolerance, samples: flags.samples, images: flags.images && path.resolve(flags.images), dataset: flags.dataset && path.resolve(flags.dataset)} : false,
      customOpDomain: flags['custom-op-domain'],
      log: (m) => this.say(m),
    })
    this.say(`wrote ${output}`)
    return {input, output, from: 'tfjs', metrics: r.metrics}
  }

  private async upgradeOnnx(input: string, output: string, flags: {opset?: number; verify: boolean; layout: string; tolerance?: string; samples?: number; 'custom-op-domain'?: string; images?: string; dataset?: string}): Promise<ConvertCommandResult> {
    const tfjsOnly = ['custom-op-domain', 'images', 'dataset', 'tolerance', 'samples'].filter((k) => flags[k as keyof typeof flags] !== undefined)
    if (flags.layout !== 'nhwc') tfjsOnly.push('layout')
    if (!flags.verify) tfjsOnly.push('no-verify')
    if (tfjsOnly.length) throw new UsageError(`--${tfjsOnly.join(', --')} ${tfjsOnly.length === 1 ? 'applies' : 'apply'} only to TF.js input, and ${path.basename(input)} is ONNX`, {tryMessage: 'Drop those flags, or pass a TF.js model.json.'})
    const [{readModel, writeModel}, {upgradeModel}] = await Promise.all([import('../onnx/model.js'), import('../onnx/opset.js')])
    const model = await readModel(input)
    const r = upgradeModel(model, {opset: flags.opset})
    await writeModel(model, output)
    this.say(`opset ${r.fromOpset} → ${r.toOpset}; wrote ${output}`)
    return {input, output, from: 'onnx', metrics: {fromOpset: r.fromOpset, toOpset: r.toOpset, opsRewritten: r.rewritten}}
  }
}
