import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import {createGunzip, gunzipSync} from 'node:zlib'
import {KilnError} from '../errors.js'
import type {NpyArray} from './npy.js'

/** IDX element types (the third magic byte) → numpy dtype and element width. IDX data is big-endian. */
const IDX_TYPES: Record<number, {dtype: string; bytes: number}> = {
  0x08: {dtype: '|u1', bytes: 1},
  0x09: {dtype: '|i1', bytes: 1},
  0x0b: {dtype: '<i2', bytes: 2},
  0x0c: {dtype: '<i4', bytes: 4},
  0x0d: {dtype: '<f4', bytes: 4},
  0x0e: {dtype: '<f8', bytes: 8},
}

export interface IdxHeader {
  dtype: string
  shape: number[]
  /** Byte length of the header (magic + dims). */
  headerBytes: number
  elementBytes: number
}

const isGzip = (b: Uint8Array): boolean => b[0] === 0x1f && b[1] === 0x8b

/** Parse the header of IDX bytes (at least 4 + 4·ndim bytes). */
export function parseIdxHeader(bytes: Uint8Array, label = 'idx'): IdxHeader {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) throw new KilnError(`${label}: not an IDX file (bad magic)`, {code: 'E_DATA'})
  const type = IDX_TYPES[bytes[2]!]
  if (!type) throw new KilnError(`${label}: unknown IDX element type 0x${bytes[2]!.toString(16)}`, {code: 'E_DATA'})
  const ndim = bytes[3]!
  if (bytes.length < 4 + 4 * ndim) throw new KilnError(`${label}: truncated IDX header`, {code: 'E_DATA'})
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const shape = Array.from({length: ndim}, (_, i) => dv.getUint32(4 + 4 * i, false))
  return {dtype: type.dtype, shape, headerBytes: 4 + 4 * ndim, elementBytes: type.bytes}
}

/** Decode `count` big-endian IDX elements into a little-endian typed array of the numpy dtype. */
export function decodeIdxElements(bytes: Uint8Array, header: IdxHeader, count: number): NpyArray['data'] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  switch (header.dtype) {
    case '|u1':
      return Uint8Array.from(bytes.subarray(0, count))
    case '|i1':
      return new Int8Array(Uint8Array.from(bytes.subarray(0, count)).buffer)
    case '<i2':
      return Int16Array.from({length: count}, (_, i) => dv.getInt16(2 * i, false))
    case '<i4':
      return Int32Array.from({length: count}, (_, i) => dv.getInt32(4 * i, false))
    case '<f4':
      return Float32Array.from({length: count}, (_, i) => dv.getFloat32(4 * i, false))
    default:
      return Float64Array.from({length: count}, (_, i) => dv.getFloat64(8 * i, false))
  }
}

/** Read a whole IDX file (plain or gzip) into memory. Use {@link streamIdx} for large files. */
export async function readIdx(file: string): Promise<NpyArray> {
  let buf: Uint8Array
  try {
    buf = await fsp.readFile(file)
  } catch (error) {
    throw new KilnError(`cannot read dataset ${file}: ${(error as NodeJS.ErrnoException).code}`, {code: 'E_DATA'})
  }
  if (isGzip(buf)) buf = gunzipSync(buf)
  const header = parseIdxHeader(buf, file)
  const count = header.shape.reduce((a, b) => a * b, 1)
  const body = buf.subarray(header.headerBytes)
  if (body.length < count * header.elementBytes) throw new KilnError(`${file}: truncated IDX data`, {code: 'E_DATA'})
  return {dtype: header.dtype, shape: header.shape, data: decodeIdxElements(body, header, count)}
}

/**
 * Stream an IDX file (plain or gzip) as groups of whole rows (first dimension), never holding more
 * than one chunk of the decompressed file in memory.
 */
export async function* streamIdx(file: string, rowsPerChunk: number, signal?: AbortSignal): AsyncGenerator<{header: IdxHeader; rows: number; data: NpyArray['data']}> {
  const head = Buffer.alloc(2)
  const fd = await fsp.open(file, 'r').catch((error: NodeJS.ErrnoException) => {
    throw new KilnError(`cannot read dataset ${file}: ${error.code}`, {code: 'E_DATA'})
  })
  await fd.read(head, 0, 2, 0)
  await fd.close()
  const raw = fs.createReadStream(file, {highWaterMark: 1 << 20})
  const source: AsyncIterable<Buffer> = isGzip(head) ? raw.pipe(createGunzip()) : raw
  let pending: Buffer = Buffer.alloc(0)
  let header: IdxHeader | undefined
  let rowBytes = 0
  let remaining = 0
  try {
    for await (const chunk of source) {
      if (signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
      if (!header) {
        if (pending.length < 4 || pending.length < 4 + 4 * pending[3]!) continue
        header = parseIdxHeader(pending, file)
        rowBytes = header.shape.slice(1).reduce((a, b) => a * b, 1) * header.elementBytes
        remaining = header.shape[0] ?? 1
        pending = pending.subarray(header.headerBytes)
      }
      while (remaining > 0 && pending.length >= Math.min(rowsPerChunk, remaining) * rowBytes) {
        const rows = Math.min(rowsPerChunk, remaining)
        yield {header, rows, data: decodeIdxElements(pending, header, (rows * rowBytes) / header.elementBytes)}
        pending = pending.subarray(rows * rowBytes)
        remaining -= rows
      }
      if (remaining === 0) return
    }
    if (!header || remaining > 0) throw new KilnError(`${file}: truncated IDX data`, {code: 'E_DATA'})
  } finally {
    raw.destroy()
  }
}
