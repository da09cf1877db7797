import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {Readable} from 'node:stream'
import {ModelError} from '../errors.js'
import {atomicWriteFile, atomicWriteStream, tempPathFor} from '../util/fs.js'
import {encodeModelChunks} from './encode.js'
import {allTensors} from './graph.js'
import {DataLocation, ModelProtoSchema, StringStringEntryProtoSchema, create, fromBinary, toBinary} from './proto.js'
import type {ModelProto, TensorProto} from './proto.js'
import {isExternal, tensorByteLength} from './tensor.js'

/** protobuf cannot encode a message of 2 GiB or more: past this, weights must go to external data. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1
/** Leave headroom below the protobuf limit for the graph itself. */
const AUTO_EXTERNAL_BYTES = 1.8 * 2 ** 30

export interface ReadModelOptions {
  /** Load external tensor data into memory (default true). */
  loadExternalData?: boolean
}

/**
 * Read an ONNX model. External data is loaded into `raw_data` (as views into one buffer per data
 * file), so the rest of kiln sees every weight in memory. Memory stays near one copy of the model:
 * tensors are sub-array views of the file buffer, never copies.
 */
export async function readModel(file: string, options: ReadModelOptions = {}): Promise<ModelProto> {
  let stat
  try {
    stat = await fsp.stat(file)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new ModelError(code === 'ENOENT' ? `model not found: ${file}` : `cannot read model ${file}: ${code}`, {
      code: 'E_MODEL_MISSING',
      tryMessage: 'Check the model path (in a pipeline file it is relative to the file).',
    })
  }
  if (stat.isDirectory()) {
    throw new ModelError(`model path is a directory, not a file: ${file}`, {
      code: 'E_MODEL_IS_DIR',
      tryMessage: 'Point at the .onnx file (or the TF.js model.json) inside it.',
    })
  }
  if (stat.size === 0) throw new ModelError(`model file is empty: ${file}`, {code: 'E_MODEL_CORRUPT'})
  const bytes = await fsp.readFile(file)
  const model = parseModel(bytes, file)
  if (options.loadExternalData !== false) await loadExternalData(model, path.dirname(file))
  return model
}

/** Parse ONNX bytes, rejecting what is not a plausible ModelProto with a clear message. */
export function parseModel(bytes: Uint8Array, label = 'model'): ModelProto {
  let model: ModelProto
  try {
    model = fromBinary(ModelProtoSchema, bytes, {readUnknownFields: true})
  } catch (error) {
    throw new ModelError(`${label} is not a valid ONNX model (truncated or corrupt): ${(error as Error).message}`, {
      code: 'E_MODEL_CORRUPT',
      cause: error,
      tryMessage: 'Re-export or re-download the model; a partial download or a non-ONNX file gives this error.',
    })
  }
  if (!model.graph || model.irVersion <= 0n || model.opsetImport.length === 0) {
    throw new ModelError(`${label} is not a valid ONNX model: ${!model.graph ? 'no graph' : model.irVersion <= 0n ? 'no IR version' : 'no opset import'}`, {
      code: 'E_MODEL_CORRUPT',
      tryMessage: 'Re-export or re-download the model; a partial download or a non-ONNX file gives this error.',
    })
  }
  return model
}

function externalInfo(t: TensorProto): {location: string; offset: number; length?: number} {
  const kv = new Map(t.externalData.map((e) => [e.key, e.value]))
  const location = kv.get('location')
  if (!location) throw new ModelError(`tensor '${t.name}' is external but names no location`, {code: 'E_MODEL_CORRUPT'})
  return {
    location,
    offset: Number(kv.get('offset') ?? 0),
    length: kv.has('length') ? Number(kv.get('length')) : undefined,
  }
}

/**
 * Read each external tensor's byte range into its own buffer. Reading whole data files would fail
 * past 2 GiB (Node's readFile limit) and would hold bytes no tensor references.
 */
export async function loadExternalData(model: ModelProto, baseDir: string): Promise<void> {
  const files = new Map<string, {fh: fsp.FileHandle; size: number}>()
  try {
    for (const {tensor} of allTensors(model)) {
      if (!isExternal(tensor)) continue
      const {location, offset, length} = externalInfo(tensor)
      const resolved = path.resolve(baseDir, location)
      if (path.isAbsolute(location) || !resolved.startsWith(path.resolve(baseDir) + path.sep)) {
        throw new ModelError(`tensor '${tensor.name}': external data location '${location}' leaves the model's directory`, {
          code: 'E_MODEL_CORRUPT',
        })
      }
      let file = files.get(resolved)
      if (!file) {
        let fh: fsp.FileHandle
        try {
          fh = await fsp.open(resolved, 'r')
        } catch {
          throw new ModelError(`tensor '${tensor.name}': external data file not found: ${resolved}`, {
            code: 'E_MODEL_MISSING',
            tryMessage: 'Keep the data file next to the .onnx file, under the name the model records.',
          })
        }
        file = {fh, size: (await fh.stat()).size}
        files.set(resolved, file)
      }
      const len = length ?? tensorByteLength(tensor)
      if (offset + len > file.size) {
        throw new ModelError(`tensor '${tensor.name}': external data ${location} is truncated (needs ${offset + len} bytes, has ${file.size})`, {
          code: 'E_MODEL_CORRUPT',
        })
      }
      const buf = Buffer.allocUnsafeSlow(len)
      for (let done = 0; done < len; ) {
        const {bytesRead} = await file.fh.read(buf, done, Math.min(len - done, 1 << 30), offset + done)
        if (bytesRead === 0) throw new ModelError(`tensor '${tensor.name}': external data ${location} ended early`, {code: 'E_MODEL_CORRUPT'})
        done += bytesRead
      }
      tensor.rawData = buf as Uint8Array<ArrayBuffer>
      tensor.externalData = []
      clearDataLocation(tensor)
    }
  } finally {
    await Promise.all([...files.values()].map((f) => f.fh.close()))
  }
}

