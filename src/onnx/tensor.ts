import {ModelError} from '../errors.js'
import {fromFloat16Array} from './float16.js'
import {DataLocation, DataType, TensorProtoSchema, create} from './proto.js'
import type {TensorProto} from './proto.js'

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array

interface DTypeInfo {
  name: string
  /** Bits per element (4 for INT4/UINT4). */
  bits: number
  array?: {new (n: number): TypedArray; new (b: ArrayBuffer, o: number, n: number): TypedArray; BYTES_PER_ELEMENT: number}
}

/** Per ONNX data type: its name, element width and the typed array that holds its raw bytes. */
export const DTYPES: Record<number, DTypeInfo> = {
  [DataType.FLOAT]: {name: 'float32', bits: 32, array: Float32Array},
  [DataType.UINT8]: {name: 'uint8', bits: 8, array: Uint8Array},
  [DataType.INT8]: {name: 'int8', bits: 8, array: Int8Array},
  [DataType.UINT16]: {name: 'uint16', bits: 16, array: Uint16Array},
  [DataType.INT16]: {name: 'int16', bits: 16, array: Int16Array},
  [DataType.INT32]: {name: 'int32', bits: 32, array: Int32Array},
  [DataType.INT64]: {name: 'int64', bits: 64, array: BigInt64Array},
  [DataType.STRING]: {name: 'string', bits: 0},
  [DataType.BOOL]: {name: 'bool', bits: 8, array: Uint8Array},
  [DataType.FLOAT16]: {name: 'float16', bits: 16, array: Uint16Array},
  [DataType.DOUBLE]: {name: 'float64', bits: 64, array: Float64Array},
  [DataType.UINT32]: {name: 'uint32', bits: 32, array: Uint32Array},
  [DataType.UINT64]: {name: 'uint64', bits: 64, array: BigUint64Array},
  [DataType.COMPLEX64]: {name: 'complex64', bits: 64},
  [DataType.COMPLEX128]: {name: 'complex128', bits: 128},
  [DataType.BFLOAT16]: {name: 'bfloat16', bits: 16, array: Uint16Array},
  [DataType.FLOAT8E4M3FN]: {name: 'float8e4m3fn', bits: 8, array: Uint8Array},
  [DataType.FLOAT8E4M3FNUZ]: {name: 'float8e4m3fnuz', bits: 8, array: Uint8Array},
  [DataType.FLOAT8E5M2]: {name: 'float8e5m2', bits: 8, array: Uint8Array},
  [DataType.FLOAT8E5M2FNUZ]: {name: 'float8e5m2fnuz', bits: 8, array: Uint8Array},
  [DataType.UINT4]: {name: 'uint4', bits: 4, array: Uint8Array},
  [DataType.INT4]: {name: 'int4', bits: 4, array: Uint8Array},
  [DataType.FLOAT4E2M1]: {name: 'float4e2m1', bits: 4, array: Uint8Array},
  [DataType.FLOAT8E8M0]: {name: 'float8e8m0', bits: 8, array: Uint8Array},
  [DataType.UINT2]: {name: 'uint2', bits: 2, array: Uint8Array},
  [DataType.INT2]: {name: 'int2', bits: 2, array: Uint8Array},
}

export function dtypeName(dataType: number): string {
  return DTYPES[dataType]?.name ?? `dtype${dataType}`
}

export function isFloatType(dataType: number): boolean {
  return dataType === DataType.FLOAT || dataType === DataType.FLOAT16 || dataType === DataType.DOUBLE || dataType === DataType.BFLOAT16
}

export function tensorDims(t: TensorProto): number[] {
  return t.dims.map(Number)
}

export function elementCount(t: TensorProto): number {
  return t.dims.reduce((n, d) => n * Number(d), 1)
}

/** Bytes the tensor's payload occupies (raw layout), whatever field currently holds it. */
export function tensorByteLength(t: TensorProto): number {
  if (t.dataType === DataType.STRING) return t.stringData.reduce((n, s) => n + s.length, 0)
  const info = DTYPES[t.dataType]
  return info ? Math.ceil((elementCount(t) * info.bits) / 8) : t.rawData.length
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === DataLocation.EXTERNAL
}

/**
 * The tensor's elements as a typed array in its raw representation (float16 as Uint16 bits, bool as
 * Uint8). Zero-copy when `raw_data` is suitably aligned; otherwise a copy. Sub-byte types come back
 * packed, as stored.
 */
