import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {pruneFile, pruneModel} from '../../src/compress/prune.js'
import {KilnError} from '../../src/errors.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import {modelToBytes, readModel, writeModel} from '../../src/onnx/model.js'
import {DataType} from '../../src/onnx/proto.js'
import type {ModelProto, TensorProto} from '../../src/onnx/proto.js'
import {makeTensor, tensorDims} from '../../src/onnx/tensor.js'
import {loadOrt} from '../../src/runtime/ort.js'
import {MODELS, ensureFixtures} from '../helpers/fixtures.js'
import {rng, runModel, sampleFeeds} from './prune-helpers.js'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-channel-'))
beforeAll(() => ensureFixtures())

/** Random weights with whole output channels (axis 0, or `axis`) set to zero. */
function weight(name: string, dims: number[], zero: number[], random: () => number, axis = 0): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1)
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1)
  const data = Float32Array.from({length: n}, (_, i) => (zero.includes(Math.floor(i / inner) % dims[axis]!) ? 0 : random() * 2 - 1))
  return makeTensor(name, DataType.FLOAT, dims, data)
}

/**
 * A CNN whose channels 1, 4, 6, 7 (and 0, 3, 5 of the last conv) carry exactly zero, through a
 * BatchNormalization, a residual Add, a depthwise conv and a Flatten → Gemm head. Pruning half the
 * channels by L1 must remove exactly those, so the pruned model must compute the same output.
 */
function residualCnn(): ModelProto {
  const r = rng(7)
  const z = [1, 4, 6, 7]
  const z4 = [0, 3, 5]
  const ones = (name: string, n: number, v: (c: number) => number) => makeTensor(name, DataType.FLOAT, [n], Float32Array.from({length: n}, (_, c) => v(c)))
  const graph = makeGraph({
    name: 'residual',
    input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 8, 8])],
    output: [makeValueInfo('y', DataType.FLOAT, [1, 10])],
    initializer: [
      weight('w1', [8, 3, 3, 3], z, r),
      ones('b1', 8, (c) => (z.includes(c) ? 0 : 0.1)),
      ones('bn_scale', 8, () => 1.5),
      ones('bn_bias', 8, (c) => (z.includes(c) ? 0 : 0.2)),
      ones('bn_mean', 8, (c) => (z.includes(c) ? 0 : 0.05)),
      ones('bn_var', 8, () => 0.9),
      weight('w2', [8, 8, 3, 3], z, r),
      weight('w3', [8, 1, 3, 3], [], r),
      ones('b3', 8, (c) => (z.includes(c) ? 0 : 0.3)),
      weight('w4', [6, 8, 1, 1], z4, r),
      ones('b4', 6, (c) => (z4.includes(c) ? 0 : 0.1)),
      weight('w5', [384, 10], [], r),
      ones('b5', 10, () => 0.01),
    ],
    node: [
      makeNode('Conv', ['x', 'w1', 'b1'], ['c1'], {pads: [1, 1, 1, 1]}, {name: 'conv1'}),
      makeNode('BatchNormalization', ['c1', 'bn_scale', 'bn_bias', 'bn_mean', 'bn_var'], ['n1'], {}, {name: 'bn1'}),
      makeNode('Relu', ['n1'], ['r1'], {}, {name: 'relu1'}),
      makeNode('Conv', ['r1', 'w2'], ['c2'], {pads: [1, 1, 1, 1]}, {name: 'conv2'}),
      makeNode('Add', ['r1', 'c2'], ['a'], {}, {name: 'residual_add'}),
      makeNode('Conv', ['a', 'w3', 'b3'], ['d'], {pads: [1, 1, 1, 1], group: 8}, {name: 'depthwise'}),
      makeNode('Relu', ['d'], ['r2'], {}, {name: 'relu2'}),
      makeNode('Conv', ['r2', 'w4', 'b4'], ['c4'], {}, {name: 'conv4'}),
      makeNode('Relu', ['c4'], ['r4'], {}, {name: 'relu4'}),
      makeNode('Flatten', ['r4'], ['f'], {axis: 1}, {name: 'flatten'}),
      makeNode('Gemm', ['f', 'w5', 'b5'], ['y'], {}, {name: 'fc'}),
    ],
  })
  return makeModel(graph, {'': 13})
}

async function feed(seed: number): Promise<Record<string, unknown>> {
  const ort = await loadOrt()
  const r = rng(seed)
  return {x: new ort.Tensor('float32', Float32Array.from({length: 3 * 64}, () => r()), [1, 3, 8, 8])}
}

function dimsOf(model: ModelProto, name: string): number[] {
  return tensorDims(model.graph!.initializer.find((t) => t.name === name)!)
}

