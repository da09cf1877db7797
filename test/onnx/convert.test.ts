import * as fs from 'node:fs'
import {beforeAll, describe, expect, it} from 'vitest'
import {ModelError, UsageError} from '../../src/errors.js'
import {allNodes} from '../../src/onnx/graph.js'
import {readModel} from '../../src/onnx/model.js'
import {opsetVersion} from '../../src/onnx/model.js'
import convert from '../../src/stages/convert.js'
import {loadStage} from '../../src/stages/registry.js'
import {MODELS, ensureFixtures} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'
import {maxRelativeDiff, realFeeds, runModel, type ModelKey} from './helpers.js'

beforeAll(() => ensureFixtures())

async function runConvert(key: ModelKey, withParams: Record<string, unknown>) {
  const {ctx, input, logs} = await makeStageContext({input: MODELS[key]})
  const params = convert.schema.parse(withParams)
  return {result: await convert.run(ctx, input, params), logs}
}

describe('convert stage: ONNX opset upgrade on the real models', () => {
  it.each([
    ['blazeface', 12, 17],
    ['ocrDet', 11, 17],
    ['ocrRec', 9, 17],
    ['ocrCls', 9, 17],
    ['sileroV5', 16, 17],
    ['sileroLegacy', 16, 17],
    // Opset 18 moves Reduce* axes to an input: Silero's ReduceMean sit inside If branches.
    ['sileroLegacy', 16, 18],
    ['ocrRec', 9, 21],
  ] as [ModelKey, number, number][])('%s: opset %i → %i loads and gives the same outputs', async (key, from, to) => {
    const {result, logs} = await runConvert(key, {to: 'onnx', opset: to})
    const out = result.artifact!.path
    const model = await readModel(out)
    expect(opsetVersion(model)).toBe(to)
    expect(Number(model.irVersion)).toBeGreaterThanOrEqual(8)
    expect(result.metrics).toMatchObject({fromOpset: from, toOpset: to, toIrVersion: Number(model.irVersion)})
    expect(result.metrics.outputBytes).toBe(fs.statSync(out).size)
    expect(logs.some((l) => l.includes(`opset ${from} → ${to}`))).toBe(true)
    // Subgraphs came along: Silero's If branches are still there and upgraded in place.
    const before = await readModel(MODELS[key])
    expect([...allNodes(model)].filter((n) => n.path.length > 0).length).toBeGreaterThanOrEqual([...allNodes(before)].filter((n) => n.path.length > 0).length)

    const feeds = await realFeeds(key)
    const diff = maxRelativeDiff(await runModel(MODELS[key], feeds), await runModel(out, feeds))
    expect(diff, `${key} outputs changed by ${diff}`).toBeLessThanOrEqual(1e-5)
  })

  it('reports what it rewrote (PaddleOCR opset 9 → 17)', async () => {
    const {result} = await runConvert('ocrCls', {opset: 17})
    const rewritten = result.metrics.opsRewritten as Record<string, number>
    const original = await readModel(MODELS.ocrCls)
    const clips = [...allNodes(original)].filter((n) => n.node.opType === 'Clip').length
    expect(rewritten.Clip).toBe(clips)
    expect(rewritten.Softmax).toBeGreaterThan(0)
    expect(result.metrics.nodesAfter).toBeGreaterThan(result.metrics.nodesBefore as number)
  })

  it('without an opset it keeps the opset and only normalises', async () => {
    const {result} = await runConvert('blazeface', {})
    expect(result.metrics).toMatchObject({fromOpset: 12, toOpset: 12, fromIrVersion: 7, toIrVersion: 7, opsRewritten: {}})
  })

  it('refuses downgrades, IR too old, TF.js-only options on ONNX input, unknown keys', async () => {
    await expect(runConvert('sileroV5', {opset: 13})).rejects.toThrow(ModelError)
    await expect(runConvert('sileroV5', {opset: 13})).rejects.toThrow(/downgrades are not supported/)
    await expect(runConvert('blazeface', {opset: 17, irVersion: 7})).rejects.toThrow(/needs IR 8/)
    await expect(runConvert('blazeface', {opset: 17, layout: 'nchw'})).rejects.toThrow(UsageError)
    expect(convert.schema.safeParse({to: 'tflite'}).success).toBe(false)
    expect(convert.schema.safeParse({opset: 17, opst: 1}).success).toBe(false)
    expect(convert.schema.safeParse({opset: 5}).success).toBe(false)
  })

  it('is registered as the built-in kind `convert`', async () => {
    const stage = await loadStage('convert', process.cwd())
    expect(stage.kind).toBe('convert')
    expect(stage.version).toBeTruthy()
  })
})
