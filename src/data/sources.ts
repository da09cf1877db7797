import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as readline from 'node:readline'
import {constants as zlibConstants, createGunzip, createInflateRaw, inflateRawSync} from 'node:zlib'
import {KilnError} from '../errors.js'
import type {TypedArray} from '../onnx/tensor.js'
import {decodeIdxElements, parseIdxHeader, streamIdx} from './idx.js'
import type {NpyHeader} from './npy.js'
import {parseNpyHeader} from './npy.js'

/** One field (array, column group, JSON key) of a dataset: element type and per-sample shape. */
export interface Field {
  name: string
  /** numpy-style dtype (`<f4`, `|u1`...). */
  dtype: string
  shape: number[]
}

/** A chunk of consecutive samples: field → values for `rows` samples, row-major. */
export interface Rows {
  rows: number
  values: Record<string, TypedArray>
}

/**
 * A dataset reader. Random-access sources (`read`) let kiln shuffle and limit without reading
 * everything; stream sources (`stream`) are read once, front to back.
 */
export interface Source {
  fields: Field[]
  length?: number
  /** Rows by index. */
  read?(indices: number[], fields: string[], how?: ReadHow): Promise<Rows>
  stream?(fields: string[], signal?: AbortSignal): AsyncIterable<Rows>
  close(): Promise<void>
}

/** A typed-array constructor: fresh, or a view over a buffer. */
export type ArrayCtor = {new (n: number): TypedArray; new (b: ArrayBuffer, o: number, n: number): TypedArray; BYTES_PER_ELEMENT: number}

const CTORS: Record<string, ArrayCtor> = {
  f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array, b1: Uint8Array, i2: Int16Array, u2: Uint16Array,
  i4: Int32Array, u4: Uint32Array, i8: BigInt64Array, u8: BigUint64Array,
}
export const ctorOf = (dtype: string) => CTORS[dtype.replace(/^[<|=]/, '')]!

const per = (shape: number[]) => shape.reduce((a, b) => a * b, 1)

