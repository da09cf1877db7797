import path from 'node:path'
import {KilnError} from '../errors.js'
import {toFloat16Array} from '../onnx/float16.js'
import type {TypedArray} from '../onnx/tensor.js'
import type {DatasetSpec} from '../stages/types.js'
import {BufferPool} from '../util/buffer-pool.js'
import {imageSource} from './images.js'
import type {NpyArray} from './npy.js'
import type {Preprocess} from './preprocess.js'
import {centreCrop, normaliseInto, parsePreprocess, resizeBilinear, size2, transposeLayout} from './preprocess.js'
import {seededRandom, shuffleInPlace} from './random.js'
import type {ArrayCtor, Field, ReadHow, Rows, Source} from './sources.js'
import {csvSource, ctorOf, idxSource, jsonlSource, npySource, npzSource} from './sources.js'

/** One model input's values for a batch, shaped like an onnxruntime tensor. */
export interface BatchTensor {
  /** onnxruntime type name: float32, uint8, int64... */
  type: string
  data: NpyArray['data']
  dims: number[]
}

export interface Batch {
  /** Model input name → tensor (first dim = batch size, but for the inputs in `whole`). */
  inputs: Record<string, BatchTensor>
  /** Class labels (or regression targets), one per sample, when the dataset has them. */
  labels?: Float64Array
  size: number
  /** Inputs with no batch axis of their own, fed one sample whole: the batches hold one sample. */
  whole?: string[]
}

/** What kiln knows of a model input, to map and check dataset fields against. */
export interface InputMeta {
  name: string
  /** onnxruntime type name; empty when unknown (no type check then). */
  type: string
  dims: (number | string)[]
}

export interface ReadOptions {
  batchSize: number
  /** The model's inputs: used to map fields by name and to check shapes. */
  inputs?: InputMeta[]
  signal?: AbortSignal
  /**
   * Recycle batch memory: a batch's arrays stay valid only until the consumer asks for the batch
   * after the next one, and not after the reader finishes (its memory serves the next reader). For
   * consumers that are done with a batch before they ask for more (evaluation, calibration); it
   * saves a fresh allocation, and its page faults, per batch.
   */
  reuse?: boolean
  /**
   * Read files on the calling thread, between the caller's steps, instead of ahead on the I/O
   * thread pool. Faster when the caller keeps every core busy (see {@link ReadHow.sync}).
   */
  inline?: boolean
}

/**
 * Batch memory kept across readers in this process: a second pass over a dataset (each evaluation
 * of a quantization candidate, a pipeline's next evaluate stage) finds its buffers already mapped.
 */
const readerMemory = new BufferPool(64 * 1024 * 1024)

interface Rings {
  /** A buffer of at least `bytes` for `key`, handed out in rotation. */
  take(key: string, bytes: number): Buffer
  /** Give every buffer back to the process's pool: no batch may be used after this. */
  release(): void
}

/** Buffers handed out in rotation, one ring per key, grown when a request is bigger. */
function bufferRings(depth: number): Rings {
  const rings = new Map<string, {bufs: Buffer[]; next: number}>()
  return {
    take(key, bytes) {
      let r = rings.get(key)
      if (!r) rings.set(key, (r = {bufs: [], next: 0}))
      const i = r.next
      r.next = (i + 1) % depth
      const held = r.bufs[i]
      if (!held || held.length < bytes) {
        if (held) readerMemory.give(held.buffer as ArrayBuffer)
        const memory = readerMemory.take(bytes)
        r.bufs[i] = Buffer.from(memory, 0, memory.byteLength)
      }
      return r.bufs[i]!
    },
    release() {
      for (const r of rings.values()) for (const b of r.bufs) readerMemory.give(b.buffer as ArrayBuffer)
      rings.clear()
    },
  }
}

const ORT_TYPE: Record<string, string> = {
  f4: 'float32', f8: 'float64', i1: 'int8', u1: 'uint8', b1: 'bool', i2: 'int16', u2: 'uint16', i4: 'int32', u4: 'uint32', i8: 'int64', u8: 'uint64',
}
const ARRAY_OF: Record<string, ArrayCtor> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array, float16: Float32Array,
}

export function ortTypeOf(npyDtype: string): string {
  return ORT_TYPE[npyDtype.replace(/^[<|=]/, '')] ?? npyDtype
}

