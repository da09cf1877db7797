// A custom stage for the example: its output is the CNN that sits beside the pipeline's input
// model, so the evaluate stage after it compares the two. Real pipelines put prune/quantize here.
import * as fs from 'node:fs/promises'
import path from 'node:path'
import {z} from 'zod'

export default {
  kind: 'swap-in-cnn',
  version: '1',
  description: 'Output models/fashion_cnn.onnx in place of the input model.',
  schema: z.object({}).strict(),
  async run(ctx) {
    const out = path.join(ctx.outDir, 'fashion_cnn.onnx')
    await fs.copyFile(path.join(ctx.baseDir, 'models', 'fashion_cnn.onnx'), out)
    return {artifact: {path: out, format: 'onnx'}, metrics: {}}
  },
}
