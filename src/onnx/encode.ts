import {GraphProtoSchema, ModelProtoSchema, TensorProtoSchema, create, toBinary} from './proto.js'
import type {DescMessage, ModelProto, TensorProto} from './proto.js'

/**
 * Streamed ModelProto encoding. Encoding a whole model at once holds the model, the writer's chunks
 * and the final buffer: about three copies of every weight. Here the graph's initializers are
 * framed by hand and their raw_data written straight from memory, so writing adds one tensor's
 * metadata at a time. The bytes are exactly what the protobuf runtime would produce: fields in
 * field-number order, unknown fields last (as @bufbuild/protobuf writes them).
 */

const WIRE_LEN = 2
const GRAPH_FIELD = 7 // ModelProto.graph
const INITIALIZER_FIELD = 5 // GraphProto.initializer
const RAW_DATA_FIELD = 9 // TensorProto.raw_data

function varint(n: number): Uint8Array {
  const out: number[] = []
  let v = n
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
  return Uint8Array.from(out)
}

const tag = (field: number) => varint((field << 3) | WIRE_LEN)

/**
 * A copy of `msg` holding only the fields `keep` selects (and, when asked, the unknown fields).
 * Presence is preserved: proto2 fields are present when they are own properties of the message.
 */
function pick<T extends {$typeName: string}>(schema: DescMessage, msg: T, keep: (field: number) => boolean, unknown: boolean): T {
  const copy = create(schema as never) as unknown as Record<string, unknown>
  const source = msg as unknown as Record<string, unknown>
  for (const f of schema.fields) {
    const name = f.oneof ? f.oneof.localName : f.localName
    if (keep(f.number) && Object.hasOwn(source, name)) copy[name] = source[name]
  }
  if (unknown && source.$unknown) copy.$unknown = source.$unknown
  return copy as unknown as T
}

interface TensorFrame {
  head: Uint8Array
  raw?: Uint8Array
  tail: Uint8Array
  length: number
}

function frameTensor(t: TensorProto): TensorFrame {
  const head = toBinary(TensorProtoSchema, pick(TensorProtoSchema, t, (n) => n < RAW_DATA_FIELD, false))
  const tail = toBinary(TensorProtoSchema, pick(TensorProtoSchema, t, (n) => n > RAW_DATA_FIELD, true))
  const raw = Object.hasOwn(t, 'rawData') ? t.rawData : undefined
  const rawLength = raw ? tag(RAW_DATA_FIELD).length + varint(raw.length).length + raw.length : 0
  return {head, raw, tail, length: head.length + rawLength + tail.length}
}

/** Coalesces small pieces into ~1 MiB chunks; large ones pass through without a copy. */
class Chunker {
  private parts: Uint8Array[] = []
  private size = 0
  readonly out: Uint8Array[] = []

  push(part: Uint8Array): void {
    if (part.length >= 1 << 16) {
      this.flush()
      this.out.push(part)
      return
    }
    this.parts.push(part)
    this.size += part.length
    if (this.size >= 1 << 20) this.flush()
  }

  flush(): void {
    if (this.size === 0) return
    const buf = new Uint8Array(this.size)
    let at = 0
    for (const p of this.parts) {
      buf.set(p, at)
      at += p.length
    }
    this.out.push(buf)
    this.parts = []
    this.size = 0
  }
}

/** The model's protobuf bytes: their total length, and the bytes as a sequence of chunks. */
export function encodeModelChunks(model: ModelProto): {length: number; chunks: Iterable<Uint8Array>} {
  const graph = model.graph
  if (!graph) {
    const bytes = toBinary(ModelProtoSchema, model)
    return {length: bytes.length, chunks: [bytes]}
  }
  const before = toBinary(ModelProtoSchema, pick(ModelProtoSchema, model, (n) => n < GRAPH_FIELD, false))
  const after = toBinary(ModelProtoSchema, pick(ModelProtoSchema, model, (n) => n > GRAPH_FIELD, true))
  const graphHead = toBinary(GraphProtoSchema, pick(GraphProtoSchema, graph, (n) => n < INITIALIZER_FIELD, false))
  const graphTail = toBinary(GraphProtoSchema, pick(GraphProtoSchema, graph, (n) => n > INITIALIZER_FIELD, true))
  const frames = graph.initializer.map(frameTensor)
  const initTag = tag(INITIALIZER_FIELD)
  const graphLength = graphHead.length + graphTail.length + frames.reduce((n, f) => n + initTag.length + varint(f.length).length + f.length, 0)
  const graphPrefix = [...tag(GRAPH_FIELD), ...varint(graphLength)]
  const length = before.length + graphPrefix.length + graphLength + after.length

  function* chunks(): Generator<Uint8Array> {
    const chunker = new Chunker()
    const emit = function* (...parts: Uint8Array[]) {
      for (const part of parts) chunker.push(part)
      yield* chunker.out.splice(0)
    }
    yield* emit(before, Uint8Array.from(graphPrefix), graphHead)
    for (const f of frames) {
      yield* emit(initTag, varint(f.length), f.head)
      if (f.raw) yield* emit(tag(RAW_DATA_FIELD), varint(f.raw.length), f.raw)
      yield* emit(f.tail)
    }
    yield* emit(graphTail, after)
    chunker.flush()
    yield* chunker.out.splice(0)
  }
  return {length, chunks: chunks()}
}
