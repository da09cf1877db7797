import {
  allocate,
  decodeBytesElements,
  elementSize,
  isOipDatatype,
  OIP_DATATYPES,
  type OipDatatype,
  ortTypeOf,
  type RawTensor,
  storeJsonValue,
  viewOf,
} from './datatypes.js'
import type {BufferPool} from '../../util/buffer-pool.js'
import {badRequest} from './http-error.js'

/** One input or output of a served model, as model metadata describes it (-1 for a dynamic dim). */
export interface TensorSpec {
  name: string
  datatype: OipDatatype
  shape: number[]
  /** The symbolic name of each dynamic dim, where the model gives one ("batch"); used to check that inputs agree. */
  symbols: (string | undefined)[]
  /** The model declares no shape at all: any rank is accepted (metadata shows `[-1]`). */
  anyRank?: boolean
}

export interface ModelSignature {
  inputs: TensorSpec[]
  outputs: TensorSpec[]
}

export interface RequestedOutput {
  name: string
  binary: boolean
}

/** A decoded, validated infer request: tensors ready for a session run. */
export interface InferRequest {
  id?: string
  inputs: RawTensor[]
  outputs: RequestedOutput[]
}

/** Largest element count a single tensor may claim; beyond it the arithmetic itself stops being exact. */
const MAX_ELEMENTS = 2 ** 40

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function describeDims(shape: number[]): string {
  return `[${shape.map((d) => (d < 0 ? '?' : String(d))).join(', ')}]`
}

/**
 * Split an infer body into its JSON header and the binary tail. `headerLength` comes from
 * `Inference-Header-Content-Length`; without it the whole body is JSON.
 */
export function splitBody(body: Buffer, headerLength: string | undefined): {json: unknown; binary: Buffer} {
  let jsonBytes: Buffer = body
  let binary: Buffer = Buffer.alloc(0)
  if (headerLength !== undefined) {
    if (!/^\d+$/.test(headerLength.trim())) throw badRequest(`Inference-Header-Content-Length must be a byte count, got '${headerLength}'`)
    const n = Number(headerLength)
    if (n > body.length) throw badRequest(`Inference-Header-Content-Length is ${n} but the body has only ${body.length} bytes`)
    jsonBytes = body.subarray(0, n)
    binary = body.subarray(n)
  }
  let json: unknown
  try {
    json = JSON.parse(jsonBytes.toString('utf8'))
  } catch (error) {
    throw badRequest(`request body is not valid JSON: ${(error as Error).message}`)
  }
  return {json, binary}
}

/**
 * Decode and validate an infer request against the model's signature. Every failure is a 400 that
 * names the tensor and what was wrong with it, so a client can fix its request without guessing.
 */
export interface DecodeOptions {
  /**
   * Binary tensors may be views of `binary`'s own memory (when aligned) instead of copies. Only for
   * a body buffer the request owns outright, since the tensors move to a worker with it.
   */
  inPlace?: boolean
  /** Where copies of binary tensors get their memory. */
  buffers?: BufferPool
}

