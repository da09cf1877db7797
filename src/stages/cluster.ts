import path from 'node:path'
import {z} from 'zod'
import {outputName} from './prune.js'
import {defineStage} from './types.js'

const schema = z.strictObject({
  clusters: z.number().int().min(4).max(256).describe('Clusters (shared values) per layer, 4..256.'),
  storage: z.enum(['codebook', 'float']).default('codebook').describe('`codebook` (uint8 indices decoded in the graph, default) or `float` (centroid values, squeezed by zstd).'),
  seed: z.number().int().min(0).default(0).describe('k-means++ seed: the same seed gives the same model.'),
  iterations: z.number().int().positive().default(30).describe('Lloyd iterations at most.'),
  exclude: z.array(z.string()).optional().describe('Layer or weight names to leave alone.'),
})

export default defineStage({
  kind: 'cluster',
  version: '1',
  description: 'Weight sharing: k-means per layer, stored as a codebook with packed indices (or clustered floats).',
  schema,
  async run(ctx, input, params) {
    const {clusterFile} = await import('../compress/cluster.js')
    const out = path.join(ctx.outDir, outputName(input.path))
    const r = await clusterFile(input.path, out, params, {signal: ctx.signal, progress: (m) => ctx.progress(m)})
    ctx.log.info(`clustered ${r.layers.length} layers to ${r.clusters} values, ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes with zstd`)
    return {
      artifact: {path: out, format: 'onnx'},
      metrics: {
        clusters: r.clusters,
        storage: r.storage,
        layers: r.layers.length,
        layerError: Object.fromEntries(r.layers.map((l) => [l.layer, Number(l.error.toFixed(5))])),
        bytesBefore: r.sizes.before.raw,
        bytesAfter: r.sizes.after.raw,
        zstdBytesBefore: r.sizes.before.zstd,
        zstdBytesAfter: r.sizes.after.zstd,
      },
      report: {layers: r.layers},
    }
  },
})