/** The reader a dataset uses: `format`, else the file extension (a directory means images). */
export function datasetFormat(spec: DatasetSpec): string {
  if (typeof spec.format === 'string') return spec.format
  const p = spec.path.toLowerCase().replace(/\.gz$/, '')
  if (p.endsWith('.npz')) return 'npz'
  if (p.endsWith('.npy')) return 'npy'
  if (p.endsWith('.csv')) return 'csv'
  if (p.endsWith('.jsonl') || p.endsWith('.ndjson')) return 'jsonl'
  if (/idx\d-ubyte$|\.idx$/.test(p)) return 'idx'
  if (!path.extname(p)) return 'images'
  throw new KilnError(`dataset '${spec.name}': cannot tell the format of ${path.basename(spec.path)}`, {
    code: 'E_DATA',
    tryMessage: 'Set `format:` to one of npz, npy, idx, csv, jsonl, images.',
  })
}

const LABEL_NAMES = ['labels', 'label', 'target', 'class', 'y']

async function openSource(spec: DatasetSpec, pre: Preprocess, inputs?: InputMeta[]): Promise<Source> {
  const format = datasetFormat(spec)
  const rel = (p: string) => path.resolve(path.dirname(spec.path), p)
  switch (format) {
    case 'npz':
      return npzSource(spec.path)
    case 'npy':
      return npySource(spec.path)
    case 'idx': {
      let labels = spec.labels ? rel(spec.labels) : undefined
      if (!labels && /images-idx3-ubyte/.test(spec.path)) labels = spec.path.replace('images-idx3-ubyte', 'labels-idx1-ubyte')
      return idxSource(spec.path, labels)
    }
    case 'csv':
      return csvSource(spec.path, spec.inputs, !spec.inputs && inputs?.length === 1 ? {name: inputs[0]!.name, label: spec.labels} : undefined)
    case 'jsonl':
      return jsonlSource(spec.path)
    case 'images': {
      const meta = inputs?.[0]
      const geometry = imageGeometry(spec, pre, meta)
      return imageSource(spec.path, geometry, pre, spec.labels ? path.resolve(spec.path, spec.labels) : undefined)
    }
    default:
      throw new KilnError(`dataset '${spec.name}': unknown format '${format}'`, {code: 'E_DATA', tryMessage: 'Use one of npz, npy, idx, csv, jsonl, images.'})
  }
}

function layoutOf(dims: (number | string)[] | undefined, pre: Preprocess): 'NCHW' | 'NHWC' {
  if (pre.layout) return pre.layout
  if (!dims || dims.length !== 4) return 'NHWC'
  const small = (d: number | string) => typeof d === 'number' && d >= 1 && d <= 4
  return small(dims[1]!) && !small(dims[3]!) ? 'NCHW' : 'NHWC'
}

function imageGeometry(spec: DatasetSpec, pre: Preprocess, meta?: InputMeta): {height: number; width: number; channels: number} {
  const dims = meta?.dims
  const nchw = layoutOf(dims, pre) === 'NCHW'
  const num = (d: number | string | undefined) => (typeof d === 'number' && d > 0 ? d : undefined)
  const channels = num(dims?.[nchw ? 1 : 3]) ?? 3
  const [h, w] = pre.resize ? size2(pre.resize) : [num(dims?.[nchw ? 2 : 1]), num(dims?.[nchw ? 3 : 2])]
  if (!h || !w) {
    throw new KilnError(`dataset '${spec.name}': the model input has no fixed height/width; say what size to decode images to`, {
      code: 'E_DATA',
      tryMessage: `Set datasets.${spec.name}.preprocess.resize: [height, width]`,
    })
  }
  return {height: h, width: w, channels}
}

/** How one field becomes one model input: per-sample transforms, target shape and type. */
interface Plan {
  input: string
  field: Field
  /** Per-sample shape after resize/crop/layout, before reshaping to the model's dims. */
  shape: number[]
  dims: number[]
  /** False for an input with no batch axis of its own (a scalar, a recurrent state [layers, batch, h]): one sample is the whole input. */
  batched: boolean
  type: string
  /** The values pass unchanged (same element type, no transform): batches are copied whole. */
  identity: boolean
  convert(src: TypedArray, out: TypedArray, offset: number): void
}