export function decodeInferRequest(json: unknown, binary: Buffer, sig: ModelSignature, options: DecodeOptions = {}): InferRequest {
  if (!isRecord(json)) throw badRequest('request body must be a JSON object with an "inputs" array')
  const id = json.id
  if (id !== undefined && typeof id !== 'string') throw badRequest('"id" must be a string')
  const params = json.parameters
  if (params !== undefined && !isRecord(params)) throw badRequest('"parameters" must be an object')
  const allBinary = params?.binary_data_output
  if (allBinary !== undefined && typeof allBinary !== 'boolean') throw badRequest('"parameters.binary_data_output" must be true or false')
  if (!Array.isArray(json.inputs) || json.inputs.length === 0) throw badRequest('"inputs" must be a non-empty array')

  const specs = new Map(sig.inputs.map((s) => [s.name, s]))
  const seen = new Set<string>()
  const inputs: RawTensor[] = []
  const symbolValues = new Map<string, {value: number; input: string}>()
  let offset = 0
  for (const [index, entry] of json.inputs.entries()) {
    if (!isRecord(entry)) throw badRequest(`inputs[${index}] must be an object`)
    const name = entry.name
    if (typeof name !== 'string') throw badRequest(`inputs[${index}].name must be a string`)
    const spec = specs.get(name)
    if (!spec) throw badRequest(`unknown input '${name}'; the model's inputs are: ${sig.inputs.map((s) => s.name).join(', ')}`)
    if (seen.has(name)) throw badRequest(`input '${name}' is given more than once`)
    seen.add(name)
    const datatype = entry.datatype
    if (!isOipDatatype(datatype)) throw badRequest(`input '${name}': datatype must be one of ${OIP_DATATYPES.join(', ')}, got ${JSON.stringify(datatype)}`)
    if (datatype !== spec.datatype) throw badRequest(`input '${name}': datatype ${datatype} does not match the model's ${spec.datatype}`)
    const shape = checkShape(name, entry.shape, spec, symbolValues)
    const count = shape.reduce((a, b) => a * b, 1)
    if (count > MAX_ELEMENTS) throw badRequest(`input '${name}': shape ${describeDims(shape)} is too large`)

    const tparams = entry.parameters
    if (tparams !== undefined && !isRecord(tparams)) throw badRequest(`input '${name}': "parameters" must be an object`)
    const binarySize = tparams?.binary_data_size
    let tensor: RawTensor
    if (binarySize !== undefined) {
      if (entry.data !== undefined) throw badRequest(`input '${name}': give either "data" or "parameters.binary_data_size", not both`)
      if (typeof binarySize !== 'number' || !Number.isInteger(binarySize) || binarySize < 0) throw badRequest(`input '${name}': binary_data_size must be a non-negative integer`)
      if (offset + binarySize > binary.length) {
        throw badRequest(`input '${name}': binary_data_size ${binarySize} at offset ${offset} runs past the end of the binary data (${binary.length} bytes)`)
      }
      tensor = fromBinary(name, datatype, shape, count, binary.subarray(offset, offset + binarySize), options)
      offset += binarySize
    } else {
      if (entry.data === undefined) throw badRequest(`input '${name}': missing "data" (or "parameters.binary_data_size" with the binary extension)`)
      tensor = fromJson(name, datatype, shape, count, entry.data)
    }
    inputs.push(tensor)
  }
  if (offset !== binary.length) throw badRequest(`the body has ${binary.length - offset} bytes of binary data that no input claims`)
  const missing = sig.inputs.filter((s) => !seen.has(s.name)).map((s) => s.name)
  if (missing.length > 0) throw badRequest(`missing input${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')}`)

  return {id: id as string | undefined, inputs, outputs: decodeOutputs(json.outputs, sig, allBinary === true)}
}

function checkShape(name: string, raw: unknown, spec: TensorSpec, symbols: Map<string, {value: number; input: string}>): number[] {
  if (!Array.isArray(raw) || !raw.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 0)) {
    throw badRequest(`input '${name}': shape must be an array of non-negative integers, got ${JSON.stringify(raw)}`)
  }
  const shape = raw as number[]
  if (spec.anyRank) return shape
  if (shape.length !== spec.shape.length) {
    throw badRequest(`input '${name}': shape ${describeDims(shape)} has rank ${shape.length} but the model expects rank ${spec.shape.length} ${describeDims(spec.shape)}`)
  }
  for (const [i, d] of shape.entries()) {
    const want = spec.shape[i]!
    if (want >= 0 && d !== want) throw badRequest(`input '${name}': dim ${i} is ${d} but the model expects ${want} (shape ${describeDims(spec.shape)})`)
    const symbol = spec.symbols[i]
    if (want < 0 && symbol) {
      const prior = symbols.get(symbol)
      if (prior && prior.value !== d) {
        throw badRequest(`input '${name}': dim ${i} ('${symbol}') is ${d} but input '${prior.input}' gives '${symbol}' = ${prior.value}`)
      }
      if (!prior) symbols.set(symbol, {value: d, input: name})
    }
  }
  return shape
}

function fromBinary(name: string, datatype: OipDatatype, dims: number[], count: number, bytes: Buffer, options: DecodeOptions): RawTensor {
  if (datatype === 'BYTES') {
    const values = decodeBytesElements(bytes)
    if (typeof values === 'string') throw badRequest(`input '${name}': malformed BYTES data: ${values}`)
    if (values.length !== count) throw badRequest(`input '${name}': shape ${describeDims(dims)} needs ${count} elements but the binary data holds ${values.length}`)
    return {name, type: 'string', dims, data: values}
  }
  const size = elementSize(datatype)
  if (bytes.length !== count * size) {
    throw badRequest(`input '${name}': shape ${describeDims(dims)} of ${datatype} needs ${count * size} bytes but binary_data_size is ${bytes.length}`)
  }
  if (options.inPlace && bytes.byteOffset % size === 0) return {name, type: ortTypeOf(datatype), dims, data: viewOf(datatype, bytes.buffer as ArrayBuffer, count, bytes.byteOffset)}
  // A private, aligned copy: the body may be shared or unaligned, and the copy is handed to a worker.
  const buffer = options.buffers ? options.buffers.take(bytes.length) : new ArrayBuffer(bytes.length)
  new Uint8Array(buffer, 0, bytes.length).set(bytes)
  return {name, type: ortTypeOf(datatype), dims, data: viewOf(datatype, buffer, count)}
}

