import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {QuantizeReport} from '../compress/quant/index.js'
import {CALIBRATION_METHODS} from '../compress/quant/options.js'
import type {CalibrationMethod} from '../compress/quant/options.js'
import {UsageError} from '../errors.js'
import {getProfile} from '../runtime/profiles.js'
import type {DatasetSpec} from '../stages/types.js'

function datasetFromPath(file: string): DatasetSpec {
  return {name: path.basename(file), path: path.resolve(file)}
}

export default class Quantize extends KilnCommand {
  static override summary = 'Quantize an ONNX model: dynamic or static int8, fp16 or int4.'
  static override description = `Pre-processes the graph (BatchNormalization folding), quantizes, then measures: against fp32 on --eval data, and A/B latency against the input on --profile. By default the result is never slower than the input: when every quantized variant is, the input is written unchanged and the reason is printed.`
  static override examples = [
    '<%= config.bin %> quantize model.onnx -o model.int8.onnx --mode static --calibration calib.npz --method percentile',
    '<%= config.bin %> quantize model.onnx -o model.int8.onnx --mode static --calibration calib.npz --eval test.npz --max-accuracy-drop 0.005',
    '<%= config.bin %> quantize llm.onnx -o llm.int4.onnx --mode int4 --block-size 32 --algorithm hqq',
    '<%= config.bin %> quantize llm.onnx -o llm.int4.onnx --mode int4 --block-size 128 --algorithm gptq --calibration prompts.npz',
  ]

  static override args = {
    model: Args.string({description: 'Input ONNX model.', required: true}),
  }

  static override flags = {
    output: Flags.string({char: 'o', description: 'Output ONNX model path.', required: true}),
    mode: Flags.string({description: 'Quantization mode.', options: ['dynamic', 'static', 'fp16', 'int4'], required: true}),
    calibration: Flags.string({description: 'Calibration data (.npz whose arrays are named after the model inputs) for static mode and int4 GPTQ; with fp16, tensors whose values exceed float16\'s range stay float32.'}),
    method: Flags.string({description: 'Calibration method (static). average: each sample\'s own range, averaged, so that a few extreme samples do not set it. Unset: minmax and average are both checked on the calibration samples, and the one closer to the float model is kept.', options: [...CALIBRATION_METHODS]}),
    percentile: Flags.string({description: 'Percentile of |x| kept by --method percentile (default 99.999).'}),
    'per-channel': Flags.boolean({description: 'Per-channel weights (static, dynamic; default on).', allowNo: true}),
    activations: Flags.string({description: 'Activation type for static mode (default uint8: U8S8).', options: ['uint8', 'int8']}),
    symmetric: Flags.boolean({description: 'Symmetric activations (static) or weights (int4, default on).', allowNo: true}),
    'block-size': Flags.integer({description: 'int4 block size along K (default 32).', options: ['32', '64', '128'] as never}),
    algorithm: Flags.string({description: 'int4 method: round to nearest (default), HQQ (data-free), or GPTQ (needs --calibration).', options: ['rtn', 'hqq', 'gptq']}),
    exclude: Flags.string({description: 'Keep matching nodes in float: name, op type, op:Type, glob or /regex/ (repeatable).', multiple: true}),
    eval: Flags.string({description: 'Evaluation data (.npz with a labels/label array for accuracy).'}),
    'max-accuracy-drop': Flags.string({description: 'Largest accepted accuracy drop as a fraction (0.005 = half a point); needs --eval.'}),
    profile: Flags.string({description: 'Hardware profile for the latency A/B.', default: 'cpu-2t'}),
    'allow-slower': Flags.boolean({description: 'Ship the quantized model even when it is slower than the input.'}),
    preprocess: Flags.boolean({description: 'Fold BatchNormalization and drop Identity/Dropout first.', allowNo: true, default: true}),
    'keep-io-types': Flags.boolean({description: 'fp16: keep float32 inputs and outputs (default on).', allowNo: true}),
    'block-list': Flags.string({description: 'fp16: op type kept in float32 (repeatable; replaces the default list).', multiple: true}),
    'batch-size': Flags.integer({description: 'Samples per calibration/evaluation batch (free batch dimension only).', default: 16, min: 1}),
  }

