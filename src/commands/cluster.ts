import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {ClusterFileResult} from '../compress/cluster.js'

export default class Cluster extends KilnCommand {
  static override summary = 'Share weights: k-means per layer, stored as a codebook with uint8 indices.'
  static override description =
    'Every real weight tensor (MatMul/Gemm/Conv/ConvTranspose/LSTM/GRU) is clustered to K values. The codebook storage keeps one byte per weight and decodes in the graph (onnxruntime folds it at load); --storage float keeps float weights for zstd to squeeze.'
  static override examples = ['<%= config.bin %> cluster model.onnx -o clustered.onnx --clusters 16', '<%= config.bin %> cluster model.onnx -o clustered.onnx --clusters 32 --storage float']

  static override args = {
    model: Args.string({description: 'ONNX model to cluster.', required: true}),
  }

  static override flags = {
    output: Flags.string({char: 'o', description: 'Where to write the clustered model.', required: true}),
    clusters: Flags.integer({char: 'k', description: 'Clusters per layer, 4..256.', required: true}),
    storage: Flags.string({description: 'How clustered weights are stored.', options: ['codebook', 'float'], default: 'codebook'}),
    seed: Flags.integer({description: 'k-means++ seed.', default: 0}),
    exclude: Flags.string({description: 'Layer or weight name to leave alone; repeatable.', multiple: true}),
  }

  async run(): Promise<ClusterFileResult & {output: string}> {
    const {args, flags} = await this.parse(Cluster)
    const {clusterFile} = await import('../compress/cluster.js')
    const output = path.resolve(flags.output)
    const r = await clusterFile(path.resolve(args.model), output, {
      clusters: flags.clusters,
      storage: flags.storage as 'codebook' | 'float',
      seed: flags.seed,
      exclude: flags.exclude,
    })
    this.say(`clustered ${r.layers.length} layers to ${r.clusters} values (${r.storage}); size ${r.sizes.before.raw} → ${r.sizes.after.raw} bytes; with zstd ${r.sizes.before.zstd} → ${r.sizes.after.zstd} bytes → ${output}`)
    return {...r, output}
  }
}