/**
 * onnx.proto is proto2: an assigned field counts as present and is serialized even at its default.
 * Unsetting it keeps an in-memory model byte-identical to what was read once data is back inline.
 */
function clearDataLocation(t: TensorProto): void {
  delete (t as {dataLocation?: unknown}).dataLocation
}

export interface WriteModelOptions {
  /**
   * `auto` (default): external data only when the model would not fit in one protobuf.
   * `always`: every tensor of at least `externalThreshold` bytes goes to the data file.
   * `never`: fail if the model does not fit.
   */
  externalData?: 'auto' | 'always' | 'never'
  /** Smallest tensor (bytes) moved to external data. Default 1024. */
  externalThreshold?: number
  /** Data file name beside the model. Default `<model file>.data`. */
  location?: string
}

/**
 * Write a model atomically, moving large weights to an external data file when needed. The input
 * model is left as it was.
 */
export async function writeModel(model: ModelProto, file: string, options: WriteModelOptions = {}): Promise<{bytes: number; externalFile?: string}> {
  const mode = options.externalData ?? 'auto'
  const threshold = options.externalThreshold ?? 1024
  const tensors = [...allTensors(model)].map((x) => x.tensor)
  const unloaded = tensors.find((t) => isExternal(t))
  if (unloaded) {
    throw new ModelError(`tensor '${unloaded.name}' still points at external data; read the model with its external data loaded before writing it`, {
      code: 'E_MODEL_EXTERNAL',
    })
  }
  const weightBytes = tensors.reduce((n, t) => n + t.rawData.length, 0)
  const external = mode === 'always' || (mode === 'auto' && weightBytes > AUTO_EXTERNAL_BYTES)
  if (!external) {
    if (weightBytes > PROTOBUF_LIMIT) throw new ModelError(`model has ${weightBytes} bytes of weights, over the 2 GiB protobuf limit; write it with external data`)
    const encoded = encodeModelChunks(model)
    await atomicWriteStream(file, Readable.from(encoded.chunks))
    return {bytes: encoded.length}
  }

  const location = options.location ?? `${path.basename(file)}.data`
  const dataFile = path.join(path.dirname(file), location)
  const moved: {t: TensorProto; raw: Uint8Array<ArrayBuffer>}[] = []
  const tmpData = tempPathFor(dataFile)
  await fsp.mkdir(path.dirname(file), {recursive: true})
  const fh = await fsp.open(tmpData, 'w')
  let offset = 0
  try {
    for (const t of tensors) {
      if (t.rawData.length < threshold) continue
      // Align each tensor to 4 KiB so the data file can be memory-mapped by runtimes that do.
      const pad = (4096 - (offset % 4096)) % 4096
      if (pad) await writeAll(fh, new Uint8Array(pad))
      offset += pad
      await writeAll(fh, t.rawData)
      moved.push({t, raw: t.rawData})
      t.externalData = [
        create(StringStringEntryProtoSchema, {key: 'location', value: location}),
        create(StringStringEntryProtoSchema, {key: 'offset', value: String(offset)}),
        create(StringStringEntryProtoSchema, {key: 'length', value: String(t.rawData.length)}),
      ]
      t.dataLocation = DataLocation.EXTERNAL
      t.rawData = new Uint8Array(0)
      offset += moved.at(-1)!.raw.length
    }
    await fh.sync()
    await fh.close()
    const bytes = toBinary(ModelProtoSchema, model)
    await fsp.rename(tmpData, dataFile)
    await atomicWriteFile(file, bytes)
    return {bytes: bytes.length + offset, externalFile: dataFile}
  } catch (error) {
    await fh.close().catch(() => {})
    await fsp.rm(tmpData, {force: true})
    throw error
  } finally {
    for (const {t, raw} of moved) {
      t.rawData = raw
      t.externalData = []
      clearDataLocation(t)
    }
  }
}

/** write(2) may write less than asked (Linux caps one call near 2 GiB): loop until all is out. */
async function writeAll(fh: fsp.FileHandle, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const {bytesWritten} = await fh.write(data, done, Math.min(data.length - done, 1 << 30))
    done += bytesWritten
  }
}

/** Serialize a model that fits in one protobuf (no external data). */
export function modelToBytes(model: ModelProto): Uint8Array {
  return toBinary(ModelProtoSchema, model)
}

/** The model's opset version for a domain ('' = ai.onnx). */
export function opsetVersion(model: ModelProto, domain = ''): number | undefined {
  const d = domain === 'ai.onnx' ? '' : domain
  const entry = model.opsetImport.find((o) => (o.domain === 'ai.onnx' ? '' : o.domain) === d)
  return entry ? Number(entry.version) : undefined
}