describe('structured channel pruning', () => {
  it('removes channels from producers and every consumer, keeping the output exact', async () => {
    const model = residualCnn()
    const input = path.join(tmp, 'residual.onnx')
    await writeModel(model, input)
    const out = path.join(tmp, 'residual-pruned.onnx')
    const r = await pruneFile(input, out, {method: 'channel', sparsity: 0.5, criterion: 'l1'})
    const pruned = await readModel(out)
    expect(dimsOf(pruned, 'w1')).toEqual([4, 3, 3, 3])
    expect(dimsOf(pruned, 'b1')).toEqual([4])
    expect(dimsOf(pruned, 'bn_var')).toEqual([4])
    expect(dimsOf(pruned, 'w2')).toEqual([4, 4, 3, 3])
    expect(dimsOf(pruned, 'w3')).toEqual([4, 1, 3, 3])
    expect(dimsOf(pruned, 'w4')).toEqual([3, 4, 1, 1])
    expect(dimsOf(pruned, 'w5')).toEqual([192, 10])
    expect(Number(pruned.graph!.node.find((n) => n.name === 'depthwise')!.attribute.find((a) => a.name === 'group')!.i)).toBe(4)
    // conv1 and conv2 meet in the residual Add: one group.
    expect(r.channel!.groups.find((g) => g.layers.includes('conv1'))!.layers).toEqual(['conv1', 'conv2'])
    expect(r.flops!.after).toBeLessThan(r.flops!.before * 0.5)
    expect(r.params.after.total).toBeLessThan(r.params.before.total)
    for (const seed of [1, 2]) {
      const f = await feed(seed)
      const a = (await runModel(input, f)).y!
      const b = (await runModel(out, f)).y!
      for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 4)
    }
  })

  it('prunes the inputs of a Concat with their offsets', async () => {
    const r = rng(3)
    const model = makeModel(
      makeGraph({
        input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 4, 4])],
        output: [makeValueInfo('y', DataType.FLOAT, [1, 2, 4, 4])],
        initializer: [weight('wa', [4, 3, 1, 1], [0, 1], r), weight('wb', [4, 3, 1, 1], [2, 3], r), weight('wc', [2, 8, 1, 1], [], r)],
        node: [
          makeNode('Conv', ['x', 'wa'], ['a'], {}, {name: 'conv_a'}),
          makeNode('Conv', ['x', 'wb'], ['b'], {}, {name: 'conv_b'}),
          makeNode('Concat', ['a', 'b'], ['c'], {axis: 1}, {name: 'concat'}),
          makeNode('Conv', ['c', 'wc'], ['y'], {}, {name: 'conv_c'}),
        ],
      }),
      {'': 13},
    )
    const input = path.join(tmp, 'concat.onnx')
    await writeModel(model, input)
    const out = path.join(tmp, 'concat-pruned.onnx')
    await pruneFile(input, out, {method: 'channel', sparsity: 0.5})
    const pruned = await readModel(out)
    expect(dimsOf(pruned, 'wc')).toEqual([2, 4, 1, 1])
    const ort = await loadOrt()
    const x = new ort.Tensor('float32', Float32Array.from({length: 48}, () => r()), [1, 3, 4, 4])
    const a = (await runModel(input, {x})).y!
    const b = (await runModel(out, {x})).y!
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 5)
  })

  it('names the blocking node and leaves the model unchanged when it cannot prove the graph safe', async () => {
    const r = rng(5)
    const model = makeModel(
      makeGraph({
        input: [makeValueInfo('x', DataType.FLOAT, [1, 3, 4, 4])],
        output: [makeValueInfo('y', DataType.FLOAT, [1, 8, 16])],
        initializer: [weight('w', [8, 3, 1, 1], [], r), makeTensor('shape', DataType.INT64, [3], BigInt64Array.from([1n, 8n, -1n]))],
        node: [makeNode('Conv', ['x', 'w'], ['c'], {}, {name: 'conv'}), makeNode('Reshape', ['c', 'shape'], ['y'], {}, {name: 'reshape_blocker'})],
      }),
      {'': 13},
    )
    const before = modelToBytes(model)
    const err = await pruneModel(model, {method: 'channel', sparsity: 0.5}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(KilnError)
    expect((err as KilnError).code).toBe('E_PRUNE_UNSAFE')
    expect((err as Error).message).toContain("'reshape_blocker'")
    expect((err as Error).message).toContain('unchanged')
    expect(modelToBytes(model)).toEqual(before)

    const out = path.join(tmp, 'blazeface-channel.onnx')
    await expect(pruneFile(MODELS.blazeface, out, {method: 'channel', sparsity: 0.3})).rejects.toThrow(/node 'Concat'/)
    expect(fs.existsSync(out)).toBe(false)
  })

  it('prunes the real PaddleOCR classifier into a valid, cheaper graph and reports what it left whole', async () => {
    const out = path.join(tmp, 'ocrcls-channel.onnx')
    const r = await pruneFile(MODELS.ocrCls, out, {method: 'channel', sparsity: 0.3, criterion: 'l2', channelMultiple: 8})
    for (const g of r.channel!.groups) expect(g.kept === g.channels || g.channels <= 8 || g.kept % 8 === 0).toBe(true)
    expect(r.channel!.groups.length).toBeGreaterThan(5)
    expect(r.channel!.skipped.length).toBeGreaterThan(0)
    expect(r.channel!.skipped.every((s) => s.blockedBy.length > 0)).toBe(true)
    expect(r.flops!.after).toBeLessThan(r.flops!.before * 0.8)
    expect(r.sizes.after.raw).toBeLessThan(r.sizes.before.raw * 0.8)
    const f = await sampleFeeds(MODELS.ocrCls, 1)
    const a = await runModel(MODELS.ocrCls, f)
    const b = await runModel(out, f)
    for (const k of Object.keys(a)) {
      expect(b[k]!.length).toBe(a[k]!.length)
      expect(b[k]!.every(Number.isFinite)).toBe(true)
    }
  })
})
