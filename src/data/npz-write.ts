import {KilnError} from '../errors.js'
import {atomicWriteFile} from '../util/fs.js'
import type {NpyArray} from './npy.js'
import {encodeNpy} from './npy.js'

let crcTable: Uint32Array | undefined

/** CRC-32 (IEEE), as zip entries require. Own table: zlib.crc32 is missing from early Node 20 releases. */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256)
    for (let n = 0; n < 256; n++) {
      let c = n
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
      crcTable[n] = c >>> 0
    }
  }
  let crc = 0xffffffff
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}

/**
 * Encode arrays as an uncompressed .npz (a zip of `<name>.npy` entries), readable by numpy and by
 * {@link readNpz}. Stored rather than deflated: the reader can then use the bytes in place.
 */
export function encodeNpz(arrays: Record<string, NpyArray>): Uint8Array[] {
  const parts: Uint8Array[] = []
  const central: Uint8Array[] = []
  let offset = 0
  const names = Object.keys(arrays)
  for (const name of names) {
    const data = encodeNpy(arrays[name]!)
    const fileName = new TextEncoder().encode(`${name}.npy`)
    if (offset + data.length > 0xfffffff0) throw new KilnError(`npz: arrays over 4 GiB in total are not supported`, {code: 'E_DATA'})
    const crc = crc32(data)
    // Pad the local header with an extra field so each array's data lands 64-byte aligned in the
    // file: a reader can then view it in place instead of copying it.
    let pad = (64 - ((offset + 30 + fileName.length) % 64)) % 64
    if (pad > 0 && pad < 4) pad += 64
    const local = new Uint8Array(30 + fileName.length + pad)
    const lv = new DataView(local.buffer)
    if (pad) {
      lv.setUint16(30 + fileName.length, 0x6b6c, true)
      lv.setUint16(32 + fileName.length, pad - 4, true)
    }
    lv.setUint16(28, pad, true)
    lv.setUint32(0, 0x04034b50, true)
    lv.setUint16(4, 20, true)
    lv.setUint32(14, crc, true)
    lv.setUint32(18, data.length, true)
    lv.setUint32(22, data.length, true)
    lv.setUint16(26, fileName.length, true)
    local.set(fileName, 30)
    const cd = new Uint8Array(46 + fileName.length)
    const cv = new DataView(cd.buffer)
    cv.setUint32(0, 0x02014b50, true)
    cv.setUint16(4, 20, true)
    cv.setUint16(6, 20, true)
    cv.setUint32(16, crc, true)
    cv.setUint32(20, data.length, true)
    cv.setUint32(24, data.length, true)
    cv.setUint16(28, fileName.length, true)
    cv.setUint32(42, offset, true)
    cd.set(fileName, 46)
    parts.push(local, data)
    central.push(cd)
    offset += local.length + data.length
  }
  const cdSize = central.reduce((n, c) => n + c.length, 0)
  const end = new Uint8Array(22)
  const ev = new DataView(end.buffer)
  ev.setUint32(0, 0x06054b50, true)
  ev.setUint16(8, names.length, true)
  ev.setUint16(10, names.length, true)
  ev.setUint32(12, cdSize, true)
  ev.setUint32(16, offset, true)
  return [...parts, ...central, end]
}

/** Write arrays to an .npz file atomically. */
export async function writeNpz(file: string, arrays: Record<string, NpyArray>): Promise<void> {
  await atomicWriteFile(file, encodeNpz(arrays))
}