function makePlan(spec: DatasetSpec, input: string, field: Field, pre: Preprocess, isImage: boolean, meta?: InputMeta): Plan {
  let shape = field.shape.slice()
  const steps: ((x: ArrayLike<number | bigint>) => ArrayLike<number | bigint>)[] = []
  // Where the channels are in the sample as stored (images decode HWC).
  let channelsLast = isImage || (shape.length === 3 && shape[2]! <= 4 && shape[0]! > 4)
  const rank3 = shape.length === 3
  if (!isImage && (pre.resize || pre.crop)) {
    if (shape.length !== 2 && !rank3) throw new KilnError(`dataset '${spec.name}': resize/crop need image-like samples ([H,W], [C,H,W] or [H,W,C]); field '${field.name}' is [${shape.join(',')}]`, {code: 'E_DATA_SHAPE'})
    const c = rank3 ? (channelsLast ? shape[2]! : shape[0]!) : 1
    let [h, w] = rank3 ? (channelsLast ? [shape[0]!, shape[1]!] : [shape[1]!, shape[2]!]) : [shape[0]!, shape[1]!]
    const mk = (nh: number, nw: number) => (rank3 ? (channelsLast ? [nh, nw, c] : [c, nh, nw]) : [nh, nw])
    if (pre.resize) {
      const [rh, rw] = size2(pre.resize)
      const [sh, sw, cl] = [h, w, channelsLast]
      steps.push((x) => resizeBilinear(x as ArrayLike<number>, c, sh, sw, rh, rw, cl))
      ;[h, w] = [rh, rw]
    }
    if (pre.crop) {
      const [ch, cw] = size2(pre.crop)
      const [sh, sw, cl] = [h, w, channelsLast]
      steps.push((x) => centreCrop(x as ArrayLike<number>, c, sh, sw, ch, cw, cl))
      ;[h, w] = [ch, cw]
    }
    shape = mk(h, w)
  }
  const want = layoutOf(meta?.dims, pre)
  if (shape.length === 3 && (isImage || pre.layout) && channelsLast !== (want === 'NHWC')) {
    const [h, w, c] = channelsLast ? (shape as [number, number, number]) : [shape[1]!, shape[2]!, shape[0]!]
    const toFirst = channelsLast
    steps.push((x) => transposeLayout(x as ArrayLike<number>, h, w, c, toFirst))
    shape = toFirst ? [c, h, w] : [h, w, c]
    channelsLast = !channelsLast
  }
  // Fit the model's sample shape: equal, or the same element count (a flat row for a 28×28 input).
  const modelDims = meta?.dims.slice(1)
  let dims = shape
  const fitsDims = (want: (number | string)[]) => want.length === shape.length && want.every((d, i) => typeof d !== 'number' || d < 0 || d === shape[i])
  // A sample shaped like the whole input (a scalar, a recurrent state with the batch inside) is fed as is.
  const batched = !(meta && (meta.dims.length === 0 || (!fitsDims(modelDims!) && fitsDims(meta.dims))))
  if (modelDims && batched) {
    const fits = fitsDims(modelDims)
    const fixed = modelDims.every((d) => typeof d === 'number' && d > 0) ? (modelDims as number[]) : undefined
    if (!fits) {
      if (fixed && fixed.reduce((a, b) => a * b, 1) === shape.reduce((a, b) => a * b, 1)) dims = fixed
      else {
        throw new KilnError(`dataset '${spec.name}': field '${field.name}' for input '${input}' has sample shape [${shape.join(',')}], the model expects [${modelDims.join(',')}]`, {
          code: 'E_DATA_SHAPE',
          tryMessage: `Reshape the data, or add preprocessing (resize, crop, layout) under datasets.${spec.name}.preprocess.`,
        })
      }
    }
  }
  const numeric = pre.scale !== undefined || pre.mean !== undefined || pre.std !== undefined
  const type = pre.dtype ?? (meta?.type || ortTypeOf(field.dtype))
  const rawType = ortTypeOf(field.dtype)
  if (meta?.type && type !== meta.type) {
    throw new KilnError(`dataset '${spec.name}': preprocess.dtype is ${type}, input '${input}' of the model is ${meta.type}`, {code: 'E_DATA_TYPE', tryMessage: `Set preprocess.dtype: ${meta.type}`})
  }
  if (!pre.dtype && !numeric && steps.length === 0 && meta?.type && rawType !== meta.type) {
    throw new KilnError(`dataset '${spec.name}': field '${field.name}' for input '${input}' is ${rawType}, the model expects ${meta.type}`, {
      code: 'E_DATA_TYPE',
      tryMessage: `Convert the data, or set datasets.${spec.name}.preprocess.dtype: ${meta.type}${rawType === 'uint8' ? ' (and scale: 0.00392156862745098 for pixels in [0,1])' : ''}.`,
    })
  }
  const cAxis = shape.length === 3 ? (channelsLast ? 2 : 0) : -1
  const channelOf =
    cAxis < 0 ? () => 0 : cAxis === 2 ? (i: number) => i % shape[2]! : (i: number) => Math.floor(i / (shape[1]! * shape[2]!))
  for (const [k, v] of [['mean', pre.mean], ['std', pre.std]] as const) {
    if (Array.isArray(v) && v.length > 1 && (cAxis < 0 || v.length !== shape[cAxis])) {
      throw new KilnError(`dataset '${spec.name}': preprocess.${k} has ${v.length} values, the samples have ${cAxis < 0 ? 'no channel axis' : `${shape[cAxis]} channels`}`, {code: 'E_DATA'})
    }
  }
  return {
    input,
    field,
    shape,
    dims,
    batched,
    type,
    identity: steps.length === 0 && !numeric && type === rawType && type !== 'float16',
    convert(src, out, offset) {
      let x: ArrayLike<number | bigint> = src
      for (const step of steps) x = step(x)
      normaliseInto(x, out, offset, pre, channelOf)
    },
  }
}

