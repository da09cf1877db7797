import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../../errors.js'
import {fromFloat16Array} from '../../onnx/float16.js'

/** One entry of a `weightsManifest` group, as TF.js writes it. */
export interface WeightSpec {
  name: string
  shape: number[]
  dtype: 'float32' | 'int32' | 'bool' | 'string' | 'complex64'
  quantization?: {dtype: 'uint8' | 'uint16' | 'float16'; min?: number; scale?: number}
}

export interface WeightGroup {
  paths: string[]
  weights: WeightSpec[]
}

/** A decoded weight: values already dequantized the way TF.js does it. */
export interface Weight {
  dtype: 'float32' | 'int32' | 'bool'
  shape: number[]
  data: Float32Array | Int32Array | Uint8Array
}

/** The parsed `model.json` of a TF.js model (layers or graph). */
export interface TfjsModelJson {
  format?: string
  generatedBy?: string
  convertedBy?: string
  modelTopology: any
  weightsManifest: WeightGroup[]
  signature?: any
  userDefinedMetadata?: any
}

export interface LoadedTfjsModel {
  file: string
  json: TfjsModelJson
  kind: 'layers' | 'graph'
  weights: Map<string, Weight>
  /** Every shard concatenated, in manifest order: what TF.js's own loader receives. */
  weightData: ArrayBuffer
  weightSpecs: WeightSpec[]
}

const BYTES: Record<string, number> = {float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2, complex64: 8}

function malformed(file: string, what: string): KilnError {
  return new KilnError(`${file} is not a valid TF.js model.json: ${what}`, {
    code: 'E_TFJS_MANIFEST',
    tryMessage: 'Re-export the model with tensorflowjs_converter or `model.save()`, and keep model.json beside its weight shards.',
  })
}

function validateManifest(file: string, json: any): asserts json is TfjsModelJson {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw malformed(file, 'expected a JSON object')
  if (!json.modelTopology || typeof json.modelTopology !== 'object') throw malformed(file, 'no `modelTopology`')
  if (!Array.isArray(json.weightsManifest)) throw malformed(file, '`weightsManifest` must be an array of weight groups')
  json.weightsManifest.forEach((g: any, gi: number) => {
    if (!g || !Array.isArray(g.paths) || !g.paths.every((p: unknown) => typeof p === 'string')) throw malformed(file, `weightsManifest[${gi}].paths must be an array of file names`)
    if (!Array.isArray(g.weights)) throw malformed(file, `weightsManifest[${gi}].weights must be an array`)
    g.weights.forEach((w: any, wi: number) => {
      const where = `weightsManifest[${gi}].weights[${wi}]`
      if (!w || typeof w.name !== 'string') throw malformed(file, `${where} has no name`)
      if (!Array.isArray(w.shape) || !w.shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0)) throw malformed(file, `${where} ('${w.name}') has an invalid shape`)
      if (!(w.dtype in BYTES) || w.dtype === 'uint8' || w.dtype === 'uint16' || w.dtype === 'float16') throw malformed(file, `${where} ('${w.name}') has unknown dtype '${w.dtype}'`)
      const q = w.quantization
      if (q !== undefined) {
        if (!q || !['uint8', 'uint16', 'float16'].includes(q.dtype)) throw malformed(file, `${where} ('${w.name}') has unknown quantization dtype '${q?.dtype}'`)
        if (q.dtype !== 'float16' && (typeof q.min !== 'number' || typeof q.scale !== 'number')) throw malformed(file, `${where} ('${w.name}') is ${q.dtype}-quantized without numeric min and scale`)
        if (q.dtype === 'float16' && w.dtype !== 'float32') throw malformed(file, `${where} ('${w.name}') is float16-quantized but has dtype ${w.dtype}`)
      }
    })
  })
}

function byteLength(w: WeightSpec): number {
  const n = w.shape.reduce((a, b) => a * b, 1)
  if (w.dtype === 'string') throw new KilnError(`weight '${w.name}' is a string tensor, which ONNX conversion does not support`, {code: 'E_TFJS_UNSUPPORTED'})
  return n * BYTES[w.quantization ? w.quantization.dtype : w.dtype]!
}

/**
 * Decode one weight exactly as tfjs-core's `decodeWeight`: `q * scale + min` computed in double and
 * stored as float32 (rounded for int32), float16 widened bit-exactly.
 */
