import {describe, expect, it} from 'vitest'
import {ModelError} from '../../src/errors.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../../src/onnx/build.js'
import type {AttrValue} from '../../src/onnx/build.js'
import {allNodes} from '../../src/onnx/graph.js'
import {modelToBytes, opsetVersion} from '../../src/onnx/model.js'
import {minIrVersion, upgradeModel} from '../../src/onnx/opset.js'
import {DataType} from '../../src/onnx/proto.js'
import type {ModelProto, NodeProto} from '../../src/onnx/proto.js'
import {makeTensor} from '../../src/onnx/tensor.js'
import {maxRelativeDiff, runModel, type Feeds} from './helpers.js'

/** Deterministic values in [-2, 2): the rewrites must hold on real numbers, not just zeros. */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n)
  let s = seed >>> 0
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = (s / 2 ** 32) * 4 - 2
  }
  return out
}

interface Case {
  name: string
  opset: number
  targets: number[]
  input: number[]
  /** Declare the input shape (rank known) or leave it unknown. */
  declareShape?: boolean
  nodes: NodeProto[]
  outputs: string[]
  /** Element types of outputs that are not float32. */
  outputTypes?: Record<string, number>
  /** Ops the upgrade must have rewritten (by original type). */
  rewrites: string[]
}

const n = (op: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}) => makeNode(op, inputs, outputs, attrs, {name: `${op}_${outputs[0]}`})
const cf = (name: string, dims: number[], data: number[]) => makeNode('Constant', [], [name], {value: makeTensor(name, DataType.FLOAT, dims, Float32Array.from(data))})

