import {TF_DTYPES} from '../builder.js'

/** A node of a TF.js graph model (`modelTopology.node[]`), as tensorflowjs_converter writes it. */
export interface TfNode {
  name: string
  op: string
  input?: string[]
  attr?: Record<string, any>
}

const decodeB64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8')

/** Typed access to a node's attributes (protobuf JSON: int64 as strings, strings as base64). */
export class Attrs {
  constructor(private readonly node: TfNode) {}

  has(name: string): boolean {
    return this.node.attr?.[name] !== undefined
  }

  int(name: string, fallback = 0): number {
    const a = this.node.attr?.[name]
    return a?.i !== undefined ? Number(a.i) : fallback
  }

  float(name: string, fallback = 0): number {
    const a = this.node.attr?.[name]
    return a?.f !== undefined ? Number(a.f) : fallback
  }

  bool(name: string, fallback = false): boolean {
    const a = this.node.attr?.[name]
    return a?.b !== undefined ? Boolean(a.b) : fallback
  }

  string(name: string, fallback = ''): string {
    const a = this.node.attr?.[name]
    return a?.s !== undefined ? decodeB64(a.s) : fallback
  }

  ints(name: string): number[] {
    const l = this.node.attr?.[name]?.list
    return (l?.i ?? []).map((x: string | number) => Number(x))
  }

  strings(name: string): string[] {
    const l = this.node.attr?.[name]?.list
    return (l?.s ?? []).map((x: string) => decodeB64(x))
  }

  /** An ONNX DataType for a TF `type` attribute. */
  dtype(name: string): number | undefined {
    const t = this.node.attr?.[name]?.type
    return t === undefined ? undefined : TF_DTYPES[t]
  }

  /** Dims of a `shape` attribute (-1 unknown), or undefined when unknown rank. */
  shape(name: string): number[] | undefined {
    const s = this.node.attr?.[name]?.shape
    if (!s || s.unknownRank) return undefined
    return (s.dim ?? []).map((d: {size?: string}) => Number(d.size ?? -1))
  }
}
