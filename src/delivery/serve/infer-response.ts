import {oipDatatypeOf, type RawTensor, tensorBytes, toJsonValues} from './datatypes.js'
import type {RequestedOutput} from './infer-request.js'

export interface EncodedResponse {
  /** The JSON header, then each binary output: written in turn, never copied into one buffer. */
  chunks: Buffer[]
  headers: Record<string, string>
}

/**
 * Encode an infer response. Outputs asked for with `binary_data` travel as raw little-endian bytes
 * after the JSON header (`Inference-Header-Content-Length` says where the header ends); the rest
 * go inline as JSON. Output order follows the request, or the model's order when none was asked.
 */
export function encodeInferResponse(
  meta: {modelName: string; modelVersion: string; id?: string},
  requested: RequestedOutput[],
  outputs: Map<string, RawTensor>,
): EncodedResponse {
  const binaryParts: Buffer[] = []
  const jsonOutputs = requested.map((r) => {
    const t = outputs.get(r.name)
    if (!t) throw new Error(`the session returned no output '${r.name}'`)
    const datatype = oipDatatypeOf(t.type)
    if (!datatype) throw new Error(`output '${r.name}' has type ${t.type}, which the protocol cannot carry`)
    if (r.binary) {
      const bytes = tensorBytes(t.data)
      binaryParts.push(bytes)
      return {name: r.name, datatype, shape: t.dims, parameters: {binary_data_size: bytes.length}}
    }
    return {name: r.name, datatype, shape: t.dims, data: toJsonValues(datatype, t.data)}
  })
  const header: Record<string, unknown> = {model_name: meta.modelName, model_version: meta.modelVersion}
  if (meta.id !== undefined) header.id = meta.id
  header.outputs = jsonOutputs
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  if (binaryParts.length === 0) return {chunks: [json], headers: {'content-type': 'application/json'}}
  return {
    chunks: [json, ...binaryParts],
    headers: {'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length)},
  }
}