function cannotRead(file: string, error: unknown): KilnError {
  return new KilnError(`cannot read dataset ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
    code: 'E_DATA',
    tryMessage: 'Check the dataset path (relative to the pipeline file) and its permissions.',
  })
}

/**
 * Where a source may put a field's rows: a buffer of at least `bytes` the caller owns and reuses,
 * or undefined for a fresh one. Reusing buffers matters: freshly allocated memory costs a page
 * fault per 4 KiB on first touch, which for a fast model outweighs the read itself.
 */
export type Scratch = (field: string, bytes: number) => Buffer | undefined

/** How a random-access read may be done. */
export interface ReadHow {
  /** A buffer to read a field's rows into instead of a new one. */
  scratch?: Scratch
  /**
   * Read on the calling thread instead of the I/O thread pool. When inference already keeps every
   * core busy, a read on another thread cannot overlap with it; it only contends with inference
   * for the cores and adds a thread hop, so reading in line is faster.
   */
  sync?: boolean
}

/** An array stored uncompressed at a byte offset of a file: rows are read on demand, never all at once. */
interface OnDisk {
  fd: fsp.FileHandle
  offset: number
  dtype: string
  shape: number[]
  /** The whole array, once read: small arrays (labels) are read once instead of a few rows per batch. */
  whole?: Promise<TypedArray>
}

/** Arrays up to this size are read whole on first use and served from memory. */
const SMALL_ARRAY_BYTES = 1 << 20

async function readRowsAt(a: OnDisk, indices: number[], how?: ReadHow, field?: string): Promise<TypedArray> {
  const Ctor = ctorOf(a.dtype)
  const rowBytes = per(a.shape.slice(1)) * Ctor.BYTES_PER_ELEMENT
  // A small array costs a read (a system call) per batch for a few hundred bytes: read it once.
  // (Stored arrays always have a first dimension: a scalar is one row.)
  const length = a.shape[0]!
  if (rowBytes * length <= SMALL_ARRAY_BYTES && indices.length < length) {
    a.whole ??= readRowsAt({...a, whole: undefined}, Array.from({length}, (_, i) => i), how && {sync: how.sync})
    const whole = await a.whole
    const n = rowBytes / Ctor.BYTES_PER_ELEMENT
    const consecutive = indices.every((v, i) => i === 0 || v === indices[i - 1]! + 1)
    if (consecutive) return whole.subarray(indices[0]! * n, (indices.at(-1)! + 1) * n) as TypedArray
    const out = new Ctor(indices.length * n)
    indices.forEach((r, i) => (out as Float32Array).set((whole as Float32Array).subarray(r * n, (r + 1) * n), i * n))
    return out
  }
  // Every byte is overwritten by the reads below (or the read throws), so no zero fill.
  const into = field === undefined ? undefined : how?.scratch?.(field, rowBytes * indices.length)
  const buf = into ? into.subarray(0, rowBytes * indices.length) : Buffer.allocUnsafeSlow(rowBytes * indices.length)
  // Coalesce runs of consecutive rows into one read (the common, unshuffled case). The reads of a
  // shuffled batch are all issued at once: in turn, each would wait a round trip through the event
  // loop, which is blocked while a model runs.
  const pending: Promise<void>[] = []
  for (let i = 0; i < indices.length; ) {
    let j = i + 1
    while (j < indices.length && indices[j] === indices[j - 1]! + 1) j++
    const [at, len, pos, row] = [i * rowBytes, (j - i) * rowBytes, a.offset + indices[i]! * rowBytes, indices[i]!]
    const check = (bytesRead: number) => {
      if (bytesRead < len) throw new KilnError(`dataset array is truncated at row ${row}`, {code: 'E_DATA'})
    }
    if (how?.sync) check(fs.readSync(a.fd.fd, buf, at, len, pos))
    else pending.push(a.fd.read(buf, at, len, pos).then((r) => check(r.bytesRead)))
    i = j
  }
  await Promise.all(pending)
  return new Ctor(buf.buffer as ArrayBuffer, buf.byteOffset, buf.length / Ctor.BYTES_PER_ELEMENT)
}

/** The header of a stored array; a scalar counts as one row. Rows are read later, on demand. */
function headerOfNpy(bytes: Uint8Array, label: string): NpyHeader {
  const h = parseNpyHeader(bytes, label)
  return {...h, shape: h.shape.length ? h.shape : [1]}
}

/** A single .npy: rows read on demand. */
export async function npySource(file: string): Promise<Source> {
  const fd = await fsp.open(file, 'r').catch((e) => Promise.reject(cannotRead(file, e)))
  const head = Buffer.alloc(4096)
  await fd.read(head, 0, 4096, 0)
  const h = headerOfNpy(head, file)
  const name = file.split('/').pop()!.replace(/\.npy$/, '')
  const arr: OnDisk = {fd, offset: h.dataOffset, dtype: h.dtype, shape: h.shape}
  return {
    fields: [{name, dtype: h.dtype, shape: h.shape.slice(1)}],
    length: h.shape[0],
    async read(indices, _fields, how) {
      return {rows: indices.length, values: {[name]: await readRowsAt(arr, indices, how, name)}}
    },
    close: () => fd.close(),
  }
}

/**
 * An .npz: stored (uncompressed) entries are read row by row from the file; deflated entries have
 * to be inflated whole, one array at a time.
 */
export async function npzSource(file: string): Promise<Source> {
  const fd = await fsp.open(file, 'r').catch((e) => Promise.reject(cannotRead(file, e)))
  try {
    return await npzOpened(file, fd)
  } catch (error) {
    await fd.close()
    throw error
  }
}

async function npzOpened(file: string, fd: fsp.FileHandle): Promise<Source> {
  // The directory and headers are a few small reads: done in line, each costs a fraction of a
  // round trip through the thread pool, which matters to the first batch of a fast model.
  const readAt = (b: Buffer, pos: number) => fs.readSync(fd.fd, b, 0, b.length, pos)
  const {size} = fs.fstatSync(fd.fd)
  const tailLen = Math.min(size, 65_557 + 22)
  const tail = Buffer.alloc(tailLen)
  readAt(tail, size - tailLen)
  let eocd = -1
  for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break }
  if (eocd < 0) throw new KilnError(`${file}: not a zip/npz archive (or truncated)`, {code: 'E_DATA'})
  let count = tail.readUInt16LE(eocd + 10)
  let cdSize = tail.readUInt32LE(eocd + 12)
  let cdOffset = tail.readUInt32LE(eocd + 16)
  if (cdOffset === 0xffffffff || count === 0xffff) {
    const loc = eocd - 20
    if (loc >= 0 && tail.readUInt32LE(loc) === 0x07064b50) {
      const z64 = Buffer.alloc(56)
      readAt(z64, Number(tail.readBigUInt64LE(loc + 8)))
      count = Number(z64.readBigUInt64LE(32))
      cdSize = Number(z64.readBigUInt64LE(40))
      cdOffset = Number(z64.readBigUInt64LE(48))
    }
  }
  const cd = Buffer.alloc(cdSize)
  readAt(cd, cdOffset)
  const arrays = new Map<string, {disk?: OnDisk; deflated?: Deflated; field: Field}>()
  let p = 0
  for (let n = 0; n < count; n++) {
    if (cd.readUInt32LE(p) !== 0x02014b50) throw new KilnError(`${file}: corrupt zip central directory`, {code: 'E_DATA'})
    const method = cd.readUInt16LE(p + 10)
    let csize = cd.readUInt32LE(p + 20)
    const nameLen = cd.readUInt16LE(p + 28)
    const extraLen = cd.readUInt16LE(p + 30)
    const commentLen = cd.readUInt16LE(p + 32)
    let local = cd.readUInt32LE(p + 42)
    const entry = cd.subarray(p + 46, p + 46 + nameLen).toString('utf8')
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = cd.readUInt16LE(e)
      const len = cd.readUInt16LE(e + 2)
      if (id === 0x0001) {
        let q = e + 4
        if (cd.readUInt32LE(p + 24) === 0xffffffff) q += 8
        if (csize === 0xffffffff) (csize = Number(cd.readBigUInt64LE(q))), (q += 8)
        if (local === 0xffffffff) local = Number(cd.readBigUInt64LE(q))
      }
      e += 4 + len
    }
    p += 46 + nameLen + extraLen + commentLen
    const lh = Buffer.alloc(30)
    readAt(lh, local)
    const dataStart = local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28)
    const name = entry.replace(/\.npy$/, '')
    if (method === 0) {
      const head = Buffer.alloc(Math.min(4096, csize))
      readAt(head, dataStart)
      const h = headerOfNpy(head, `${file}:${entry}`)
      arrays.set(name, {disk: {fd, offset: dataStart + h.dataOffset, dtype: h.dtype, shape: h.shape}, field: {name, dtype: h.dtype, shape: h.shape.slice(1)}})
    } else if (method === 8) {
      // Compressed (np.savez_compressed): inflate just enough to read the header; the rows stream.
      const head = Buffer.alloc(Math.min(csize, 1 << 16))
      readAt(head, dataStart)
      const inflated = inflateRawSync(head, {finishFlush: zlibConstants.Z_SYNC_FLUSH})
      const h = headerOfNpy(inflated, `${file}:${entry}`)
      arrays.set(name, {deflated: {start: dataStart, csize, dataOffset: h.dataOffset, dtype: h.dtype, shape: h.shape}, field: {name, dtype: h.dtype, shape: h.shape.slice(1)}})
    } else throw new KilnError(`${file}: entry ${entry} uses unsupported compression ${method}`, {code: 'E_DATA'})
  }
  const lengths = [...arrays.values()].map((a) => (a.disk ?? a.deflated)!.shape[0]!)
  const length = Math.min(...lengths)
  const fields = [...arrays.values()].map((a) => a.field)
  const readRows = async (indices: number[], wanted: string[], how?: ReadHow): Promise<Rows> => {
    // Every field's rows at once, not one field after another (see readRowsAt).
    const arraysRead = await Promise.all(wanted.map((f) => readRowsAt(arrays.get(f)!.disk!, indices, how, f)))
    const values: Record<string, TypedArray> = Object.fromEntries(wanted.map((f, i) => [f, arraysRead[i]!]))
    return {rows: indices.length, values}
  }
  if ([...arrays.values()].every((a) => a.disk)) return {fields, length, read: readRows, close: () => fd.close()}
  return {
    fields,
    length,
    async *stream(wanted, signal) {
      const iters = wanted.map((f) => {
        const a = arrays.get(f)!
        return a.disk ? storedRows(a.disk, length) : inflatedRows(file, a.deflated!, length, signal)
      })
      for (;;) {
        const parts = await Promise.all(iters.map((it) => it.next()))
        if (parts.some((p) => p.done)) return
        const chunks = parts.map((p) => p.value as TypedArray)
        const rows = chunks[0]!.length / per(arrays.get(wanted[0]!)!.field.shape)
        yield {rows, values: Object.fromEntries(wanted.map((f, i) => [f, chunks[i]!]))}
      }
    },
    close: () => fd.close(),
  }
}

const CHUNK_ROWS = 256

async function* storedRows(a: OnDisk, length: number): AsyncGenerator<TypedArray> {
  for (let s = 0; s < length; s += CHUNK_ROWS) yield readRowsAt(a, Array.from({length: Math.min(CHUNK_ROWS, length - s)}, (_, i) => s + i))
}

/** Rows of a deflated NPY entry, inflated as a stream: memory stays at one chunk. */
async function* inflatedRows(file: string, d: Deflated, length: number, signal?: AbortSignal): AsyncGenerator<TypedArray> {
  const Ctor = ctorOf(d.dtype)
  const rowBytes = per(d.shape.slice(1)) * Ctor.BYTES_PER_ELEMENT
  const raw = fs.createReadStream(file, {start: d.start, end: d.start + d.csize - 1})
  let pending: Buffer = Buffer.alloc(0)
  let skip = d.dataOffset
  let left = length
  try {
    for await (const chunk of raw.pipe(createInflateRaw()) as AsyncIterable<Buffer>) {
      if (signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      let c = chunk
      if (skip > 0) {
        const n = Math.min(skip, c.length)
        skip -= n
        c = c.subarray(n)
      }
      pending = pending.length ? Buffer.concat([pending, c]) : c
      while (left > 0 && pending.length >= Math.min(CHUNK_ROWS, left) * rowBytes) {
        const rows = Math.min(CHUNK_ROWS, left)
        // Copy into a fresh buffer: typed arrays need their element alignment.
        const copy = new Uint8Array(rows * rowBytes)
        copy.set(pending.subarray(0, rows * rowBytes))
        yield new Ctor(copy.buffer, 0, (rows * rowBytes) / Ctor.BYTES_PER_ELEMENT)
        pending = pending.subarray(rows * rowBytes)
        left -= rows
      }
      if (left === 0) return
    }
    if (left > 0) throw new KilnError(`${file}: compressed array ends ${left} rows early`, {code: 'E_DATA'})
  } finally {
    raw.destroy()
  }
}

interface Deflated {
  start: number
  csize: number
  dataOffset: number
  dtype: string
  shape: number[]
}

const isGz = async (file: string): Promise<boolean> => {
  const fd = await fsp.open(file, 'r').catch((e) => Promise.reject(cannotRead(file, e)))
  const b = Buffer.alloc(2)
  await fd.read(b, 0, 2, 0)
  await fd.close()
  return b[0] === 0x1f && b[1] === 0x8b
}

/**
 * IDX (MNIST format), plain or gzip. `labelsFile` is a second IDX file holding one label per sample
 * (by default the sibling `*-labels-idx1-ubyte*` of an `*-images-idx3-ubyte*` file).
 */
export async function idxSource(file: string, labelsFile?: string): Promise<Source> {
  const files: {name: string; file: string}[] = [{name: 'input', file}]
  if (labelsFile) files.push({name: 'labels', file: labelsFile})
  const fields: Field[] = []
  let length = Number.POSITIVE_INFINITY
  let gz = false
  for (const f of files) {
    gz ||= await isGz(f.file)
    const first = await streamIdx(f.file, 1).next()
    if (first.done) throw new KilnError(`${f.file}: empty IDX file`, {code: 'E_DATA'})
    const h = first.value.header
    fields.push({name: f.name, dtype: h.dtype, shape: h.shape.slice(1)})
    length = Math.min(length, h.shape[0] ?? 1)
  }
  if (!gz) {
    const handles = await Promise.all(files.map((f) => fsp.open(f.file, 'r')))
    // IDX is big-endian: each file is read as raw bytes per row (kept across reads, so a small
    // labels file is read whole once), then decoded.
    const disks: {raw: OnDisk; header: {dtype: string; shape: number[]; headerBytes: number; elementBytes: number}}[] = []
    for (const [i, fd] of handles.entries()) {
      const head = Buffer.alloc(4 + 4 * 8)
      await fd.read(head, 0, head.length, 0)
      const h = parseIdxHeader(head, files[i]!.file)
      const elementBytes = ctorOf(h.dtype).BYTES_PER_ELEMENT
      disks.push({
        raw: {fd, offset: h.headerBytes, dtype: '|u1', shape: [h.shape[0]!, per(h.shape.slice(1)) * elementBytes]},
        header: {dtype: h.dtype, shape: h.shape, headerBytes: h.headerBytes, elementBytes},
      })
    }
    return {
      fields,
      length,
      async read(indices, wanted, how) {
        // Both files' rows at once (see readRowsAt).
        const parts = await Promise.all(
          files.flatMap((f, i) => {
            if (!wanted.includes(f.name)) return []
            const {raw, header} = disks[i]!
            return [readRowsAt(raw, indices, how && {sync: how.sync}).then((bytes) => [f.name, decodeIdxElements(bytes as Uint8Array, header, bytes.length / header.elementBytes)] as const)]
          }),
        )
        return {rows: indices.length, values: Object.fromEntries(parts)}
      },
      close: async () => void (await Promise.all(handles.map((h) => h.close()))),
    }
  }
  return {
    fields,
    length,
    async *stream(wanted, signal) {
      const iters = files.filter((f) => wanted.includes(f.name)).map((f) => ({name: f.name, it: streamIdx(f.file, 256, signal)}))
      for (;;) {
        const parts = await Promise.all(iters.map(async (x) => ({name: x.name, r: await x.it.next()})))
        if (parts.some((x) => x.r.done)) return
        const rows = Math.min(...parts.map((x) => (x.r.value as {rows: number}).rows))
        yield {rows, values: Object.fromEntries(parts.map((x) => [x.name, (x.r.value as {data: TypedArray}).data]))}
      }
    },
    close: async () => {},
  }
}

async function* lines(file: string, signal?: AbortSignal): AsyncGenerator<string> {
  const gz = await isGz(file)
  const raw = fs.createReadStream(file)
  const rl = readline.createInterface({input: gz ? raw.pipe(createGunzip()) : raw, crlfDelay: Number.POSITIVE_INFINITY})
  try {
    for await (const line of rl) {
      if (signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      if (line.trim()) yield line
    }
  } finally {
    rl.close()
    raw.destroy()
  }
}

function splitCsv(line: string): string[] {
  if (!line.includes('"')) return line.split(',')
  const out: string[] = []
  let cur = ''
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') (cur += '"'), i++
      else if (ch === '"') quoted = false
      else cur += ch
    } else if (ch === '"') quoted = true
    else if (ch === ',') out.push(cur), (cur = '')
    else cur += ch
  }
  out.push(cur)
  return out
}

/**
 * CSV, plain or gzip, streamed line by line. A first row with any non-numeric cell is the header;
 * without one, columns are named by index (`0`, `1`...). `groups` maps a field name to the columns
 * it takes (a model input usually takes many); every other column is a field of its own.
 */
export async function csvSource(file: string, groups: Record<string, string> = {}, rest?: {name: string; label?: string}): Promise<Source> {
  const first = await lines(file).next()
  if (first.done) throw new KilnError(`dataset ${file} is empty`, {code: 'E_DATA'})
  const cells = splitCsv(first.value)
  const hasHeader = cells.some((c) => c.trim() !== '' && Number.isNaN(Number(c)))
  const columns = hasHeader ? cells.map((c) => c.trim()) : cells.map((_, i) => String(i))
  let resolved = resolveColumnGroups(file, columns, groups)
  if (rest) {
    // No mapping for a single-input model: every column but the label feeds it.
    const labelCol = rest.label ?? LABEL_COLUMNS.find((n) => columns.includes(n))
    const keep = resolved.filter((g) => g.name === labelCol)
    const cols = resolved.filter((g) => !keep.includes(g)).flatMap((g) => g.cols)
    resolved = [...keep, {name: rest.name, cols}]
    groups = {...groups, [rest.name]: '*'}
  }
  const fields: Field[] = resolved.map((g) => ({name: g.name, dtype: '<f8', shape: g.cols.length === 1 && !groups[g.name] ? [] : [g.cols.length]}))
  return {
    fields,
    async *stream(wanted, signal) {
      const sel = resolved.filter((g) => wanted.includes(g.name))
      let skip = hasHeader
      let lineNo = 0
      let chunk: number[][] = []
      const offsets = sel.map((_, gi) => sel.slice(0, gi).reduce((n, g) => n + g.cols.length, 0))
      const flush = (): Rows => {
        const values: Record<string, TypedArray> = {}
        sel.forEach((g, gi) => {
          const out = new Float64Array(chunk.length * g.cols.length)
          chunk.forEach((r, k) => out.set(r.slice(offsets[gi], offsets[gi]! + g.cols.length), k * g.cols.length))
          values[g.name] = out
        })
        const rows = {rows: chunk.length, values}
        chunk = []
        return rows
      }
      for await (const line of lines(file, signal)) {
        lineNo++
        if (skip) { skip = false; continue }
        const c = splitCsv(line)
        const row: number[] = []
        for (const g of sel) for (const col of g.cols) {
          const v = Number(c[col])
          if (c[col] === undefined || c[col]!.trim() === '' || Number.isNaN(v)) {
            throw new KilnError(`${file}:${lineNo}: column '${columns[col]}' is ${c[col] === undefined ? 'missing' : `not a number ('${c[col]}')`}`, {code: 'E_DATA'})
          }
          row.push(v)
        }
        chunk.push(row)
        if (chunk.length === 256) yield flush()
      }
      if (chunk.length) yield flush()
    },
    close: async () => {},
  }
}

const LABEL_COLUMNS = ['labels', 'label', 'target', 'class', 'y']

/** Column groups: `a:b` (a range by name or index, inclusive), `prefix*`, or `c1,c2,...`. */
function resolveColumnGroups(file: string, columns: string[], groups: Record<string, string>): {name: string; cols: number[]}[] {
  const colIndex = (ref: string): number => {
    const byName = columns.indexOf(ref)
    if (byName >= 0) return byName
    const n = Number(ref)
    if (Number.isInteger(n) && n < columns.length && n >= -columns.length) return n < 0 ? columns.length + n : n
    throw new KilnError(`${file}: no column '${ref}'; columns: ${columns.slice(0, 12).join(', ')}${columns.length > 12 ? ', ...' : ''}`, {code: 'E_DATA'})
  }
  const used = new Set<number>()
  const out: {name: string; cols: number[]}[] = []
  for (const [name, spec] of Object.entries(groups)) {
    let cols: number[]
    if (spec.endsWith('*')) cols = columns.flatMap((c, i) => (c.startsWith(spec.slice(0, -1)) ? [i] : []))
    else if (/^[^,]+:[^,]+$/.test(spec)) {
      const [a, b] = spec.split(':').map(colIndex) as [number, number]
      cols = Array.from({length: b - a + 1}, (_, i) => a + i)
    } else cols = spec.split(',').map((s) => colIndex(s.trim()))
    if (cols.length === 0) throw new KilnError(`${file}: '${spec}' selects no columns`, {code: 'E_DATA'})
    cols.forEach((c) => used.add(c))
    out.push({name, cols})
  }
  columns.forEach((c, i) => {
    if (!used.has(i)) out.push({name: c, cols: [i]})
  })
  return out
}

/** JSON Lines, plain or gzip: one object per line; values are numbers or (nested) arrays of numbers. */
export async function jsonlSource(file: string): Promise<Source> {
  const first = await lines(file).next()
  if (first.done) throw new KilnError(`dataset ${file} is empty`, {code: 'E_DATA'})
  const parse = (line: string, n: number): Record<string, unknown> => {
    try {
      return JSON.parse(line) as Record<string, unknown>
    } catch (error) {
      throw new KilnError(`${file}:${n}: invalid JSON (${(error as Error).message})`, {code: 'E_DATA'})
    }
  }
  const shapeOf = (v: unknown): number[] => (Array.isArray(v) ? [v.length, ...shapeOf(v[0])] : [])
  const sample = parse(first.value, 1)
  const fields: Field[] = Object.entries(sample).filter(([, v]) => typeof v === 'number' || Array.isArray(v)).map(([name, v]) => ({name, dtype: '<f8', shape: shapeOf(v)}))
  return {
    fields,
    async *stream(wanted, signal) {
      const sel = fields.filter((f) => wanted.includes(f.name))
      let buffers = sel.map(() => [] as number[])
      let rows = 0
      let n = 0
      for await (const line of lines(file, signal)) {
        n++
        const obj = parse(line, n)
        sel.forEach((f, i) => {
          const v = obj[f.name]
          if (v === undefined) throw new KilnError(`${file}:${n}: no field '${f.name}'`, {code: 'E_DATA'})
          const flat = Array.isArray(v) ? (v as unknown[]).flat(Number.POSITIVE_INFINITY) : [v]
          if (flat.length !== per(f.shape)) throw new KilnError(`${file}:${n}: field '${f.name}' has ${flat.length} values, the first line had ${per(f.shape)}`, {code: 'E_DATA'})
          for (const x of flat) buffers[i]!.push(Number(x))
        })
        if (++rows === 256) {
          yield {rows, values: Object.fromEntries(sel.map((f, i) => [f.name, Float64Array.from(buffers[i]!)]))}
          buffers = sel.map(() => [])
          rows = 0
        }
      }
      if (rows) yield {rows, values: Object.fromEntries(sel.map((f, i) => [f.name, Float64Array.from(buffers[i]!)]))}
    },
    close: async () => {},
  }
}