  async run(): Promise<QuantizeReport> {
    const {args, flags} = await this.parse(Quantize)
    const num = (name: string, v: string | undefined, lo: number, hi: number): number | undefined => {
      if (v === undefined) return undefined
      const n = Number(v)
      if (!Number.isFinite(n) || n < lo || n > hi) throw new UsageError(`--${name} must be a number from ${lo} to ${hi}, got '${v}'`, {tryMessage: name === 'max-accuracy-drop' ? 'e.g. --max-accuracy-drop 0.005 for half a point' : undefined})
      return n
    }
    if (flags.mode === 'static' && !flags.calibration) throw new UsageError('--mode static needs --calibration DATA.npz', {tryMessage: 'Give 100–500 representative samples, or use --mode dynamic.'})
    if (flags.mode === 'int4' && flags.algorithm === 'gptq' && !flags.calibration) throw new UsageError('--algorithm gptq needs --calibration DATA.npz', {tryMessage: 'Give a few hundred representative samples, or use --algorithm rtn or hqq, which need no data.'})
    if (flags['max-accuracy-drop'] !== undefined && !flags.eval) throw new UsageError('--max-accuracy-drop needs --eval DATA.npz')
    const {describeComparison, quantizeModel} = await import('../compress/quant/index.js')
    const report = await quantizeModel({
      input: path.resolve(args.model),
      output: path.resolve(flags.output),
      mode: flags.mode as QuantizeReport['mode'],
      calibration: flags.calibration ? datasetFromPath(flags.calibration) : undefined,
      method: flags.method as CalibrationMethod | undefined,
      percentile: num('percentile', flags.percentile, 50, 100),
      perChannel: flags['per-channel'],
      activations: flags.activations as 'uint8' | undefined,
      symmetric: flags.symmetric,
      blockSize: flags['block-size'],
      algorithm: flags.algorithm as 'rtn',
      exclude: flags.exclude,
      eval: flags.eval ? datasetFromPath(flags.eval) : undefined,
      maxAccuracyDrop: num('max-accuracy-drop', flags['max-accuracy-drop'], 0, 1),
      profile: getProfile(flags.profile),
      neverSlower: !flags['allow-slower'],
      preprocess: flags.preprocess,
      keepIOTypes: flags['keep-io-types'],
      blockList: flags['block-list'],
      batchSize: flags['batch-size'],
      progress: (m) => flags.verbose && this.say(m),
      log: (m) => flags.verbose && this.say(m),
    })
    this.say(report.message)
    this.say(`size ${report.inputBytes} → ${report.outputBytes} bytes (${report.sizeRatio.toFixed(3)}×) in ${report.seconds.toFixed(1)} s`)
    for (const c of report.candidates) {
      const lat = c.latency?.map((l) => `batch ${l.batch}: ${l.speedup.toFixed(2)}×`).join(', ')
      this.say(`  ${c.accepted ? '✓' : '✗'} ${c.name}: ${c.reason}${lat ? ` [${lat}]` : ''}`)
    }
    if (report.accuracy) {
      const agreement = `agreement ${(report.accuracy.agreement * 100).toFixed(2)}%`
      this.say(report.accuracy.fp32 === undefined ? `${agreement} with the float model (the evaluation data has no labels)` : `accuracy fp32 ${report.accuracy.fp32} → ${report.accuracy.quantized ?? '-'}, ${agreement}`)
    }
    if (report.fallback.length) {
      // The most harmful units fall back first: the table's head names them, with the output SQNR each gives alone.
      const worst = (report.sensitivity ?? []).slice(0, Math.min(3, report.fallback.length)).map((r) => `${r.node} (${r.sqnrDb.toFixed(1)} dB alone)`)
      this.say(`kept in float for accuracy: ${report.fallback.length}${worst.length ? `, the most harmful ${worst.join(', ')}` : ''} (see --json for the sensitivity table)`)
    }
    // (With --verbose the library's log has said it already.)
    if (report.calibration?.compared && !flags.verbose) this.say(`calibration: ${describeComparison(report.calibration.compared, report.calibration.method as CalibrationMethod)}`)
    if (report.calibrationCheck) {
      const c = report.calibrationCheck
      this.say(`against the float model on ${c.samples} calibration samples: ${(c.agreement * 100).toFixed(1)}% agreement, output SQNR ${c.sqnrDb.toFixed(1)} dB`)
    }
    const losing = (report.nodeTimings ?? []).filter((t) => t.int8Us > t.floatUs)
    if (losing.length) {
      const worst = losing.sort((a, b) => b.int8Us / b.floatUs - a.int8Us / a.floatUs).slice(0, 3)
      this.say(`slower in int8 alone: ${losing.length} of ${report.nodeTimings!.length} ops, the most ${worst.map((t) => `${t.node} (${(t.int8Us / t.floatUs).toFixed(1)}×)`).join(', ')} (see --json for every op's timing)`)
    }
    return report
  }
}
