import * as fsp from 'node:fs/promises'
import path from 'node:path'

/** Attribute values in the protobuf-JSON form TF.js graph models use. */
export const attr = {
  i: (v: number) => ({i: String(v)}),
  f: (v: number) => ({f: v}),
  b: (v: boolean) => ({b: v}),
  s: (v: string) => ({s: Buffer.from(v).toString('base64')}),
  ints: (v: number[]) => ({list: {i: v.map(String)}}),
  strs: (v: string[]) => ({list: {s: v.map((x) => Buffer.from(x).toString('base64'))}}),
  type: (v: string) => ({type: v}),
}

export interface GraphConst {
  values: number[]
  shape: number[]
  dtype?: 'float32' | 'int32'
}

export interface GraphSpec {
  inputs: {name: string; shape: number[]; dtype?: 'float32' | 'int32'}[]
  consts?: Record<string, GraphConst>
  nodes: {name: string; op: string; input: string[]; attr?: Record<string, unknown>}[]
}

const DT = {float32: 'DT_FLOAT', int32: 'DT_INT32'}

/** Write a TF.js graph model (model.json + weights.bin) from a small node list. */
export async function writeGraphModel(dir: string, spec: GraphSpec): Promise<string> {
  await fsp.mkdir(dir, {recursive: true})
  const nodes: unknown[] = []
  const weights: unknown[] = []
  const chunks: Buffer[] = []
  for (const i of spec.inputs) {
    nodes.push({name: i.name, op: 'Placeholder', attr: {dtype: attr.type(DT[i.dtype ?? 'float32']), shape: {shape: {dim: i.shape.map((d) => ({size: String(d)}))}}}})
  }
  for (const [name, c] of Object.entries(spec.consts ?? {})) {
    const dtype = c.dtype ?? 'float32'
    nodes.push({name, op: 'Const', attr: {dtype: attr.type(DT[dtype]), value: {tensor: {dtype: DT[dtype], tensorShape: {dim: c.shape.map((d) => ({size: String(d)}))}}}}})
    weights.push({name, shape: c.shape, dtype})
    const arr = dtype === 'int32' ? Int32Array.from(c.values) : Float32Array.from(c.values)
    chunks.push(Buffer.from(arr.buffer))
  }
  for (const n of spec.nodes) nodes.push({name: n.name, op: n.op, input: n.input, attr: {T: attr.type('DT_FLOAT'), ...n.attr}})
  await fsp.writeFile(path.join(dir, 'weights.bin'), Buffer.concat(chunks))
  const json = {format: 'graph-model', generatedBy: 'test', convertedBy: 'test', modelTopology: {node: nodes, versions: {producer: 1}}, weightsManifest: [{paths: ['weights.bin'], weights}]}
  const file = path.join(dir, 'model.json')
  await fsp.writeFile(file, JSON.stringify(json))
  return file
}

/** Deterministic values in [-1, 1). */
export function values(n: number, seed = 1): number[] {
  let s = seed
  return Array.from({length: n}, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31
    return (s / 2 ** 31) * 2 - 1
  })
}
