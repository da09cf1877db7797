import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {valueInfoShape} from './build.js'
import {allNodes, allTensors, walkGraphs, weights} from './graph.js'
import {loadExternalData, readModel} from './model.js'
import {DataType} from './proto.js'
import type {ModelProto, TensorProto, ValueInfoProto} from './proto.js'
import {dtypeName, elementCount, isFloatType, tensorByteLength, tensorData, tensorToFloat32} from './tensor.js'

export interface InspectOptions {
  /** Measure the zstd-compressed size of the model file(s) (default true). */
  compressedSize?: boolean
  /** How many of the largest weight tensors to list with their sparsity (default 10). */
  largest?: number
}

export interface TensorSignature {
  name: string
  dtype: string
  /** Fixed dims as numbers, symbolic dims as names, unknown as -1; absent when undeclared. */
  shape?: (number | string)[]
}

export interface DtypeTotals {
  dtype: string
  tensors: number
  params: number
  bytes: number
}

export interface LayerSparsity {
  name: string
  dtype: string
  shape: number[]
  kind: 'initializer' | 'constant'
  /** Where it lives: `main` or the subgraph path. */
  graph: string
  params: number
  /** Fraction of elements that are exactly zero (float weights only; null otherwise). */
  sparsity: number | null
}

export interface InspectResult {
  file: string
  /** The .onnx file plus any external data files. */
  fileBytes: number
  externalDataFiles: string[]
  /** zstd size of the same files (null when not measured). */
  compressedBytes: number | null
  irVersion: number
  producer: string
  opsets: {domain: string; version: number}[]
  inputs: TensorSignature[]
  outputs: TensorSignature[]
  nodes: number
  /** Op histogram across all graphs, most frequent first. */
  ops: {op: string; domain: string; count: number}[]
  /** Nested graphs (If/Loop/Scan bodies...), not counting the main graph. */
  subgraphs: number
  parameters: {
    tensors: number
    count: number
    bytes: number
    /** Of which held by Constant nodes rather than initializers. */
    inConstantNodes: {tensors: number; count: number}
    byDtype: DtypeTotals[]
  }
  sparsity: {
    /** Exact zeros over all float weight elements. */
    overall: number
    zeros: number
    floatParams: number
    largest: LayerSparsity[]
  }
}

function signature(vi: ValueInfoProto): TensorSignature {
  const s = valueInfoShape(vi)
  return {name: vi.name, dtype: s ? dtypeName(s.elemType) : 'unknown', shape: s?.shape}
}

/** Zero count of a float tensor; float16/bfloat16 zeros are ±0 bit patterns, so no conversion is needed for them. */
function countZeros(t: TensorProto): number {
  let zeros = 0
  if (t.dataType === DataType.FLOAT16 || t.dataType === DataType.BFLOAT16) {
    const bits = tensorData(t) as Uint16Array
    for (let i = 0; i < bits.length; i++) if ((bits[i]! & 0x7fff) === 0) zeros++
    return zeros
  }
  const values = t.dataType === DataType.FLOAT || t.dataType === DataType.DOUBLE ? (tensorData(t) as Float32Array | Float64Array) : tensorToFloat32(t)
  for (let i = 0; i < values.length; i++) if (values[i] === 0) zeros++
  return zeros
}

function externalFiles(model: ModelProto, dir: string): string[] {
  const files = new Set<string>()
  for (const {tensor} of allTensors(model)) {
    const loc = tensor.externalData.find((e) => e.key === 'location')?.value
    if (loc) files.add(path.resolve(dir, loc))
  }
  return [...files]
}

async function zstdSize(files: string[]): Promise<number | null> {
  const {compressedSize} = await import('../delivery/compress.js')
  let total = 0
  for (const f of files) {
    // The compressor takes whole buffers, which Node caps at 2 GiB per file read.
    if ((await fsp.stat(f)).size >= 2 ** 31 - 1) return null
    total += await compressedSize(f)
  }
  return total
}

/** Everything `kiln inspect` reports about a model file. */
export async function inspectModel(file: string, options: InspectOptions = {}): Promise<InspectResult> {
  // List the external data files before loading them into the tensors, which forgets where they were.
  const model = await readModel(file, {loadExternalData: false})
  const dataFiles = externalFiles(model, path.dirname(file))
  await loadExternalData(model, path.dirname(file))
  const files = [file, ...dataFiles]
  const fileBytes = (await Promise.all(files.map((f) => fsp.stat(f).then((s) => s.size)))).reduce((a, b) => a + b, 0)

  const ops = new Map<string, {op: string; domain: string; count: number}>()
  let nodes = 0
  for (const {node} of allNodes(model)) {
    nodes++
    const domain = node.domain === 'ai.onnx' ? '' : node.domain
    const key = `${domain}\u0000${node.opType}`
    const entry = ops.get(key) ?? {op: node.opType, domain, count: 0}
    entry.count++
    ops.set(key, entry)
  }

  const byDtype = new Map<string, DtypeTotals>()
  const layers: LayerSparsity[] = []
  let tensors = 0
  let count = 0
  let bytes = 0
  const inConstantNodes = {tensors: 0, count: 0}
  let zeros = 0
  let floatParams = 0
  for (const w of weights(model)) {
    const t = w.tensor
    const n = elementCount(t)
    const b = tensorByteLength(t)
    tensors++
    count += n
    bytes += b
    if (w.kind === 'constant') {
      inConstantNodes.tensors++
      inConstantNodes.count += n
    }
    const dtype = dtypeName(t.dataType)
    const d = byDtype.get(dtype) ?? {dtype, tensors: 0, params: 0, bytes: 0}
    d.tensors++
    d.params += n
    d.bytes += b
    byDtype.set(dtype, d)
    let sparsity: number | null = null
    if (isFloatType(t.dataType) && n > 0) {
      const z = countZeros(t)
      zeros += z
      floatParams += n
      sparsity = z / n
    }
    layers.push({name: w.name, dtype, shape: t.dims.map(Number), kind: w.kind, graph: w.path.length ? w.path.join(' / ') : 'main', params: n, sparsity})
  }
  layers.sort((a, b) => b.params - a.params)

  return {
    file,
    fileBytes,
    externalDataFiles: dataFiles,
    compressedBytes: options.compressedSize === false ? null : await zstdSize(files),
    irVersion: Number(model.irVersion),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    opsets: model.opsetImport.map((o) => ({domain: o.domain === 'ai.onnx' ? '' : o.domain, version: Number(o.version)})),
    inputs: model.graph!.input.filter((i) => !model.graph!.initializer.some((t) => t.name === i.name)).map(signature),
    outputs: model.graph!.output.map(signature),
    nodes,
    ops: [...ops.values()].sort((a, b) => b.count - a.count || a.op.localeCompare(b.op)),
    subgraphs: [...walkGraphs(model)].length - 1,
    parameters: {tensors, count, bytes, inConstantNodes, byDtype: [...byDtype.values()].sort((a, b) => b.bytes - a.bytes)},
    sparsity: {overall: floatParams ? zeros / floatParams : 0, zeros, floatParams, largest: layers.slice(0, options.largest ?? 10)},
  }
}