function decode(w: WeightSpec, bytes: Uint8Array): Weight {
  const n = w.shape.reduce((a, b) => a * b, 1)
  const q = w.quantization
  const buf = bytes.slice().buffer
  if (q) {
    if (q.dtype === 'float16') return {dtype: 'float32', shape: w.shape, data: fromFloat16Array(new Uint16Array(buf, 0, n))}
    const src = q.dtype === 'uint8' ? new Uint8Array(buf, 0, n) : new Uint16Array(buf, 0, n)
    const scale = q.scale!
    const min = q.min!
    if (w.dtype === 'int32') {
      const out = new Int32Array(n)
      for (let i = 0; i < n; i++) out[i] = Math.round(src[i]! * scale + min)
      return {dtype: 'int32', shape: w.shape, data: out}
    }
    if (w.dtype !== 'float32') throw malformed('model.json', `weight '${w.name}' of dtype ${w.dtype} cannot be ${q.dtype}-quantized`)
    const out = new Float32Array(n)
    for (let i = 0; i < n; i++) out[i] = src[i]! * scale + min
    return {dtype: 'float32', shape: w.shape, data: out}
  }
  if (w.dtype === 'float32') return {dtype: 'float32', shape: w.shape, data: new Float32Array(buf, 0, n)}
  if (w.dtype === 'int32') return {dtype: 'int32', shape: w.shape, data: new Int32Array(buf, 0, n)}
  if (w.dtype === 'bool') return {dtype: 'bool', shape: w.shape, data: new Uint8Array(buf, 0, n)}
  throw new KilnError(`weight '${w.name}' has dtype ${w.dtype}, which ONNX conversion does not support`, {code: 'E_TFJS_UNSUPPORTED'})
}

/** Read and validate a TF.js `model.json` and every weight shard it names. */
export async function loadTfjsModel(file: string): Promise<LoadedTfjsModel> {
  let text: string
  try {
    text = await fsp.readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new KilnError(code === 'ENOENT' ? `model not found: ${file}` : `cannot read ${file}: ${code}`, {
      code: 'E_MODEL_MISSING',
      tryMessage: 'Check the path to model.json.',
    })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw malformed(file, `not JSON (${(error as Error).message})`)
  }
  validateManifest(file, json)
  const topo = json.modelTopology
  const kind: 'layers' | 'graph' = json.format === 'graph-model' || Array.isArray(topo.node) ? 'graph' : topo.model_config || topo.class_name || topo.config ? 'layers' : (() => {
    throw malformed(file, '`modelTopology` is neither a layers model (model_config) nor a graph model (node list)')
  })()

  const dir = path.dirname(file)
  const chunks: Uint8Array[] = []
  const weights = new Map<string, Weight>()
  const specs: WeightSpec[] = []
  for (const group of json.weightsManifest) {
    const parts: Uint8Array[] = []
    for (const rel of group.paths) {
      const shard = path.resolve(dir, decodeURIComponent(rel))
      // Shards live beside model.json (TF.js fetches them relative to it); never read elsewhere.
      const inside = path.relative(dir, shard)
      if (inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside)) throw malformed(file, `weight shard path '${rel}' points outside the model's folder`)
      try {
        parts.push(await fsp.readFile(shard))
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        throw new KilnError(code === 'ENOENT' ? `weight shard '${rel}' named in ${path.basename(file)} is missing (looked for ${shard})` : `cannot read weight shard ${shard}: ${code}`, {
          code: 'E_TFJS_SHARD_MISSING',
          tryMessage: 'Copy every shard listed in weightsManifest[].paths next to model.json.',
        })
      }
    }
    const total = parts.reduce((a, p) => a + p.byteLength, 0)
    const expected = group.weights.reduce((a, w) => a + byteLength(w), 0)
    if (total !== expected) {
      throw new KilnError(`weight shards ${group.paths.join(', ')} hold ${total} bytes but the manifest's ${group.weights.length} weights need ${expected}`, {
        code: 'E_TFJS_SHARD_SIZE',
        tryMessage: 'A shard is truncated, from another model, or the manifest was edited; re-export or re-download the model.',
      })
    }
    const data = new Uint8Array(total)
    let o = 0
    for (const p of parts) {
      data.set(p, o)
      o += p.byteLength
    }
    chunks.push(data)
    let offset = 0
    for (const w of group.weights) {
      const len = byteLength(w)
      weights.set(w.name, decode(w, data.subarray(offset, offset + len)))
      offset += len
      specs.push(w)
    }
  }
  const all = new Uint8Array(chunks.reduce((a, c) => a + c.byteLength, 0))
  let o = 0
  for (const c of chunks) {
    all.set(c, o)
    o += c.byteLength
  }
  return {file, json, kind, weights, weightData: all.buffer, weightSpecs: specs}
}