function fromJson(name: string, datatype: OipDatatype, dims: number[], count: number, raw: unknown): RawTensor {
  if (!Array.isArray(raw)) throw badRequest(`input '${name}': "data" must be an array`)
  const flat = dims.length > 1 && raw.some((v) => Array.isArray(v)) ? flattenNested(name, dims, raw) : raw
  if (flat.length !== count) {
    throw badRequest(`input '${name}': shape ${describeDims(dims)} needs ${count} elements but "data" has ${flat.length}`)
  }
  if (datatype === 'BYTES') {
    const bad = flat.findIndex((v) => typeof v !== 'string')
    if (bad >= 0) throw badRequest(`input '${name}': element ${bad} is ${JSON.stringify(flat[bad])}; BYTES data must be strings`)
    return {name, type: 'string', dims, data: flat as string[]}
  }
  const data = allocate(datatype, count)
  for (let i = 0; i < count; i++) {
    const problem = storeJsonValue(datatype, data, i, flat[i])
    if (problem) throw badRequest(`input '${name}': element ${i} is ${JSON.stringify(flat[i]) ?? 'missing'}: ${problem} for ${datatype}`)
  }
  return {name, type: ortTypeOf(datatype), dims, data}
}

/**
 * Nested data flattened level by level, each level checked against the shape: `[[1, 2, 3], [4]]`
 * has four elements but is not a [2, 2] tensor. Deeper nesting than the rank is an error, not a
 * deep recursion.
 */
function flattenNested(name: string, dims: number[], raw: unknown[]): unknown[] {
  let level = raw
  for (let d = 0; d < dims.length - 1; d++) {
    const want = dims.slice(0, d + 1).reduce((a, b) => a * b, 1)
    const where = d === 0 ? '"data"' : `"data" at depth ${d}`
    if (level.length !== want) throw badRequest(`input '${name}': ${where} has ${level.length} entries but shape ${describeDims(dims)} needs ${want}`)
    const bad = level.findIndex((v) => !Array.isArray(v) || v.length !== dims[d + 1])
    if (bad >= 0) {
      const v = level[bad]
      throw badRequest(`input '${name}': ${where}, entry ${bad} ${Array.isArray(v) ? `has ${v.length} elements` : 'is not an array'} but shape ${describeDims(dims)} needs ${dims[d + 1]} there`)
    }
    level = level.flat()
  }
  return level
}

function decodeOutputs(raw: unknown, sig: ModelSignature, allBinary: boolean): RequestedOutput[] {
  if (raw === undefined) return sig.outputs.map((o) => ({name: o.name, binary: allBinary}))
  if (!Array.isArray(raw)) throw badRequest('"outputs" must be an array')
  const known = new Set(sig.outputs.map((o) => o.name))
  const out: RequestedOutput[] = []
  for (const [index, entry] of raw.entries()) {
    if (!isRecord(entry) || typeof entry.name !== 'string') throw badRequest(`outputs[${index}] must be an object with a "name"`)
    if (!known.has(entry.name)) throw badRequest(`unknown output '${entry.name}'; the model's outputs are: ${sig.outputs.map((o) => o.name).join(', ')}`)
    if (out.some((o) => o.name === entry.name)) throw badRequest(`output '${entry.name}' is requested more than once`)
    const p = entry.parameters
    if (p !== undefined && !isRecord(p)) throw badRequest(`output '${entry.name}': "parameters" must be an object`)
    if (p?.classification !== undefined) throw badRequest(`output '${entry.name}': the classification extension is not supported`)
    const binary = p?.binary_data
    if (binary !== undefined && typeof binary !== 'boolean') throw badRequest(`output '${entry.name}': binary_data must be true or false`)
    out.push({name: entry.name, binary: binary ?? allBinary})
  }
  if (out.length === 0) throw badRequest('"outputs" must name at least one output when given')
  return out
}
