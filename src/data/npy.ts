import * as fsp from 'node:fs/promises'
import {inflateRawSync} from 'node:zlib'
import {KilnError} from '../errors.js'

/** One NPY array: dtype as numpy spells it (`<f4`, `|u1`...), shape, and the values. */
export interface NpyArray {
  dtype: string
  shape: number[]
  data: Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array
}

const NPY_TYPES: Record<string, {new (b: ArrayBuffer, o: number, n: number): NpyArray['data']; BYTES_PER_ELEMENT: number}> = {
  f4: Float32Array,
  f8: Float64Array,
  i1: Int8Array,
  u1: Uint8Array,
  b1: Uint8Array,
  i2: Int16Array,
  u2: Uint16Array,
  i4: Int32Array,
  u4: Uint32Array,
  i8: BigInt64Array,
  u8: BigUint64Array,
}

/** An NPY header: dtype as numpy spells it, shape, and where the data starts. */
export interface NpyHeader {
  dtype: string
  shape: number[]
  dataOffset: number
}

/**
 * Parse an NPY header (format versions 1–3, C order, little-endian or byte-agnostic dtypes). Needs
 * only the first bytes of the file, so readers can take rows on demand.
 */
export function parseNpyHeader(bytes: Uint8Array, label = 'array'): NpyHeader {
  const magic = String.fromCharCode(...bytes.subarray(1, 6))
  if (bytes[0] !== 0x93 || magic !== 'NUMPY') throw new KilnError(`${label}: not an NPY file`, {code: 'E_DATA'})
  const major = bytes[6]!
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true)
  const start = major === 1 ? 10 : 12
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen))
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1]
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1]
  if (!descr || shapeText === undefined) throw new KilnError(`${label}: malformed NPY header`, {code: 'E_DATA'})
  if (/'fortran_order':\s*True/.test(header)) throw new KilnError(`${label}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray`, {code: 'E_DATA'})
  if (descr.startsWith('>')) throw new KilnError(`${label}: big-endian dtype ${descr} is not supported`, {code: 'E_DATA'})
  if (!NPY_TYPES[descr.replace(/^[<|=]/, '')]) throw new KilnError(`${label}: unsupported dtype ${descr}`, {code: 'E_DATA'})
  const shape = shapeText
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)
    .map(Number)
  return {dtype: descr, shape, dataOffset: start + headerLen}
}

/** Parse NPY bytes into an array (see {@link parseNpyHeader}). */
export function parseNpy(bytes: Uint8Array, label = 'array'): NpyArray {
  const {dtype: descr, shape, dataOffset: offset} = parseNpyHeader(bytes, label)
  const Ctor = NPY_TYPES[descr.replace(/^[<|=]/, '')]!
  const count = shape.reduce((a, b) => a * b, 1)
  const need = count * Ctor.BYTES_PER_ELEMENT
  if (bytes.length - offset < need) throw new KilnError(`${label}: truncated NPY data (${bytes.length - offset} of ${need} bytes)`, {code: 'E_DATA'})
  const abs = bytes.byteOffset + offset
  const data =
    abs % Ctor.BYTES_PER_ELEMENT === 0
      ? new Ctor(bytes.buffer as ArrayBuffer, abs, count)
      : new Ctor(bytes.slice(offset, offset + need).buffer as ArrayBuffer, 0, count)
  return {dtype: descr, shape, data}
}

