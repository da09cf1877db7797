/**
 * Dynamic quantization: int8 weights, activations quantized at run time by DynamicQuantizeLinear.
 * The emitted pattern (DynamicQuantizeLinear → MatMulInteger → Cast → Mul by the scale product) is
 * the one onnxruntime fuses into its DynamicQuantizeMatMul kernel; Conv becomes ConvInteger.
 * Works in every graph, subgraphs included, since no calibration run is needed.
 */
import {attrFloat, attrInt, walkGraphs} from '../../onnx/graph.js'
import {makeNode} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {GraphProto, ModelProto, NodeProto} from '../../onnx/proto.js'
import {makeTensor, tensorToFloat32} from '../../onnx/tensor.js'
import {quantizeWeight} from './math.js'
import {NameScope, nodeLabel, removeUnusedWeights, weightIndex} from './graph-util.js'
import type {FloatNode} from './static.js'

export interface DynamicOptions {
  perChannel: boolean
  reduceRange: boolean
  excluded: (node: NodeProto) => boolean
  /** Op types to quantize (default MatMul, Gemm, Conv). */
  ops: ReadonlySet<string>
}

export interface DynamicResult {
  quantizedNodes: Record<string, number>
  leftFloat: FloatNode[]
}

export const DYNAMIC_OPS = ['MatMul', 'Gemm', 'Conv']

export function quantizeDynamic(model: ModelProto, opts: DynamicOptions): DynamicResult {
  const w = weightIndex(model)
  const names = new NameScope(model)
  const counts: Record<string, number> = {}
  const leftFloat: FloatNode[] = []
  for (const {graph} of [...walkGraphs(model)]) {
    const rebuilt: NodeProto[] = []
    for (const node of graph.node) {
      const op = node.opType
      if (node.domain !== '' || !DYNAMIC_OPS.includes(op)) {
        rebuilt.push(node)
        continue
      }
      const weightName = node.input[1]
      const ref = weightName ? w.get(weightName) : undefined
      const skip = (reason: string) => {
        leftFloat.push({node: nodeLabel(node), opType: op, reason})
        rebuilt.push(node)
      }
      if (!opts.ops.has(op)) skip('op type not quantized in the chosen mix')
      else if (opts.excluded(node)) skip('excluded')
      else if (!ref || ref.tensor.dataType !== DataType.FLOAT) skip('weight is computed at run time')
      else if (op === 'Gemm' && (attrInt(node, 'transA', 0) !== 0 || attrFloat(node, 'alpha', 1) !== 1 || attrFloat(node, 'beta', 1) !== 1)) skip('Gemm with transA/alpha/beta')
      else if (op === 'MatMul' && ref.tensor.dims.length !== 2) skip('weight is not a 2-D matrix')
      else {
        rebuilt.push(...(op === 'Conv' ? convInteger(graph, node, tensorToFloat32(ref.tensor), ref.tensor.dims.map(Number), w, names, opts) : matMulInteger(graph, node, ref.tensor, names, opts)))
        counts[op] = (counts[op] ?? 0) + 1
      }
    }
    graph.node = rebuilt
  }
  removeUnusedWeights(model)
  return {quantizedNodes: counts, leftFloat}
}

function addInit(graph: GraphProto, names: NameScope, base: string, type: number, dims: number[], data: Float32Array | Int8Array | Uint8Array | BigInt64Array): string {
  const n = names.fresh(base)
  graph.initializer.push(makeTensor(n, type, dims, data))
  return n
}

function dynamicInput(node: NodeProto, names: NameScope, x: string): {nodes: NodeProto[]; q: string; s: string; zp: string} {
  const base = `${node.name || node.output[0]}`
  const q = names.fresh(`${base}_input_quantized`)
  const s = names.fresh(`${base}_input_scale`)
  const zp = names.fresh(`${base}_input_zero_point`)
  return {nodes: [makeNode('DynamicQuantizeLinear', [x], [q, s, zp], {}, {name: names.fresh(`${base}_DynamicQuantizeLinear`)})], q, s, zp}
}

