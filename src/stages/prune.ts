import path from 'node:path'
import {z} from 'zod'
import {defineStage} from './types.js'

const schema = z.strictObject({
  method: z.enum(['magnitude', 'nm', 'channel']).default('magnitude').describe('`magnitude` (unstructured, default), `nm` (N:M semi-structured) or `channel` (structured filters).'),
  sparsity: z.number().min(0).lt(1).optional().describe('Fraction of weights (channels for `channel`) to remove, in [0, 1). Implied by `pattern` for `nm`.'),
  scope: z.enum(['global', 'layer']).optional().describe('`global` (default for magnitude) or `layer` (default for channel).'),
  pattern: z.string().regex(/^\d+:\d+$/).optional().describe('N:M pattern for `nm`: keep N of every M along the reduction axis (default 2:4).'),
  criterion: z.enum(['l1', 'l2']).optional().describe('Channel importance for `channel` (default l1).'),
  channelMultiple: z.number().int().positive().optional().describe('`channel`: round kept channel counts to a multiple of this (default 16, the channel block of onnxruntime\'s CPU conv kernels; 1 = exact ratio).'),
  protectFirstLast: z.boolean().default(false).describe('Leave the first and last prunable layers dense.'),
  overrides: z.record(z.string(), z.number().min(0).lt(1)).optional().describe('Per-layer sparsity by layer or weight name (0 = leave dense).'),
  eval: z
    .strictObject({
      dataset: z.string().min(1),
      maxAccuracyDrop: z.number().min(0).max(1),
      ratios: z.array(z.number().gt(0).lt(1)).min(1).optional(),
      samples: z.number().int().positive().optional(),
    })
    .optional().describe('Sensitivity-guided plan (magnitude): per-layer ratios within an accuracy budget on a declared dataset.'),
})

/** Output file name inside the stage directory: keep the input's name when it is an .onnx file. */
export function outputName(input: string): string {
  return input.endsWith('.onnx') ? path.basename(input) : 'model.onnx'
}

export default defineStage({
  kind: 'prune',
  version: '1',
  description: 'Remove weights: unstructured magnitude, N:M, or structured channels with graph surgery.',
  schema,
  datasets: (p) => (p.eval ? [p.eval.dataset] : []),
  async run(ctx, input, params) {
    const {pruneFile} = await import('../compress/prune.js')
    const out = path.join(ctx.outDir, outputName(input.path))
    const r = await pruneFile(
      input.path,
      out,
      {...params, eval: params.eval ? {...params.eval, dataset: ctx.dataset(params.eval.dataset)} : undefined},
      {signal: ctx.signal, log: (m) => ctx.log.info(m), progress: (m) => ctx.progress(m)},
    )
    ctx.log.info(`${r.method}: sparsity ${r.sparsity.toFixed(3)}, ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes with zstd`)
    const report: Record<string, unknown> = {layers: r.layers}
    if (r.sensitivity) report.sensitivity = r.sensitivity
    if (r.channel) report.channel = r.channel
    return {
      artifact: {path: out, format: 'onnx'},
      metrics: {
        method: r.method,
        targetSparsity: r.target,
        sparsity: r.sparsity,
        layerSparsity: Object.fromEntries(r.layers.map((l) => [l.layer, Number(l.sparsity.toFixed(4))])),
        paramsBefore: r.params.before.total,
        paramsAfter: r.params.after.total,
        nonzeroBefore: r.params.before.nonzero,
        nonzeroAfter: r.params.after.nonzero,
        ...(r.flops ? {flopsBefore: r.flops.before, flopsAfter: r.flops.after} : {}),
        ...(r.channel ? {channelGroups: r.channel.groups.length, channelSkipped: r.channel.skipped.length} : {}),
        ...(r.sensitivity ? {planned: r.sensitivity.final} : {}),
        bytesBefore: r.sizes.before.raw,
        bytesAfter: r.sizes.after.raw,
        zstdBytesBefore: r.sizes.before.zstd,
        zstdBytesAfter: r.sizes.after.zstd,
      },
      report,
    }
  },
})
