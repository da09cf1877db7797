import path from 'node:path'
import {z} from 'zod'
import {outputName} from './prune.js'
import {defineStage} from './types.js'

const schema = z
  .strictObject({
    rank: z.number().int().positive().optional().describe('Keep this many singular values per layer.'),
    energy: z.number().gt(0).max(1).optional().describe('Keep the fewest singular values holding this fraction of the energy (σ²), in (0, 1].'),
    maxError: z.number().gt(0).lt(1).optional().describe('Per-layer budget on the relative Frobenius error, in (0, 1).'),
    exclude: z.array(z.string()).optional().describe('Layer or weight names to leave alone.'),
  })
  .refine((p) => [p.rank, p.energy, p.maxError].filter((x) => x !== undefined).length === 1, {message: 'give exactly one of rank, energy or maxError'})

export default defineStage({
  kind: 'lowrank',
  version: '1',
  description: 'Factorise MatMul/Gemm weights into two smaller MatMuls by truncated SVD, where it saves parameters and FLOPs.',
  schema,
  async run(ctx, input, params) {
    const {lowrankFile} = await import('../compress/lowrank.js')
    const out = path.join(ctx.outDir, outputName(input.path))
    const r = await lowrankFile(input.path, out, params, {signal: ctx.signal, progress: (m) => ctx.progress(m)})
    ctx.log.info(`factorised ${r.factorised} of ${r.layers.length} layers, ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes with zstd`)
    return {
      artifact: {path: out, format: 'onnx'},
      metrics: {
        factorised: r.factorised,
        layers: r.layers.length,
        layerError: Object.fromEntries(r.layers.filter((l) => l.error !== undefined).map((l) => [l.layer, Number(l.error!.toFixed(5))])),
        layerRank: Object.fromEntries(r.layers.filter((l) => l.rank !== undefined).map((l) => [l.layer, l.rank])),
        paramsBefore: r.paramsTotal.before.total,
        paramsAfter: r.paramsTotal.after.total,
        flopsPerRowBefore: r.flopsPerRow.before,
        flopsPerRowAfter: r.flopsPerRow.after,
        bytesBefore: r.sizes.before.raw,
        bytesAfter: r.sizes.after.raw,
        zstdBytesBefore: r.sizes.before.zstd,
        zstdBytesAfter: r.sizes.after.zstd,
      },
      report: {layers: r.layers},
    }
  },
})
