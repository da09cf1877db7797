import * as fsp from 'node:fs/promises'
import {compressBytes} from '../delivery/compress.js'
import {AbortedError} from '../errors.js'
import {weights} from '../onnx/graph.js'
import {readModel, writeModel} from '../onnx/model.js'
import type {ModelProto} from '../onnx/proto.js'
import {elementCount, isFloatType, tensorData} from '../onnx/tensor.js'

/** Sizes of a model artifact as stored and as delivered (zstd). */
export interface ArtifactSizes {
  /** Bytes on disk: the model plus its external data file, if any. */
  raw: number
  /** Bytes after zstd: what publish and encrypt deliver when compression is on. */
  zstd: number
}

/** Hooks shared by the compression library functions; stages and commands pass theirs in. */
export interface CompressHooks {
  signal?: AbortSignal
  log?: (message: string) => void
  progress?: (message: string) => void
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortedError()
}

/** Raw and zstd size of a model file and its external data file. */
export async function artifactSizes(file: string, externalFile?: string): Promise<ArtifactSizes> {
  let raw = 0
  let zstd = 0
  for (const f of [file, externalFile]) {
    if (!f) continue
    const bytes = await fsp.readFile(f)
    raw += bytes.length
    zstd += (await compressBytes(bytes)).length
  }
  return {raw, zstd}
}

/** Raw and zstd size of a model file, looking for the conventional `<file>.data` beside it. */
export async function modelFileSizes(file: string): Promise<ArtifactSizes> {
  const data = `${file}.data`
  const hasData = await fsp.stat(data).then(
    (s) => s.isFile(),
    () => false,
  )
  return artifactSizes(file, hasData ? data : undefined)
}

/** Parameter counts over every float weight tensor in the model. */
export interface ParamCount {
  total: number
  nonzero: number
}

export function countParams(model: ModelProto): ParamCount {
  let total = 0
  let nonzero = 0
  const seen = new Set<unknown>()
  for (const {tensor} of weights(model)) {
    if (seen.has(tensor) || !isFloatType(tensor.dataType) || tensor.dims.length === 0) continue
    seen.add(tensor)
    const n = elementCount(tensor)
    total += n
    const data = tensorData(tensor)
    let z = 0
    for (let i = 0; i < data.length; i++) if (data[i] === 0) z++
    nonzero += n - z
  }
  return {total, nonzero}
}

/** Read a model, write the transformed model atomically, and measure both artifacts. */
export async function transformModelFile<R>(
  input: string,
  output: string,
  transform: (model: ModelProto) => Promise<R> | R,
): Promise<{result: R; before: ArtifactSizes; after: ArtifactSizes; paramsBefore: ParamCount; paramsAfter: ParamCount}> {
  const model = await readModel(input)
  const before = await modelFileSizes(input)
  const paramsBefore = countParams(model)
  const result = await transform(model)
  const paramsAfter = countParams(model)
  const written = await writeModel(model, output)
  const after = await artifactSizes(output, written.externalFile)
  return {result, before, after, paramsBefore, paramsAfter}
}