const CASES: Case[] = [
  {name: 'Squeeze/Unsqueeze axes → input', opset: 11, targets: [13, 17], input: [1, 3, 1, 4], nodes: [n('Squeeze', ['x'], ['s'], {axes: [0, 2]}), n('Unsqueeze', ['s'], ['y'], {axes: [1]})], outputs: ['y'], rewrites: ['Squeeze', 'Unsqueeze']},
  {
    name: 'ReduceSum (13) and ReduceMean/ReduceMax (18) axes → input',
    opset: 11,
    targets: [13, 18],
    input: [2, 3, 4],
    nodes: [n('ReduceSum', ['x'], ['a'], {axes: [1], keepdims: 0}), n('ReduceMean', ['x'], ['b'], {axes: [-1]}), n('ReduceMax', ['x'], ['c'], {keepdims: 0})],
    outputs: ['a', 'b', 'c'],
    rewrites: ['ReduceSum'],
  },
  {
    name: 'Split sizes → input (13), num_outputs (18)',
    opset: 11,
    targets: [13, 18],
    input: [2, 6, 2],
    nodes: [n('Split', ['x'], ['a', 'b'], {axis: 1, split: [2, 4]}), n('Split', ['x'], ['c', 'd', 'e'], {axis: 1})],
    outputs: ['a', 'b', 'c', 'd', 'e'],
    rewrites: ['Split'],
  },
  {name: 'Clip min/max → inputs', opset: 9, targets: [11, 17], input: [3, 5], nodes: [n('Clip', ['x'], ['a'], {min: -0.5, max: 0.75}), n('Clip', ['x'], ['b'], {max: {float: 1}})], outputs: ['a', 'b'], rewrites: ['Clip']},
  {
    name: 'Pad pads/value → inputs',
    opset: 9,
    targets: [11, 17],
    input: [1, 2, 3, 3],
    nodes: [n('Pad', ['x'], ['a'], {pads: [0, 0, 1, 2, 0, 0, 2, 1], value: 1.5}), n('Pad', ['x'], ['b'], {pads: [0, 0, 1, 1, 0, 0, 1, 1], mode: 'reflect'})],
    outputs: ['a', 'b'],
    rewrites: ['Pad'],
  },
  {
    name: 'Softmax/LogSoftmax/Hardmax on a non-last axis, rank unknown',
    opset: 11,
    targets: [13, 17],
    input: [2, 3, 4],
    nodes: [n('Softmax', ['x'], ['a'], {axis: 1}), n('LogSoftmax', ['x'], ['b']), n('Hardmax', ['x'], ['c'], {axis: 1}), n('Softmax', ['x'], ['d'], {axis: -1})],
    outputs: ['a', 'b', 'c', 'd'],
    rewrites: ['Softmax', 'LogSoftmax', 'Hardmax'],
  },
  {name: 'Softmax on the last axis with a declared rank keeps one node', opset: 9, targets: [13], input: [2, 3, 4], declareShape: true, nodes: [n('Softmax', ['x'], ['a'], {axis: 2})], outputs: ['a'], rewrites: ['Softmax']},
  {name: 'Slice attributes → inputs', opset: 9, targets: [10, 17], input: [4, 6], nodes: [n('Slice', ['x'], ['a'], {starts: [1, 0], ends: [3, 1000], axes: [0, 1]}), n('Slice', ['x'], ['b'], {starts: [2], ends: [-1]})], outputs: ['a', 'b'], rewrites: ['Slice']},
  {name: 'TopK k → input', opset: 9, targets: [10, 17], input: [3, 7], nodes: [n('TopK', ['x'], ['v', 'i'], {k: 3})], outputs: ['v', 'i'], outputTypes: {i: DataType.INT64}, rewrites: ['TopK']},
  {
    name: 'Upsample (scales attribute, linear) → Resize',
    opset: 8,
    targets: [10, 11, 17],
    input: [1, 2, 3, 4],
    nodes: [n('Upsample', ['x'], ['y'], {mode: 'linear', scales: {floats: [1, 1, 2, 1.5]}})],
    outputs: ['y'],
    rewrites: ['Upsample'],
  },
  {
    name: 'Upsample (scales input, nearest) → Resize; Resize-10 downsampling → 11',
    opset: 9,
    targets: [11, 17],
    input: [1, 2, 4, 6],
    nodes: [cf('up', [4], [1, 1, 2, 3]), n('Upsample', ['x', 'up'], ['y'], {mode: 'nearest'})],
    outputs: ['y'],
    rewrites: ['Upsample'],
  },
  {name: 'Resize-10 nearest downsampling', opset: 10, targets: [11, 17], input: [1, 1, 6, 9], nodes: [cf('s', [4], [1, 1, 0.5, 1 / 3]), n('Resize', ['x', 's'], ['y'], {mode: 'nearest'})], outputs: ['y'], rewrites: ['Resize']},
  {name: 'Dropout ratio → input', opset: 9, targets: [12, 17], input: [2, 5], nodes: [n('Dropout', ['x'], ['y'], {ratio: 0.3})], outputs: ['y'], rewrites: ['Dropout']},
  {
    name: 'BatchNormalization drops spatial',
    opset: 7,
    targets: [9, 15],
    input: [1, 3, 2, 2],
    nodes: [cf('sc', [3], [1, 2, 0.5]), cf('b', [3], [0.1, -0.2, 0]), cf('m', [3], [0.5, 0, -1]), cf('v', [3], [1, 4, 0.25]), n('BatchNormalization', ['x', 'sc', 'b', 'm', 'v'], ['y'], {spatial: 1, epsilon: {float: 1e-3}})],
    outputs: ['y'],
    rewrites: ['BatchNormalization'],
  },
]

function buildCase(c: Case): ModelProto {
  return makeModel(
    makeGraph({
      node: c.nodes,
      input: [makeValueInfo('x', DataType.FLOAT, c.declareShape ? c.input : undefined)],
      output: c.outputs.map((o) => makeValueInfo(o, c.outputTypes?.[o] ?? DataType.FLOAT)),
    }),
    {'': c.opset},
    c.opset <= 8 ? 3 : c.opset === 9 ? 4 : 5,
  )
}

