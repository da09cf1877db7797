import * as fs from 'node:fs'
import path from 'node:path'
import {describe, expect, it, vi} from 'vitest'
import {MODELS} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'
import {tmpDir} from './helpers.js'

// The TF.js converter is its own module; here only the stage's dispatch and option forwarding are
// under test, so the converter is replaced by one that records its call and writes a real model.
const calls: {modelJson: string; outFile: string; options: Record<string, unknown>}[] = []
vi.mock('../../src/convert/tfjs/index.js', () => ({
  convertTfjs: async (modelJson: string, outFile: string, options: Record<string, unknown>) => {
    calls.push({modelJson, outFile, options})
    fs.copyFileSync(MODELS.blazeface, outFile)
    return {metrics: {nodes: 104}}
  },
}))

describe('convert stage: TF.js input', () => {
  it('calls convertTfjs with model.json and forwards layout, opset, verify and customOpDomain', async () => {
    const {default: convert} = await import('../../src/stages/convert.js')
    const dir = tmpDir()
    fs.writeFileSync(path.join(dir, 'model.json'), '{"format": "graph-model"}')
    // A directory holding model.json is taken as the TF.js model too.
    const {ctx, input} = await makeStageContext({input: dir})
    const params = convert.schema.parse({to: 'onnx', opset: 13, layout: 'nchw', verify: {tolerance: 1e-4, samples: 3}, customOpDomain: 'ai.kiln.tfjs'})
    const result = await convert.run(ctx, input, params)
    expect(calls).toHaveLength(1)
    expect(calls[0]!.modelJson).toBe(path.join(dir, 'model.json'))
    expect(calls[0]!.outFile).toBe(path.join(ctx.outDir, 'model.onnx'))
    expect(calls[0]!.options).toMatchObject({layout: 'nchw', opset: 13, verify: {tolerance: 1e-4, samples: 3}, customOpDomain: 'ai.kiln.tfjs', signal: ctx.signal})
    expect(result.artifact).toEqual({path: path.join(ctx.outDir, 'model.onnx'), format: 'onnx'})
    expect(result.metrics).toMatchObject({from: 'tfjs', to: 'onnx', nodes: 104, outputBytes: fs.statSync(MODELS.blazeface).size})
  })

  it('applies irVersion to the converted model', async () => {
    const {default: convert} = await import('../../src/stages/convert.js')
    const {readModel} = await import('../../src/onnx/model.js')
    const dir = tmpDir()
    const modelJson = path.join(dir, 'model.json')
    fs.writeFileSync(modelJson, '{}')
    const {ctx, input} = await makeStageContext({input: modelJson})
    const result = await convert.run(ctx, input, convert.schema.parse({irVersion: 8}))
    expect(result.metrics).toMatchObject({fromIrVersion: 7, toIrVersion: 8})
    expect(Number((await readModel(result.artifact!.path)).irVersion)).toBe(8)
  })
})
