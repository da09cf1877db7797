import {float16BitsToFloat32, float32ToFloat16Bits} from '../../onnx/float16.js'

/**
 * Open Inference Protocol datatypes and the onnxruntime tensor types they travel as. Tensor data
 * is row-major and, in the binary extension, little-endian (as every typed array is on the
 * platforms onnxruntime-node ships for).
 */
export type OipDatatype = 'BOOL' | 'UINT8' | 'UINT16' | 'UINT32' | 'UINT64' | 'INT8' | 'INT16' | 'INT32' | 'INT64' | 'FP16' | 'FP32' | 'FP64' | 'BYTES'

/** onnxruntime's name for each element type (`Tensor.Type`). */
export type OrtType = 'bool' | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'int8' | 'int16' | 'int32' | 'int64' | 'float16' | 'float32' | 'float64' | 'string'

export type NumericArray = Uint8Array | Uint16Array | Uint32Array | BigUint64Array | Int8Array | Int16Array | Int32Array | BigInt64Array | Float32Array | Float64Array

/** The data of one tensor as it moves between the HTTP layer and the inference workers. */
export type TensorData = NumericArray | string[]

export interface RawTensor {
  name: string
  type: OrtType
  dims: number[]
  data: TensorData
}

/** A typed-array class: fresh of a length, or a view over a buffer. */
interface NumericArrayClass {
  new (length: number): NumericArray
  new (buffer: ArrayBuffer, byteOffset: number, length: number): NumericArray
  readonly BYTES_PER_ELEMENT: number
}

/** Each datatype's onnxruntime type and the array class holding it (none for BYTES, length-prefixed). */
const INFO: Record<OipDatatype, {ort: OrtType; array?: NumericArrayClass}> = {
  BOOL: {ort: 'bool', array: Uint8Array},
  UINT8: {ort: 'uint8', array: Uint8Array},
  UINT16: {ort: 'uint16', array: Uint16Array},
  UINT32: {ort: 'uint32', array: Uint32Array},
  UINT64: {ort: 'uint64', array: BigUint64Array},
  INT8: {ort: 'int8', array: Int8Array},
  INT16: {ort: 'int16', array: Int16Array},
  INT32: {ort: 'int32', array: Int32Array},
  INT64: {ort: 'int64', array: BigInt64Array},
  FP16: {ort: 'float16', array: Uint16Array},
  FP32: {ort: 'float32', array: Float32Array},
  FP64: {ort: 'float64', array: Float64Array},
  BYTES: {ort: 'string'},
}

/** The array class of a fixed-size datatype. */
function arrayOf(datatype: OipDatatype): NumericArrayClass {
  const array = INFO[datatype].array
  if (!array) throw new TypeError(`${datatype} has no fixed-size representation`)
  return array
}

export const OIP_DATATYPES = Object.keys(INFO) as OipDatatype[]

const FROM_ORT = new Map<string, OipDatatype>(OIP_DATATYPES.map((d) => [INFO[d].ort, d]))

export function isOipDatatype(value: unknown): value is OipDatatype {
  return typeof value === 'string' && Object.hasOwn(INFO, value)
}

/** The protocol datatype for an onnxruntime element type, or undefined when the protocol has none (int4, float8...). */
export function oipDatatypeOf(ortType: string): OipDatatype | undefined {
  return FROM_ORT.get(ortType)
}

export function ortTypeOf(datatype: OipDatatype): OrtType {
  return INFO[datatype].ort
}

/** Bytes per element in the binary extension; 0 for BYTES (length-prefixed). */
export function elementSize(datatype: OipDatatype): number {
  return INFO[datatype].array?.BYTES_PER_ELEMENT ?? 0
}

/** The buffers these tensors' data live in, each once (tensors of one request can share its body). */
export function tensorBuffers(tensors: readonly RawTensor[]): ArrayBuffer[] {
  return [...new Set(tensors.flatMap((t) => (Array.isArray(t.data) ? [] : [t.data.buffer as ArrayBuffer])))]
}

/** A fresh typed array of `length` elements (unused for BYTES). */
export function allocate(datatype: OipDatatype, length: number): NumericArray {
  return new (arrayOf(datatype))(length)
}

