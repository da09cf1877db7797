import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {EvaluateResult} from '../eval/evaluate.js'

export default class Eval extends KilnCommand {
  static override summary = 'Evaluate a model on a labelled dataset, optionally against a baseline model.'
  static override description =
    'Reads NPZ/NPY, IDX, CSV, JSONL or an image folder. An NPZ whose arrays are named after the model inputs, plus `label` or `labels`, needs no mapping.'
  static override examples = [
    '<%= config.bin %> eval model.onnx --dataset test.npz --json',
    '<%= config.bin %> eval int8.onnx --dataset test.npz --baseline fp32.onnx --metrics accuracy,top5,agreement',
    '<%= config.bin %> eval face.onnx --dataset faces.npz --output scores --activation sigmoid --positive-class 1 --metrics accuracy,auc',
  ]

  static override args = {model: Args.string({description: 'ONNX model to evaluate.', required: true})}

  static override flags = {
    dataset: Flags.string({char: 'd', description: 'Dataset file or image folder.', required: true}),
    baseline: Flags.string({char: 'b', description: 'Model to compare with (agreement, cosine, accuracy drop).'}),
    metrics: Flags.string({char: 'm', description: 'Comma-separated metrics: accuracy, topK, precision, recall, f1, auc, mse, mae, agreement, cosine, outputError, or ./metric.js.'}),
    batch: Flags.integer({description: 'Batch size (default 32, or the model\'s fixed batch).', min: 1}),
    limit: Flags.integer({description: 'Use at most this many samples.', min: 1}),
    shuffle: Flags.boolean({description: 'Shuffle before taking --limit samples.'}),
    seed: Flags.integer({description: 'Seed for --shuffle.', dependsOn: ['shuffle']}),
    format: Flags.string({description: 'Dataset format (default: from the extension).', options: ['npz', 'npy', 'idx', 'csv', 'jsonl', 'images']}),
    labels: Flags.string({description: 'Field (or column, or labels file) holding the labels.'}),
    input: Flags.string({description: 'Map a model input to a dataset field: INPUT=FIELD (repeatable).', multiple: true}),
    scale: Flags.string({description: 'Preprocess: multiply values by this (e.g. 0.00392156862745098).'}),
    dtype: Flags.string({description: 'Preprocess: element type of the model input.', options: ['float32', 'float16', 'uint8', 'int8', 'int32', 'int64']}),
    layout: Flags.string({description: 'Preprocess: layout the model expects.', options: ['NCHW', 'NHWC']}),
    resize: Flags.string({description: 'Preprocess: resize to H,W (or one number for a square).'}),
    crop: Flags.string({description: 'Preprocess: centre-crop to H,W after resizing.'}),
    mean: Flags.string({description: 'Preprocess: subtract (one value or one per channel, comma-separated).'}),
    std: Flags.string({description: 'Preprocess: divide by (one value or one per channel, comma-separated).'}),
    profile: Flags.string({description: 'Hardware profile for the sessions.', default: 'cpu-2t'}),
    task: Flags.string({description: 'How outputs relate to labels.', options: ['classification', 'binary', 'regression']}),
    output: Flags.string({description: 'Output(s) the metrics read, comma-separated (default the first).'}),
    reduce: Flags.string({description: 'Binary: reduce a sample\'s outputs to one score.', options: ['max', 'mean', 'first']}),
    activation: Flags.string({description: 'Binary: activation applied to the score.', options: ['none', 'sigmoid']}),
    'positive-class': Flags.integer({description: 'Binary: label of the positive class.'}),
    threshold: Flags.string({description: 'Binary: decision threshold (default 0.5).'}),
  }

  async run(): Promise<EvaluateResult> {
    const {args, flags} = await this.parse(Eval)
    const [{evaluateModel}, {getProfile}, {UsageError}] = await Promise.all([import('../eval/evaluate.js'), import('../runtime/profiles.js'), import('../errors.js')])
    const num = (name: string, v?: string) => {
      if (v === undefined) return undefined
      const n = Number(v)
      if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`)
      return n
    }
    const inputs = flags.input?.length
      ? Object.fromEntries(
          flags.input.map((m) => {
            const [k, v] = m.split('=')
            if (!k || !v) throw new UsageError(`--input expects INPUT=FIELD, got '${m}'`)
            return [k, v]
          }),
        )
      : undefined
    const list = (name: string, v?: string) => {
      if (v === undefined) return undefined
      const xs = v.split(',').map((x) => num(name, x.trim())!)
      return xs.length === 1 ? xs[0] : xs
    }
    const preprocess = Object.fromEntries(
      Object.entries({
        scale: num('scale', flags.scale),
        dtype: flags.dtype,
        layout: flags.layout,
        resize: list('resize', flags.resize),
        crop: list('crop', flags.crop),
        mean: list('mean', flags.mean),
        std: list('std', flags.std),
      }).filter(([, v]) => v !== undefined),
    )
    const file = path.resolve(flags.dataset)
    const result = await evaluateModel({
      model: path.resolve(args.model),
      baseline: flags.baseline ? path.resolve(flags.baseline) : undefined,
      dataset: {
        name: path.basename(file),
        path: file,
        ...(flags.format ? {format: flags.format} : {}),
        ...(flags.labels ? {labels: flags.labels} : {}),
        ...(inputs ? {inputs} : {}),
        ...(flags.limit ? {limit: flags.limit} : {}),
        ...(flags.shuffle ? {shuffle: true, seed: flags.seed ?? 0} : {}),
        ...(Object.keys(preprocess).length ? {preprocess} : {}),
      },
      metrics: flags.metrics?.split(',').map((s) => s.trim()).filter(Boolean),
      batchSize: flags.batch,
      profile: getProfile(flags.profile),
      baseDir: process.cwd(),
      task: flags.task as 'binary' | undefined,
      outputs: flags.output?.split(',').map((s) => s.trim()),
      reduce: flags.reduce as 'max' | undefined,
      activation: flags.activation as 'sigmoid' | undefined,
      positiveClass: flags['positive-class'],
      threshold: num('threshold', flags.threshold),
    })
    const width = Math.max(...Object.keys(result.metrics).map((k) => k.length), 8)
    this.say(`${result.samples} samples in ${result.seconds.toFixed(2)} s (${Math.round(result.samplesPerSecond)}/s)`)
    for (const [k, v] of Object.entries(result.metrics)) this.say(`  ${k.padEnd(width)}  ${Number.isInteger(v) ? v : v.toFixed(4)}`)
    return result
  }
}