/** Encode an array as NPY v1. */
export function encodeNpy(arr: NpyArray): Uint8Array {
  const shape = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`
  let header = `{'descr': '${arr.dtype}', 'fortran_order': False, 'shape': ${shape}, }`
  const total = 10 + header.length + 1
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n'
  const out = new Uint8Array(10 + header.length + arr.data.byteLength)
  out.set([0x93, ...new TextEncoder().encode('NUMPY'), 1, 0])
  new DataView(out.buffer).setUint16(8, header.length, true)
  out.set(new TextEncoder().encode(header), 10)
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength), 10 + header.length)
  return out
}

/** Read the entries of a zip archive (stored or deflated), as NPZ files are. */
export function readZipEntries(buf: Uint8Array, label = 'archive'): Map<string, Uint8Array> {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let eocd = -1
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65_557); i--) {
    if (dv.getUint32(i, true) === 0x06054b50) {
      eocd = i
      break
    }
  }
  if (eocd < 0) throw new KilnError(`${label}: not a zip/npz archive (or truncated)`, {code: 'E_DATA'})
  let count = dv.getUint16(eocd + 10, true)
  let cd = dv.getUint32(eocd + 16, true)
  // ZIP64 (numpy writes it for large arrays)
  if (cd === 0xffffffff || count === 0xffff) {
    const loc = eocd - 20
    if (loc >= 0 && dv.getUint32(loc, true) === 0x07064b50) {
      const z64 = Number(dv.getBigUint64(loc + 8, true))
      count = Number(dv.getBigUint64(z64 + 32, true))
      cd = Number(dv.getBigUint64(z64 + 48, true))
    }
  }
  const out = new Map<string, Uint8Array>()
  for (let n = 0; n < count; n++) {
    if (dv.getUint32(cd, true) !== 0x02014b50) throw new KilnError(`${label}: corrupt zip central directory`, {code: 'E_DATA'})
    const method = dv.getUint16(cd + 10, true)
    let csize = dv.getUint32(cd + 20, true)
    const nameLen = dv.getUint16(cd + 28, true)
    const extraLen = dv.getUint16(cd + 30, true)
    const commentLen = dv.getUint16(cd + 32, true)
    let local = dv.getUint32(cd + 42, true)
    const name = new TextDecoder().decode(buf.subarray(cd + 46, cd + 46 + nameLen))
    // ZIP64 extra field carries the real sizes/offset when the 32-bit ones are saturated.
    let usize = dv.getUint32(cd + 24, true)
    let e = cd + 46 + nameLen
    const end = e + extraLen
    while (e + 4 <= end) {
      const id = dv.getUint16(e, true)
      const len = dv.getUint16(e + 2, true)
      if (id === 0x0001) {
        let p = e + 4
        if (usize === 0xffffffff) (usize = Number(dv.getBigUint64(p, true))), (p += 8)
        if (csize === 0xffffffff) (csize = Number(dv.getBigUint64(p, true))), (p += 8)
        if (local === 0xffffffff) local = Number(dv.getBigUint64(p, true))
      }
      e += 4 + len
    }
    const lNameLen = dv.getUint16(local + 26, true)
    const lExtraLen = dv.getUint16(local + 28, true)
    const dataStart = local + 30 + lNameLen + lExtraLen
    const raw = buf.subarray(dataStart, dataStart + csize)
    if (raw.length < csize) throw new KilnError(`${label}: entry ${name} is truncated`, {code: 'E_DATA'})
    out.set(name, method === 0 ? raw : method === 8 ? inflateRawSync(raw) : fail(`${label}: entry ${name} uses unsupported compression ${method}`))
    cd += 46 + nameLen + extraLen + commentLen
  }
  return out
}

function fail(message: string): never {
  throw new KilnError(message, {code: 'E_DATA'})
}

/** Read an .npz (arrays by name, `.npy` suffix dropped) or a single .npy (one array named after the file). */
export async function readNpz(file: string): Promise<Map<string, NpyArray>> {
  let buf: Buffer
  try {
    buf = await fsp.readFile(file)
  } catch (error) {
    throw new KilnError(`cannot read dataset ${file}: ${(error as NodeJS.ErrnoException).code}`, {code: 'E_DATA'})
  }
  if (file.endsWith('.npy')) {
    const name = file.split('/').pop()!.replace(/\.npy$/, '')
    return new Map([[name, parseNpy(buf, file)]])
  }
  const out = new Map<string, NpyArray>()
  for (const [name, bytes] of readZipEntries(buf, file)) out.set(name.replace(/\.npy$/, ''), parseNpy(bytes, `${file}:${name}`))
  return out
}
