import {
  AttributeProtoSchema,
  AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  create,
} from './proto.js'
import type {AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto} from './proto.js'

/** An attribute value as written by kiln code: inferred from the JS type. */
export type AttrValue = number | bigint | string | number[] | string[] | TensorProto | GraphProto | Uint8Array | {floats: number[]} | {float: number}

/**
 * Build an attribute. Integers (JS numbers with no fraction) become INT/INTS; wrap floats that happen
 * to be whole in `{float}` / `{floats}` to force FLOAT/FLOATS.
 */
export function makeAttribute(name: string, value: AttrValue): AttributeProto {
  const a = create(AttributeProtoSchema, {name})
  if (typeof value === 'bigint') Object.assign(a, {type: AttributeType.INT, i: value})
  else if (typeof value === 'number') {
    if (Number.isInteger(value)) Object.assign(a, {type: AttributeType.INT, i: BigInt(value)})
    else Object.assign(a, {type: AttributeType.FLOAT, f: value})
  } else if (typeof value === 'string') Object.assign(a, {type: AttributeType.STRING, s: new TextEncoder().encode(value)})
  else if (value instanceof Uint8Array) Object.assign(a, {type: AttributeType.STRING, s: value})
  else if (Array.isArray(value)) {
    if (value.every((v) => typeof v === 'string')) Object.assign(a, {type: AttributeType.STRINGS, strings: (value as string[]).map((v) => new TextEncoder().encode(v))})
    else if ((value as number[]).every((v) => Number.isInteger(v))) Object.assign(a, {type: AttributeType.INTS, ints: (value as number[]).map((v) => BigInt(v))})
    else Object.assign(a, {type: AttributeType.FLOATS, floats: value as number[]})
  } else if ('floats' in value) Object.assign(a, {type: AttributeType.FLOATS, floats: value.floats})
  else if ('float' in value) Object.assign(a, {type: AttributeType.FLOAT, f: value.float})
  else if (value.$typeName === 'onnx.TensorProto') Object.assign(a, {type: AttributeType.TENSOR, t: value})
  else Object.assign(a, {type: AttributeType.GRAPH, g: value})
  return a
}

export function makeNode(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, AttrValue | undefined> = {},
  opts: {name?: string; domain?: string} = {},
): NodeProto {
  return create(NodeProtoSchema, {
    opType,
    input: inputs,
    output: outputs,
    name: opts.name ?? '',
    domain: opts.domain ?? '',
    attribute: Object.entries(attrs)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => makeAttribute(k, v!)),
  })
}

/** A tensor value-info; dims may be numbers, symbolic names, or -1/undefined for unknown. */
export function makeValueInfo(name: string, elemType: number, shape?: readonly (number | string | undefined)[]): ValueInfoProto {
  const tensorType = create(TypeProto_TensorSchema, {elemType})
  if (shape) {
    tensorType.shape = create(TensorShapeProtoSchema, {
      dim: shape.map((d) =>
        typeof d === 'number' && d >= 0
          ? create(TensorShapeProto_DimensionSchema, {value: {case: 'dimValue', value: BigInt(d)}})
          : typeof d === 'string'
            ? create(TensorShapeProto_DimensionSchema, {value: {case: 'dimParam', value: d}})
            : create(TensorShapeProto_DimensionSchema, {}),
      ),
    })
  }
  return create(ValueInfoProtoSchema, {name, type: create(TypeProtoSchema, {value: {case: 'tensorType', value: tensorType}})})
}

/** Shape of a value-info: numbers for fixed dims, strings for symbolic, -1 when unknown. */
export function valueInfoShape(vi: ValueInfoProto): {elemType: number; shape?: (number | string)[]} | undefined {
  if (vi.type?.value.case !== 'tensorType') return undefined
  const tt = vi.type.value.value
  return {
    elemType: tt.elemType,
    shape: tt.shape?.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : d.value.case === 'dimParam' ? d.value.value : -1)),
  }
}

export function makeGraph(parts: Partial<Pick<GraphProto, 'name' | 'node' | 'input' | 'output' | 'initializer' | 'valueInfo'>>): GraphProto {
  return create(GraphProtoSchema, parts)
}

export function makeModel(graph: GraphProto, opsets: Record<string, number> = {'': 17}, irVersion = 8): ModelProto {
  return create(ModelProtoSchema, {
    irVersion: BigInt(irVersion),
    producerName: 'kiln',
    graph,
    opsetImport: Object.entries(opsets).map(([domain, version]) => create(OperatorSetIdProtoSchema, {domain, version: BigInt(version)})),
  })
}