function resolveMapping(spec: DatasetSpec, fields: string[], inputs?: InputMeta[], isCsv = false): Record<string, string> {
  if (spec.inputs && Object.keys(spec.inputs).length > 0) {
    if (isCsv) return Object.fromEntries(Object.keys(spec.inputs).map((k) => [k, k]))
    return spec.inputs
  }
  if (inputs) {
    const byName = inputs.filter((i) => fields.includes(i.name))
    if (byName.length === inputs.length) return Object.fromEntries(inputs.map((i) => [i.name, i.name]))
    if (inputs.length === 1 && fields.length === 1) return {[inputs[0]!.name]: fields[0]!}
    const missing = inputs.filter((i) => !fields.includes(i.name)).map((i) => i.name)
    throw new KilnError(`dataset '${spec.name}' has no field for model input(s) ${missing.join(', ')}; fields: ${fields.join(', ')}`, {
      code: 'E_DATA',
      tryMessage: `Map them in the pipeline file: datasets.${spec.name}.inputs: { ${missing[0]}: <field> }`,
    })
  }
  if (fields.length === 1) return {input: fields[0]!}
  throw new KilnError(`dataset '${spec.name}': cannot tell which fields are model inputs; map them with 'inputs:'`, {code: 'E_DATA'})
}

/**
 * Read a dataset in batches, whatever its format (NPY/NPZ, IDX, CSV, JSONL, image folders), with
 * the entry's preprocessing applied, `limit`/`shuffle`/`seed` honoured and the next batch read
 * while the caller works on the current one. Large datasets are never loaded whole: arrays are read
 * row by row from disk, text formats stream, images decode per batch.
 *
 * Field mapping: `spec.inputs` (model input → field); with none, fields named after the model's
 * inputs; a single-input model takes the only non-label field. Labels: `spec.labels`, else a field
 * named `labels`, `label`, `target`, `class` or `y`.
 */