function matMulInteger(graph: GraphProto, node: NodeProto, weight: {dims: bigint[]} & Parameters<typeof tensorToFloat32>[0], names: NameScope, opts: DynamicOptions): NodeProto[] {
  let dims = weight.dims.map(Number)
  let values = tensorToFloat32(weight)
  if (node.opType === 'Gemm' && attrInt(node, 'transB', 0)) {
    const [n, k] = dims as [number, number]
    const t = new Float32Array(values.length)
    for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) t[j * n + i] = values[i * k + j]!
    values = t
    dims = [k, n]
  }
  const qw = quantizeWeight(values, dims, opts.perChannel ? 1 : undefined, opts.reduceRange)
  const base = node.name || node.output[0]!
  const sdims = opts.perChannel ? [dims[1]!] : []
  const wq = addInit(graph, names, `${node.input[1]}_quantized`, DataType.INT8, dims, qw.data)
  const ws = addInit(graph, names, `${node.input[1]}_scale`, DataType.FLOAT, sdims, qw.scales)
  const wzp = addInit(graph, names, `${node.input[1]}_zero_point`, DataType.INT8, sdims, qw.zeroPoints)
  const dq = dynamicInput(node, names, node.input[0]!)
  const yi = names.fresh(`${base}_output_quantized`)
  const yf = names.fresh(`${base}_output_float`)
  const scale = names.fresh(`${base}_scale_product`)
  const hasBias = node.opType === 'Gemm' && !!node.input[2]
  const y = hasBias ? names.fresh(`${base}_matmul_output`) : node.output[0]!
  const out = [
    ...dq.nodes,
    makeNode('MatMulInteger', [dq.q, wq, dq.zp, wzp], [yi], {}, {name: names.fresh(`${base}_MatMulInteger`)}),
    makeNode('Mul', [dq.s, ws], [scale], {}, {name: names.fresh(`${base}_scale_Mul`)}),
    makeNode('Cast', [yi], [yf], {to: DataType.FLOAT}, {name: names.fresh(`${base}_Cast`)}),
    makeNode('Mul', [yf, scale], [y], {}, {name: names.fresh(`${base}_output_Mul`)}),
  ]
  if (hasBias) out.push(makeNode('Add', [y, node.input[2]!], [node.output[0]!], {}, {name: names.fresh(`${base}_bias_Add`)}))
  return out
}

function convInteger(graph: GraphProto, node: NodeProto, values: Float32Array, dims: number[], w: ReturnType<typeof weightIndex>, names: NameScope, opts: DynamicOptions): NodeProto[] {
  const qw = quantizeWeight(values, dims, opts.perChannel ? 0 : undefined, opts.reduceRange)
  const base = node.name || node.output[0]!
  const m = dims[0]!
  // ConvInteger takes one weight zero point; symmetric weights have 0 everywhere.
  const wq = addInit(graph, names, `${node.input[1]}_quantized`, DataType.INT8, dims, qw.data)
  const wzp = addInit(graph, names, `${node.input[1]}_zero_point`, DataType.INT8, [], Int8Array.of(0))
  const bshape = [1, m, ...dims.slice(2).map(() => 1)]
  const ws = addInit(graph, names, `${node.input[1]}_scale`, DataType.FLOAT, opts.perChannel ? bshape : [], qw.scales)
  const dq = dynamicInput(node, names, node.input[0]!)
  const yi = names.fresh(`${base}_output_quantized`)
  const yf = names.fresh(`${base}_output_float`)
  const scale = names.fresh(`${base}_scale_product`)
  const bias = node.input[2] ? w.get(node.input[2]) : undefined
  const y = node.input[2] ? names.fresh(`${base}_conv_output`) : node.output[0]!
  const conv = makeNode('ConvInteger', [dq.q, wq, dq.zp, wzp], [yi], {}, {name: names.fresh(`${base}_ConvInteger`)})
  conv.attribute = node.attribute.map((a) => ({...a}))
  const out = [
    ...dq.nodes,
    conv,
    makeNode('Mul', [dq.s, ws], [scale], {}, {name: names.fresh(`${base}_scale_Mul`)}),
    makeNode('Cast', [yi], [yf], {to: DataType.FLOAT}, {name: names.fresh(`${base}_Cast`)}),
    makeNode('Mul', [yf, scale], [y], {}, {name: names.fresh(`${base}_output_Mul`)}),
  ]
  if (node.input[2]) {
    let b = node.input[2]
    if (bias) b = addInit(graph, names, `${node.input[2]}_reshaped`, DataType.FLOAT, bshape, tensorToFloat32(bias.tensor))
    else {
      const shape = addInit(graph, names, `${base}_bias_shape`, DataType.INT64, [bshape.length], BigInt64Array.from(bshape.map((d) => BigInt(d === m ? -1 : d))))
      const r = names.fresh(`${base}_bias_reshaped`)
      out.push(makeNode('Reshape', [node.input[2], shape], [r], {}, {name: names.fresh(`${base}_bias_Reshape`)}))
      b = r
    }
    out.push(makeNode('Add', [y, b], [node.output[0]!], {}, {name: names.fresh(`${base}_bias_Add`)}))
  }
  return out
}