describe('opset upgrade keeps onnxruntime outputs', () => {
  it.each(CASES)('$name', async (c) => {
    const feeds: Feeds[] = [{x: {type: 'float32', data: values(c.input.reduce((a, b) => a * b, 1), 7), dims: c.input}}]
    const before = await runModel(modelToBytes(buildCase(c)), feeds)
    for (const target of c.targets) {
      const model = buildCase(c)
      const result = upgradeModel(model, {opset: target})
      expect(opsetVersion(model)).toBe(target)
      expect(result.fromOpset).toBe(c.opset)
      expect(Number(model.irVersion)).toBe(Math.max(minIrVersion(target), Number(buildCase(c).irVersion)))
      expect(Object.keys(result.rewritten).sort()).toEqual(expect.arrayContaining(c.rewrites.filter((op) => !(op === 'Resize' && target < 11))))
      expect(result.nodesAfter).toBe([...allNodes(model)].length)
      const after = await runModel(modelToBytes(model), feeds)
      expect(Object.keys(after[0]!).sort()).toEqual([...c.outputs].sort())
      expect(maxRelativeDiff(before, after), `opset ${c.opset} → ${target}`).toBeLessThanOrEqual(1e-6)
    }
  })

  it('leaves other domains and custom ops alone', () => {
    const model = makeModel(makeGraph({node: [makeNode('Gelu', ['x'], ['y'], {}, {domain: 'com.microsoft'})]}), {'': 11, 'com.microsoft': 1})
    upgradeModel(model, {opset: 17})
    expect(model.opsetImport.map((o) => `${o.domain}:${o.version}`)).toEqual([':17', 'com.microsoft:1'])
    expect(model.graph!.node[0]!.opType).toBe('Gelu')
  })
})

describe('refusals', () => {
  const refusal = (model: ModelProto, options: Parameters<typeof upgradeModel>[1]) => {
    const bytes = Buffer.from(modelToBytes(model))
    try {
      upgradeModel(model, options)
    } catch (error) {
      expect(error).toBeInstanceOf(ModelError)
      expect((error as ModelError).tryMessage).toBeTruthy()
      // Refused means untouched.
      expect(Buffer.from(modelToBytes(model)).equals(bytes)).toBe(true)
      return (error as ModelError).message
    }
    throw new Error('upgrade did not refuse')
  }

  it('lists every op it cannot carry over, and changes nothing', () => {
    const model = makeModel(
      makeGraph({
        node: [
          makeNode('FancyOp', ['x'], ['a']),
          cf('mixed', [4], [1, 1, 2, 0.5]),
          makeNode('Upsample', ['x', 'mixed'], ['b'], {mode: 'nearest'}),
          makeNode('Dropout', ['x'], ['c', 'mask'], {ratio: 0.5}),
          makeNode('Dropout', ['x'], ['d', 'mask2'], {ratio: 0.5}),
        ],
      }),
      {'': 9},
      4,
    )
    const message = refusal(model, {opset: 17})
    expect(message).toMatch(/FancyOp: no upgrade rule/)
    expect(message).toMatch(/Upsample: nearest mode that both up- and downsamples/)
    expect(message).toMatch(/Dropout: .*mask.*\(2 nodes\)/)
  })

  it('downgrades, IR versions too old for the opset, targets past the rule table, pre-7 sources', () => {
    const small = (opset: number, ir = 8) => makeModel(makeGraph({node: [makeNode('Relu', ['x'], ['y'])]}), {'': opset}, ir)
    expect(refusal(small(17), {opset: 12})).toMatch(/downgrades are not supported/)
    expect(refusal(small(12, 7), {opset: 17, irVersion: 7})).toMatch(/opset 17 needs IR 8/)
    expect(refusal(small(17, 8), {irVersion: 7})).toMatch(/downgrades/)
    expect(refusal(small(12), {opset: 30})).toMatch(/newer than kiln's upgrade rules/)
    expect(refusal(small(6, 3), {opset: 12})).toMatch(/from opset 7 onwards/)
  })

  it('Scan-8 batch semantics', () => {
    const body = makeGraph({node: [makeNode('Identity', ['a'], ['b'])], input: [makeValueInfo('a', DataType.FLOAT, [2])], output: [makeValueInfo('b', DataType.FLOAT, [2])]})
    const model = makeModel(makeGraph({node: [makeNode('Scan', ['', 'x'], ['y'], {body, num_scan_inputs: 1})]}), {'': 8}, 3)
    expect(refusal(model, {opset: 11})).toMatch(/Scan: .*batch axis/)
  })
})