export async function* readBatches(spec: DatasetSpec, options: ReadOptions): AsyncGenerator<Batch> {
  const pre = parsePreprocess(spec.preprocess, spec.name)
  const format = datasetFormat(spec)
  const source = await openSource(spec, pre, options.inputs)
  // The prefetched read: when the caller stops early (break, error) it must settle before the source closes.
  let batches: AsyncGenerator<Rows> | undefined
  let next: Promise<IteratorResult<Rows>> | undefined
  let ring: Rings | undefined
  try {
    const names = source.fields.map((f) => f.name)
    const labelField = format === 'images' || format === 'idx' ? names.find((n) => n === 'label' || n === 'labels') : spec.labels ?? LABEL_NAMES.find((n) => names.includes(n))
    if (spec.labels && !labelField) throw new KilnError(`dataset '${spec.name}': no labels field '${spec.labels}'; fields: ${names.join(', ')}`, {code: 'E_DATA_LABELS'})
    if (labelField && !names.includes(labelField)) throw new KilnError(`dataset '${spec.name}': no labels field '${labelField}'; fields: ${names.join(', ')}`, {code: 'E_DATA_LABELS'})
    const candidates = names.filter((n) => n !== labelField)
    const mapping = resolveMapping(spec, candidates, options.inputs, format === 'csv')
    const plans = Object.entries(mapping).map(([input, fieldName]) => {
      const field = source.fields.find((f) => f.name === fieldName)
      if (!field) throw new KilnError(`dataset '${spec.name}': no field '${fieldName}' (for input '${input}'); fields: ${names.join(', ')}`, {code: 'E_DATA'})
      return makePlan(spec, input, field, pre, format === 'images', options.inputs?.find((i) => i.name === input))
    })
    const wanted = [...new Set([...plans.map((p) => p.field.name), ...(labelField ? [labelField] : [])])]
    // An input with no batch axis holds one sample: such a model reads one sample a batch.
    const whole = plans.filter((p) => !p.batched).map((p) => p.input)
    if (options.batchSize > 1 && whole.length) options = {...options, batchSize: 1}
    const ahead = options.inline ? 0 : readAhead(rowBytesOf(source, wanted) * options.batchSize)
    // Deep enough for the batch the consumer holds, the one prefetched, the chunks being read ahead,
    // and one spare, so that a batch stays valid until the consumer asks for the batch after the next.
    const rings = (ring = options.reuse ? bufferRings(ahead + 3) : undefined)
    const toBatch = (rows: Rows): Batch => {
      const inputs: Record<string, BatchTensor> = {}
      for (const plan of plans) {
        const src = rows.values[plan.field.name]!
        const n = plan.field.shape.reduce((a, b) => a * b, 1)
        const m = plan.dims.reduce((a, b) => a * b, 1)
        let out: TypedArray
        if (plan.identity) out = src
        else {
          const Ctor = ARRAY_OF[plan.type]!
          const scratch = rings?.take(`out:${plan.input}`, rows.rows * m * Ctor.BYTES_PER_ELEMENT)
          out = scratch ? new Ctor(scratch.buffer as ArrayBuffer, scratch.byteOffset, rows.rows * m) : new Ctor(rows.rows * m)
          for (let r = 0; r < rows.rows; r++) plan.convert(src.subarray(r * n, (r + 1) * n) as TypedArray, out, r * m)
        }
        inputs[plan.input] = {type: plan.type, data: (plan.type === 'float16' ? toFloat16Array(out as Float32Array) : out) as BatchTensor['data'], dims: plan.batched ? [rows.rows, ...plan.dims] : plan.dims}
      }
      const batch: Batch = {inputs, size: rows.rows}
      if (whole.length) batch.whole = whole
      if (labelField) batch.labels = Float64Array.from(rows.values[labelField] as ArrayLike<number>, Number)
      return batch
    }
    batches = source.read ? randomAccess(spec, source, wanted, options, {scratch: rings && ((key, bytes) => rings.take(key, bytes)), sync: options.inline}, ahead) : streamed(spec, source, wanted, options)
    // Prefetch: start reading batch i+1 before handing batch i to the caller. Reads in line cannot
    // overlap anything, so they happen when the caller asks, while the data is still in cache.
    const prefetch = !options.inline
    next = batches.next()
    let count = 0
    for (;;) {
      const r = await next
      if (r.done) break
      if (options.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      if (prefetch) next = batches.next()
      count++
      yield toBatch(r.value)
      if (!prefetch) next = batches.next()
    }
    if (count === 0) throw new KilnError(`dataset '${spec.name}' is empty`, {code: 'E_DATA'})
  } finally {
    if (next) await next.catch(() => undefined)
    await batches?.return(undefined).catch(() => undefined)
    await source.close()
    ring?.release()
  }
}

/**
 * About how many bytes a sequential read takes at once: a whole number of batches. Reads ahead on
 * the thread pool take more at once (fewer hand-offs to the main thread); reads in line take what
 * stays in the core's cache until the model uses it.
 */
const CHUNK_BYTES = {ahead: 4 << 20, inline: 256 << 10}

/** Bytes one sample of these fields takes as stored. */
function rowBytesOf(source: Source, wanted: string[]): number {
  return wanted.reduce((n, name) => {
    const f = source.fields.find((x) => x.name === name)!
    return n + f.shape.reduce((a, b) => a * b, 1) * ctorOf(f.dtype).BYTES_PER_ELEMENT
  }, 0)
}

/**
 * Chunk reads kept in flight ahead of the caller. Two, not one: a read that completes while a
 * model runs (and blocks the event loop) is only seen after the run; one issued a chunk earlier
 * has been seen by then, so the caller never waits for the loop to catch up. Batches of more than
 * 16 MB read one ahead: memory matters more than that wait then.
 */
function readAhead(batchBytes: number): number {
  return batchBytes > 16 << 20 ? 1 : 2
}

async function* randomAccess(spec: DatasetSpec, source: Source, wanted: string[], options: ReadOptions, how: ReadHow, aheadCount: number): AsyncGenerator<Rows> {
  const length = source.length ?? 0
  let order: number[] | undefined
  const total = Math.min(length, spec.limit ?? Number.POSITIVE_INFINITY)
  if (spec.shuffle) order = shuffleInPlace(Array.from({length}, (_, i) => i), seededRandom(spec.seed ?? 0)).slice(0, total)
  // In order, rows come in chunks of whole batches, each batch a view of its chunk: a few large
  // reads instead of one per batch. Shuffled rows are scattered, so they are read a batch at a time.
  const rowBytes = rowBytesOf(source, wanted)
  const chunkRows = options.batchSize * (order ? 1 : Math.max(1, Math.floor(CHUNK_BYTES[how.sync ? 'inline' : 'ahead'] / Math.max(1, rowBytes * options.batchSize))))
  // Reads ahead start at one batch and grow fourfold up to the chunk size: the first batch is not
  // held up behind a large read, and later ones cost few reads (each costs the caller tens of µs).
  const rowsOf = (k: number) => (order || how.sync ? chunkRows : Math.min(chunkRows, options.batchSize * 4 ** k))
  let chunks = 0
  let issued = 0
  const next = (): Promise<Rows> => {
    const start = issued
    const size = Math.min(rowsOf(chunks++), total - start)
    issued += size
    const indices = order ? order.slice(start, start + size) : Array.from({length: size}, (_, i) => start + i)
    return source.read!(indices, wanted, how)
  }
  // Reads run `aheadCount` chunks in front of the caller (see readAhead); 0 reads on demand.
  const ahead: Promise<Rows>[] = []
  const refill = () => {
    while (ahead.length < aheadCount && issued < total) ahead.push(next())
  }
  refill()
  try {
    for (let done = 0; done < total; ) {
      if (options.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      // With nothing read ahead (in-line reads), the chunk is read now.
      if (ahead.length === 0) ahead.push(next())
      const chunk = await ahead.shift()!
      refill()
      done += chunk.rows
      for (let s = 0; s < chunk.rows; s += options.batchSize) {
        const m = Math.min(options.batchSize, chunk.rows - s)
        if (m === chunk.rows) yield chunk
        else {
          const values: Record<string, TypedArray> = {}
          for (const [k, v] of Object.entries(chunk.values)) {
            const w = v.length / chunk.rows
            values[k] = v.subarray(s * w, (s + m) * w) as TypedArray
          }
          yield {rows: m, values}
        }
      }
    }
  } finally {
    // Reads still in flight must settle before the source closes its file.
    await Promise.all(ahead.map((p) => p.catch(() => undefined)))
  }
}

/** One sample of every wanted field. */
type Row = Record<string, TypedArray>

function splitRows(rows: Rows): Row[] {
  const out: Row[] = []
  for (let r = 0; r < rows.rows; r++) {
    const row: Row = {}
    for (const [k, v] of Object.entries(rows.values)) {
      const n = v.length / rows.rows
      row[k] = v.slice(r * n, (r + 1) * n) as TypedArray
    }
    out.push(row)
  }
  return out
}

function joinRows(rows: Row[]): Rows {
  const values: Record<string, TypedArray> = {}
  for (const k of Object.keys(rows[0]!)) {
    const n = rows[0]![k]!.length
    const Ctor = (rows[0]![k]!.constructor as {new (n: number): TypedArray})
    const out = new Ctor(rows.length * n)
    rows.forEach((r, i) => (out as Float32Array).set(r[k] as Float32Array, i * n))
    values[k] = out
  }
  return {rows: rows.length, values}
}

/**
 * Batches from a front-to-back source. Shuffling such a source with a `limit` takes a seeded
 * uniform sample (reservoir) of `limit` rows; without a limit it shuffles within a window of
 * SHUFFLE_WINDOW rows, so memory stays bounded.
 */
const SHUFFLE_WINDOW = 8192

async function* streamed(spec: DatasetSpec, source: Source, wanted: string[], options: ReadOptions): AsyncGenerator<Rows> {
  const limit = spec.limit ?? Number.POSITIVE_INFINITY
  const random = seededRandom(spec.seed ?? 0)
  let pending: Row[] = []
  let emitted = 0
  if (spec.shuffle && Number.isFinite(limit)) {
    const reservoir: Row[] = []
    let seen = 0
    for await (const chunk of source.stream!(wanted, options.signal)) {
      for (const row of splitRows(chunk)) {
        if (reservoir.length < limit) reservoir.push(row)
        else {
          const j = Math.floor(random() * (seen + 1))
          if (j < limit) reservoir[j] = row
        }
        seen++
      }
    }
    shuffleInPlace(reservoir, random)
    for (let i = 0; i < reservoir.length; i += options.batchSize) yield joinRows(reservoir.slice(i, i + options.batchSize))
    return
  }
  const window: Row[] = []
  const take = (row: Row) => {
    pending.push(row)
    emitted++
  }
  for await (const chunk of source.stream!(wanted, options.signal)) {
    for (const row of splitRows(chunk)) {
      if (emitted >= limit) break
      if (spec.shuffle) {
        window.push(row)
        if (window.length >= SHUFFLE_WINDOW) {
          const j = Math.floor(random() * window.length)
          take(window[j]!)
          window[j] = window.at(-1)!
          window.pop()
        }
      } else take(row)
      if (pending.length === options.batchSize) {
        yield joinRows(pending)
        pending = []
      }
    }
    if (emitted >= limit) break
  }
  shuffleInPlace(window, random)
  for (const row of window) {
    if (emitted >= limit) break
    take(row)
    if (pending.length === options.batchSize) {
      yield joinRows(pending)
      pending = []
    }
  }
  if (pending.length) yield joinRows(pending)
}

/**
 * The first `batch` samples of a dataset as model inputs, repeated when it has fewer: real inputs
 * to time a model on. A model whose inputs have no batch axis of their own takes batch 1 only.
 */
export async function sampleBatch(spec: DatasetSpec, inputs: InputMeta[], batch: number, signal?: AbortSignal): Promise<Batch['inputs']> {
  let first: Batch | undefined
  for await (const b of readBatches({...spec, limit: Math.min(spec.limit ?? Infinity, batch)}, {batchSize: batch, inputs, signal})) first ??= b
  if (!first) throw new KilnError(`dataset '${spec.name}' is empty`, {code: 'E_DATA_EMPTY'})
  if (first.size === batch) return first.inputs
  const b = first
  if (b.whole) {
    throw new KilnError(`dataset '${spec.name}': input '${b.whole[0]}' has no batch axis of its own, so the model runs one sample at a time; batch ${batch} is not possible`, {
      code: 'E_DATA_BATCH',
      tryMessage: 'Time it at batch 1.',
    })
  }
  const out: Batch['inputs'] = {}
  for (const [name, t] of Object.entries(b.inputs)) {
    const per = t.data.length / b.size
    const Ctor = t.data.constructor as new (n: number) => typeof t.data
    const data = new Ctor(per * batch)
    for (let i = 0; i < batch; i++) (data as Float32Array).set(t.data.subarray((i % b.size) * per, ((i % b.size) + 1) * per) as Float32Array, i * per)
    out[name] = {type: t.type, data, dims: [batch, ...t.dims.slice(1)]}
  }
  return out
}
