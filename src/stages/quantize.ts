import path from 'node:path'
import {z} from 'zod'
import {CALIBRATION_METHODS, misappliedOptions} from '../compress/quant/options.js'
import type {CalibrationMethod} from '../compress/quant/options.js'
import {defineStage} from './types.js'

const datasetRef = z.string().min(1)

const schema = z.strictObject({
  mode: z.enum(['dynamic', 'static', 'fp16', 'int4']).describe('`dynamic` (int8 weights, run-time activations), `static` (QDQ, calibrated), `fp16`, or `int4` (MatMulNBits). A key that the mode does not read is refused.'),
  calibration: z
    .union([
      datasetRef.transform((dataset): {dataset: string; method?: CalibrationMethod; percentile?: number} => ({dataset})),
      z.strictObject({
        dataset: datasetRef,
        method: z.enum(CALIBRATION_METHODS).optional().describe('`minmax`, `percentile`, `entropy` (KL divergence) or `average` (each sample\'s own range, averaged, so that a few extreme samples do not set it). Unset: `minmax` and `average` are both checked on the calibration samples, and the one closer to the float model is kept.'),
        percentile: z.number().gt(50).max(100).optional().describe('Percentile of |x| kept by `percentile`. Default 99.999.'),
      }),
    ])
    .optional().describe('Calibration dataset name (static, int4 GPTQ; fp16 keeps tensors whose values exceed float16\'s range in float32; dynamic and int4 also time the latency A/B on its samples), or `{dataset, method, percentile}`.'),
  perChannel: z.boolean().optional().describe('Per-channel weights (static, dynamic). Default true.'),
  activations: z.enum(['uint8', 'int8']).optional().describe('Activation type for static mode. Default uint8 (U8S8, fastest on x86).'),
  symmetric: z.boolean().optional().describe('Symmetric activations (static) or symmetric weights (int4, default true).'),
  blockSize: z.union([z.literal(32), z.literal(64), z.literal(128)]).optional().describe('int4 block size along K. Default 32.'),
  algorithm: z.enum(['rtn', 'hqq', 'gptq']).optional().describe('int4 method: round to nearest (default), HQQ (data-free, asymmetric), or GPTQ (needs `calibration`).'),
  accuracyLevel: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3), z.literal(4)]).optional().describe('int4 MatMulNBits accuracy_level: 4 (default) = int8 compute on CPU (fastest), 0 = float compute.'),
  exclude: z.union([z.string().min(1).transform((s) => [s]), z.array(z.string().min(1))]).default([]).describe('Nodes kept in float: node name, op type, `op:Type`, glob or /regex/.'),
  preprocess: z.boolean().default(true).describe('Fold BatchNormalization, drop Identity/Dropout before quantizing. Default true.'),
  eval: datasetRef.optional().describe('Evaluation dataset name: accuracy and agreement with fp32 are measured on it.'),
  maxAccuracyDrop: z.number().min(0).max(1).optional().describe('Largest accepted accuracy drop (0.005 = half a point); needs `eval`. Sensitive parts fall back to float until it holds.'),
  profile: z.string().min(1).optional().describe('Hardware profile for the latency A/B (default: the pipeline\'s target).'),
  neverSlower: z.boolean().default(true).describe('Keep the input when every quantized variant is slower on the profile. Default true.'),
  keepIOTypes: z.boolean().optional().describe('fp16: keep float32 model inputs and outputs. Default true.'),
  blockList: z.array(z.string().min(1)).optional().describe('fp16: op types kept in float32 (replaces the default list).'),
  batchSize: z.number().int().min(1).max(4096).default(16).describe('Samples per calibration/evaluation batch when the model\'s batch dimension is free.'),
})

/**
 * Quantize the incoming ONNX model. The stage measures what it ships: accuracy against fp32 when an
 * evaluation dataset is named, and latency against the input on the target profile.
 */
export default defineStage({
  kind: 'quantize',
  version: '1',
  description: 'Quantize an ONNX model: dynamic or static int8, fp16 or int4, never slower than its input.',
  schema: schema.superRefine((p, issue) => {
    if (p.mode === 'static' && !p.calibration) issue.addIssue({code: 'custom', path: ['calibration'], message: 'static mode needs a calibration dataset'})
    if (p.mode === 'int4' && p.algorithm === 'gptq' && !p.calibration) issue.addIssue({code: 'custom', path: ['calibration'], message: 'int4 GPTQ needs a calibration dataset'})
    // An option the mode would ignore is refused where it is written.
    for (const m of misappliedOptions(p.mode, {...p, method: p.calibration?.method, percentile: p.calibration?.percentile})) {
      issue.addIssue({code: 'custom', path: m.key === 'method' || m.key === 'percentile' ? ['calibration', m.key] : [m.key], message: `\`${m.key}\` applies to ${m.where} only: mode ${p.mode} would ignore it`})
    }
    if (p.maxAccuracyDrop !== undefined && !p.eval) issue.addIssue({code: 'custom', path: ['eval'], message: 'maxAccuracyDrop needs an eval dataset'})
  }),
  datasets: (p) => [p.calibration?.dataset, p.eval].filter((d): d is string => !!d),
  async run(ctx, input, params) {
    const {quantizeModel} = await import('../compress/quant/index.js')
    const output = path.join(ctx.outDir, 'model.onnx')
    const r = await quantizeModel({
      input: input.path,
      output,
      mode: params.mode,
      calibration: params.calibration ? ctx.dataset(params.calibration.dataset) : undefined,
      method: params.calibration?.method,
      percentile: params.calibration?.percentile,
      perChannel: params.perChannel,
      activations: params.activations,
      symmetric: params.symmetric,
      blockSize: params.blockSize,
      algorithm: params.algorithm,
      accuracyLevel: params.accuracyLevel,
      exclude: params.exclude,
      preprocess: params.preprocess,
      eval: params.eval ? ctx.dataset(params.eval) : undefined,
      maxAccuracyDrop: params.maxAccuracyDrop,
      profile: ctx.profile(params.profile ?? ctx.target),
      neverSlower: params.neverSlower,
      keepIOTypes: params.keepIOTypes,
      blockList: params.blockList,
      batchSize: params.batchSize,
      signal: ctx.signal,
      log: (m) => ctx.log.info(m),
      progress: (m) => ctx.progress(m),
    })
    if (r.decision === 'kept-input') ctx.log.warn(r.message)
    // Per-node tables go to the stage's detailed report, not its metrics.
    const {sensitivity, nodeTimings, ...metrics} = r
    return {
      artifact: {path: output, format: 'onnx'},
      metrics: metrics as unknown as Record<string, unknown>,
      report: sensitivity || nodeTimings ? {...(sensitivity ? {sensitivity} : {}), ...(nodeTimings ? {nodeTimings} : {})} : undefined,
    }
  },
})