export function tensorData(t: TensorProto): TypedArray {
  const info = DTYPES[t.dataType]
  if (!info?.array) throw new ModelError(`tensor '${t.name}': data type ${dtypeName(t.dataType)} has no numeric view`)
  if (isExternal(t)) throw new ModelError(`tensor '${t.name}': external data was not loaded`)
  const Ctor = info.array
  const n = info.bits < 8 ? Math.ceil((elementCount(t) * info.bits) / 8) : elementCount(t)
  if (t.rawData.length > 0) {
    const raw = t.rawData
    if (raw.byteLength !== n * Ctor.BYTES_PER_ELEMENT) {
      throw new ModelError(
        `tensor '${t.name}': raw_data has ${raw.byteLength} bytes, expected ${n * Ctor.BYTES_PER_ELEMENT} for ${dtypeName(t.dataType)}[${tensorDims(t).join(',')}]`,
      )
    }
    if (raw.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(raw.buffer as ArrayBuffer, raw.byteOffset, n)
    const copy = new Uint8Array(raw)
    return new Ctor(copy.buffer, 0, n)
  }
  const out = new Ctor(n)
  switch (t.dataType) {
    case DataType.FLOAT:
      out.set(t.floatData as never)
      break
    case DataType.DOUBLE:
      out.set(t.doubleData as never)
      break
    case DataType.INT64:
      out.set(t.int64Data as never)
      break
    case DataType.UINT32:
      for (let i = 0; i < n; i++) (out as Uint32Array)[i] = Number(t.uint64Data[i] ?? 0n)
      break
    case DataType.UINT64:
      out.set(t.uint64Data as never)
      break
    default:
      // int32_data carries every type of 32 bits or less, float16/bfloat16 as bit patterns.
      for (let i = 0; i < n; i++) (out as Int32Array)[i] = t.int32Data[i] ?? 0
  }
  if (n > 0 && out.length === n && t.dataType !== DataType.STRING) {
    const filled = t.floatData.length + t.doubleData.length + t.int64Data.length + t.uint64Data.length + t.int32Data.length
    if (filled === 0) throw new ModelError(`tensor '${t.name}' has ${n} elements but no data`)
  }
  return out
}

/** The tensor's values converted to float32 (fp16, double and integer types included). */
export function tensorToFloat32(t: TensorProto): Float32Array {
  const data = tensorData(t)
  if (data instanceof Float32Array) return data
  if (t.dataType === DataType.FLOAT16) return fromFloat16Array(data as Uint16Array)
  if (t.dataType === DataType.BFLOAT16) {
    const src = data as Uint16Array
    const u = new Uint32Array(src.length)
    for (let i = 0; i < src.length; i++) u[i] = src[i]! << 16
    return new Float32Array(u.buffer)
  }
  const out = new Float32Array(data.length)
  for (let i = 0; i < data.length; i++) out[i] = Number(data[i])
  return out
}

/** Replace the tensor's payload with `data` stored as raw_data (typed fields cleared). */
export function setTensorData(t: TensorProto, data: TypedArray, dims?: readonly number[]): void {
  t.rawData = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength)
  t.floatData = []
  t.doubleData = []
  t.int32Data = []
  t.int64Data = []
  t.uint64Data = []
  t.externalData = []
  t.dataLocation = DataLocation.DEFAULT
  if (dims) t.dims = dims.map((d) => BigInt(d))
}

/** A new tensor with raw_data. */
export function makeTensor(name: string, dataType: number, dims: readonly number[], data: TypedArray): TensorProto {
  const t = create(TensorProtoSchema, {name, dataType})
  setTensorData(t, data, dims)
  return t
}

export function dataTypeOfArray(a: TypedArray): number {
  if (a instanceof Float32Array) return DataType.FLOAT
  if (a instanceof Float64Array) return DataType.DOUBLE
  if (a instanceof Int8Array) return DataType.INT8
  if (a instanceof Uint8Array) return DataType.UINT8
  if (a instanceof Int16Array) return DataType.INT16
  if (a instanceof Uint16Array) return DataType.UINT16
  if (a instanceof Int32Array) return DataType.INT32
  if (a instanceof Uint32Array) return DataType.UINT32
  if (a instanceof BigInt64Array) return DataType.INT64
  return DataType.UINT64
}
