/**
 * Raise a model's default-domain opset to what a quantized format needs (per-channel
 * QuantizeLinear/DequantizeLinear take `axis` from opset 13). Real exporters still write opset
 * 9–12; onnxruntime refuses a per-channel Q/DQ in such a model, so the ops whose signature changed
 * on the way are rewritten (attributes that became inputs, Upsample → Resize).
 */
import {KilnError} from '../../errors.js'
import {getAttribute, walkGraphs} from '../../onnx/graph.js'
import {makeAttribute} from '../../onnx/build.js'
import {opsetVersion} from '../../onnx/model.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {makeTensor} from '../../onnx/tensor.js'
import {NameScope, ensureOpsetImport} from './graph-util.js'

/** Oldest default-domain opset kiln can raise, and newest it knows onnxruntime runs. */
export const MIN_OPSET = 7
export const MAX_OPSET = 23

export function checkOpset(model: ModelProto): number {
  const v = opsetVersion(model, '') ?? 0
  if (v < MIN_OPSET || v > MAX_OPSET) {
    throw new KilnError(`unsupported opset ${v}: kiln quantizes ONNX opset ${MIN_OPSET} to ${MAX_OPSET}`, {
      code: 'E_QUANT_OPSET',
      exitCode: 2,
      tryMessage: v < MIN_OPSET ? 'Re-export the model with a newer opset (13 or later is best).' : 'Re-export the model with opset 21 or earlier, or update kiln.',
    })
  }
  return v
}

/** Raise the default-domain opset to at least `target`, rewriting changed ops. Returns the old version. */
export function upgradeOpset(model: ModelProto, target: number): number {
  const from = checkOpset(model)
  if (from >= target) return from
  const names = new NameScope(model)
  for (const {graph} of walkGraphs(model)) {
    for (const node of [...graph.node]) if (node.domain === '' || node.domain === 'ai.onnx') upgradeNode(graph, node, from, names, target)
  }
  ensureOpsetImport(model, '', target)
  if (model.irVersion < 7n) model.irVersion = 7n
  return from
}

function constInt64(graph: GraphProto, names: NameScope, base: string, values: number[]): string {
  const name = names.fresh(base)
  graph.initializer.push(makeTensor(name, DataType.INT64, [values.length], BigInt64Array.from(values.map((v) => BigInt(v)))))
  return name
}

function constFloat(graph: GraphProto, names: NameScope, base: string, values: number[], dims: number[]): string {
  const name = names.fresh(base)
  graph.initializer.push(makeTensor(name, DataType.FLOAT, dims, Float32Array.from(values)))
  return name
}

function takeAttr(node: NodeProto, name: string) {
  const a = getAttribute(node, name)
  if (a) node.attribute = node.attribute.filter((x) => x !== a)
  return a
}

function upgradeNode(graph: GraphProto, node: NodeProto, from: number, names: NameScope, target: number): void {
  const base = node.name || node.output[0] || node.opType
  switch (node.opType) {
    case 'Clip': {
      if (from >= 11) return
      const min = takeAttr(node, 'min')
      const max = takeAttr(node, 'max')
      node.input = [node.input[0]!, min ? constFloat(graph, names, `${base}_min`, [min.f], []) : '', max ? constFloat(graph, names, `${base}_max`, [max.f], []) : '']
      while (node.input.at(-1) === '') node.input.pop()
      return
    }
    case 'Slice': {
      if (from >= 10) return
      const starts = takeAttr(node, 'starts')!.ints.map(Number)
      const ends = takeAttr(node, 'ends')!.ints.map(Number)
      const axes = takeAttr(node, 'axes')?.ints.map(Number)
      node.input = [node.input[0]!, constInt64(graph, names, `${base}_starts`, starts), constInt64(graph, names, `${base}_ends`, ends)]
      if (axes) node.input.push(constInt64(graph, names, `${base}_axes`, axes))
      return
    }
    case 'Squeeze':
    case 'Unsqueeze':
    case 'ReduceSum': {
      if (target < 13) return
      const axes = takeAttr(node, 'axes')
      if (axes) node.input = [node.input[0]!, constInt64(graph, names, `${base}_axes`, axes.ints.map(Number))]
      return
    }
    case 'Split': {
      if (target < 13) return
      const split = takeAttr(node, 'split')
      if (split) node.input = [node.input[0]!, constInt64(graph, names, `${base}_split`, split.ints.map(Number))]
      return
    }
    case 'Pad': {
      if (from >= 11) return
      const pads = takeAttr(node, 'pads') ?? takeAttr(node, 'paddings')
      const value = takeAttr(node, 'value')
      node.input = [node.input[0]!, constInt64(graph, names, `${base}_pads`, pads!.ints.map(Number))]
      if (value) node.input.push(constFloat(graph, names, `${base}_value`, [value.f], []))
      return
    }
    case 'TopK': {
      if (from >= 10) return
      const k = takeAttr(node, 'k')
      node.input = [node.input[0]!, constInt64(graph, names, `${base}_k`, [Number(k!.i)])]
      return
    }
    case 'Upsample':
    case 'Resize': {
      if (node.opType === 'Resize' && from >= 11) return
      const mode = getAttribute(node, 'mode')
      const scalesAttr = takeAttr(node, 'scales')
      const scales = scalesAttr ? constFloat(graph, names, `${base}_scales`, scalesAttr.floats, [scalesAttr.floats.length]) : node.input[1]!
      node.opType = 'Resize'
      node.input = [node.input[0]!, '', scales]
      // Upsample and Resize-10 sampled with asymmetric coordinates and floor rounding.
      node.attribute = [
        ...(mode ? [mode] : []),
        makeAttribute('coordinate_transformation_mode', 'asymmetric'),
        makeAttribute('nearest_mode', 'floor'),
      ]
      return
    }
    case 'Scan':
      if (from < 9) {
        throw new KilnError(`opset ${from} Scan cannot be raised to a newer opset`, {code: 'E_QUANT_OPSET', exitCode: 2, tryMessage: 'Re-export the model with opset 13 or later.'})
      }
      return
    default:
      return
  }
}