/** A typed array of `length` elements over `buffer` from `byteOffset` (aligned to the element size). */
export function viewOf(datatype: OipDatatype, buffer: ArrayBuffer, length: number, byteOffset = 0): NumericArray {
  return new (arrayOf(datatype))(buffer, byteOffset, length)
}

/**
 * Store one JSON value into `out[i]`. Returns an error text when the value does not fit the
 * datatype: a request that sends 1.5 for an INT32 input, or 300 for UINT8, is refused rather
 * than silently truncated.
 */
export function storeJsonValue(datatype: OipDatatype, out: NumericArray, i: number, v: unknown): string | undefined {
  switch (datatype) {
    case 'BOOL': {
      if (typeof v !== 'boolean') return 'expected true or false'
      out[i] = v ? 1 : 0
      return undefined
    }
    case 'FP16':
    case 'FP32':
    case 'FP64': {
      if (typeof v !== 'number') return 'expected a number'
      out[i] = datatype === 'FP16' ? float32ToFloat16Bits(v) : v
      return undefined
    }
    case 'INT64':
    case 'UINT64': {
      if (typeof v !== 'number' || !Number.isInteger(v)) return 'expected an integer'
      if (datatype === 'UINT64' && v < 0) return 'expected a non-negative integer'
      out[i] = BigInt(v)
      return undefined
    }
    default: {
      if (typeof v !== 'number' || !Number.isInteger(v)) return 'expected an integer'
      const bits = elementSize(datatype) * 8
      const unsigned = datatype.startsWith('U')
      const min = unsigned ? 0 : -(2 ** (bits - 1))
      const max = unsigned ? 2 ** bits - 1 : 2 ** (bits - 1) - 1
      if (v < min || v > max) return `out of range for ${datatype} [${min}, ${max}]`
      out[i] = v
      return undefined
    }
  }
}

/** Tensor data as plain JSON values (BOOL as booleans, 64-bit integers as numbers, FP16 decoded). */
export function toJsonValues(datatype: OipDatatype, data: TensorData): unknown[] {
  if (Array.isArray(data)) return data
  const n = data.length
  const out = new Array<unknown>(n)
  if (datatype === 'BOOL') for (let i = 0; i < n; i++) out[i] = data[i] !== 0
  else if (datatype === 'FP16') for (let i = 0; i < n; i++) out[i] = float16BitsToFloat32(data[i] as number)
  else if (datatype === 'INT64' || datatype === 'UINT64') for (let i = 0; i < n; i++) out[i] = Number(data[i])
  else if (datatype === 'FP32' || datatype === 'FP64') for (let i = 0; i < n; i++) out[i] = jsonNumber(data[i] as number)
  else for (let i = 0; i < n; i++) out[i] = data[i]
  return out
}

/** JSON has no NaN or Infinity; null keeps the element count right and says "not a number". */
function jsonNumber(v: number): number | null {
  return Number.isFinite(v) ? v : null
}

/** BYTES elements in the binary extension: each a 4-byte little-endian length, then the bytes. */
export function encodeBytesElements(values: string[]): Buffer {
  const parts: Buffer[] = []
  for (const v of values) {
    const b = Buffer.from(v, 'utf8')
    const len = Buffer.allocUnsafe(4)
    len.writeUInt32LE(b.length, 0)
    parts.push(len, b)
  }
  return Buffer.concat(parts)
}

/** Decode length-prefixed BYTES elements; returns an error text when the buffer is malformed. */
export function decodeBytesElements(buf: Uint8Array): string[] | string {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: string[] = []
  let off = 0
  while (off < view.length) {
    if (off + 4 > view.length) return `truncated length prefix at byte ${off}`
    const len = view.readUInt32LE(off)
    off += 4
    if (off + len > view.length) return `element ${out.length} claims ${len} bytes but only ${view.length - off} remain`
    out.push(view.toString('utf8', off, off + len))
    off += len
  }
  return out
}

/** The raw little-endian bytes of a tensor for the binary extension. */
export function tensorBytes(data: TensorData): Buffer {
  if (Array.isArray(data)) return encodeBytesElements(data)
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}
