import {AbortedError, KilnError} from '../../errors.js'
import {createSession, loadOrt} from '../../runtime/ort.js'
import {loadTfjs} from '../../runtime/tfjs.js'
import type {TfjsBackendName} from '../../runtime/tfjs.js'
import {DataType} from '../../onnx/proto.js'
import {TO_NCHW, TO_NHWC, permuteData} from './builder.js'
import type {LoadedTfjsModel} from './manifest.js'
import type {Sample, SampleInputSpec} from './samples.js'

export interface InterfaceSpec extends SampleInputSpec {
  /** Name of the tensor in the TF.js model (node name for graph models). */
  source: string
}

/** Agreement of one output between TF.js and onnxruntime over every sample. */
export interface OutputAgreement {
  name: string
  maxAbsError: number
  /** Largest |TF.js value|: the output's scale. */
  scale: number
  /** maxAbsError / scale. */
  relError: number
  passed: boolean
  /** Set when the two runtimes disagree on the output's shape. */
  shapeMismatch?: string
}

export interface VerifyReport {
  backend: TfjsBackendName
  /** Why a faster backend was not used (e.g. tfjs-node not installed). */
  backendNotes: string[]
  samples: number
  inputSource: string
  tolerance: number
  outputs: OutputAgreement[]
  passed: boolean
}

type Tensors = Record<string, {data: Float32Array | Int32Array; shape: number[]}>

async function runTfjs(model: LoadedTfjsModel, inputs: InterfaceSpec[], outputs: InterfaceSpec[], samples: Sample[], signal?: AbortSignal): Promise<{backend: TfjsBackendName; notes: string[]; results: Tensors[]}> {
  const {tf, backend, notes} = await loadTfjs()
  const json = model.json
  const handler = tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: model.weightSpecs as never,
    weightData: model.weightData,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    signature: json.signature,
    userDefinedMetadata: json.userDefinedMetadata,
  } as never)
  const results: Tensors[] = []
  if (model.kind === 'graph') {
    const g = await tf.loadGraphModel(handler)
    try {
      for (const s of samples) {
        if (signal?.aborted) throw new AbortedError()
        const feed = Object.fromEntries(inputs.map((i) => [i.source, tf.tensor(s[i.name]!.data, s[i.name]!.shape, i.dtype === DataType.FLOAT ? 'float32' : 'int32')]))
        const names = outputs.map((o) => o.source)
        let out
        try {
          out = g.execute(feed, names)
        } catch (error) {
          // Graphs with dynamic ops (NMS, Where) or control flow only run asynchronously.
          if (!/executeAsync/.test((error as Error).message)) throw error
          out = await g.executeAsync(feed, names)
        }
        const list = Array.isArray(out) ? out : [out]
        results.push(Object.fromEntries(await Promise.all(list.map(async (t, k) => [outputs[k]!.name, {data: (await t.data()) as Float32Array | Int32Array, shape: t.shape}] as const))))
        tf.dispose([...Object.values(feed), ...list])
      }
    } finally {
      g.dispose()
    }
  } else {
    const m = await tf.loadLayersModel(handler)
    try {
      for (const s of samples) {
        if (signal?.aborted) throw new AbortedError()
        const feed = inputs.map((i) => tf.tensor(s[i.name]!.data, s[i.name]!.shape, i.dtype === DataType.FLOAT ? 'float32' : 'int32'))
        const out = m.predict(feed.length === 1 ? feed[0]! : feed)
        const list = Array.isArray(out) ? out : [out]
        results.push(Object.fromEntries(await Promise.all(list.map(async (t, k) => [outputs[k]!.name, {data: (await t.data()) as Float32Array | Int32Array, shape: t.shape}] as const))))
        tf.dispose([...feed, ...list])
      }
    } finally {
      m.dispose()
    }
  }
  return {backend, notes, results}
}

async function runOnnx(file: string | Uint8Array, inputs: InterfaceSpec[], samples: Sample[], nchw: boolean, signal?: AbortSignal): Promise<Tensors[]> {
  const session = await createSession(file)
  const ort = await loadOrt()
  const results: Tensors[] = []
  try {
    for (const s of samples) {
      if (signal?.aborted) throw new AbortedError()
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {}
      for (const i of inputs) {
        let {data, shape} = s[i.name]!
        if (nchw && shape.length === 4) {
          data = permuteData(data, shape, TO_NCHW)
          shape = TO_NCHW.map((p) => shape[p]!)
        }
        const type = session.inputMetadata.find((m) => m.name === i.name)
        const wantsInt64 = type && 'type' in type && type.type === 'int64'
        feeds[i.name] = wantsInt64 ? new ort.Tensor('int64', BigInt64Array.from(data as Int32Array, (x) => BigInt(x)), shape) : new ort.Tensor(data instanceof Int32Array ? 'int32' : 'float32', data, shape)
      }
      const out = await session.run(feeds)
      const r: Tensors = {}
      for (const [name, t] of Object.entries(out)) {
        let data = t.data instanceof BigInt64Array ? Int32Array.from(t.data, (x) => Number(x)) : (t.data as Float32Array | Int32Array)
        let shape = [...t.dims]
        if (nchw && shape.length === 4) {
          data = permuteData(data instanceof Uint8Array ? Int32Array.from(data) : data, shape, TO_NHWC)
          shape = TO_NHWC.map((p) => shape[p]!)
        }
        r[name] = {data: data instanceof Uint8Array ? Int32Array.from(data) : data, shape}
      }
      results.push(r)
    }
  } finally {
    await session.release()
  }
  return results
}

/**
 * Run the source model in TF.js and the converted one in onnxruntime on the same samples and
 * compare every output: max abs error relative to the output's scale (its largest |value|).
 */
export async function verifyAgainstTfjs(
  model: LoadedTfjsModel,
  onnxFile: string | Uint8Array,
  io: {inputs: InterfaceSpec[]; outputs: InterfaceSpec[]; nchw: boolean},
  samples: Sample[],
  options: {tolerance: number; inputSource: string; signal?: AbortSignal},
): Promise<VerifyReport> {
  const {backend, notes, results: ref} = await runTfjs(model, io.inputs, io.outputs, samples, options.signal)
  const got = await runOnnx(onnxFile, io.inputs, samples, io.nchw, options.signal)
  const outputs = io.outputs.map((o): OutputAgreement => {
    let maxAbs = 0
    let scale = 0
    for (let k = 0; k < samples.length; k++) {
      const a = ref[k]![o.name]!
      const b = got[k]![o.name]
      if (!b) throw new KilnError(`converted model has no output '${o.name}'`, {code: 'E_TFJS_VERIFY'})
      if (a.data.length !== b.data.length || a.shape.join(',') !== b.shape.join(',')) {
        return {name: o.name, maxAbsError: Number.POSITIVE_INFINITY, scale: 0, relError: Number.POSITIVE_INFINITY, passed: false, shapeMismatch: `TF.js [${a.shape.join(',')}] vs ONNX [${b.shape.join(',')}]`}
      }
      for (let j = 0; j < a.data.length; j++) {
        const x = a.data[j]!
        const d = Math.abs(x - b.data[j]!)
        if (Number.isNaN(d) && !(Number.isNaN(x) && Number.isNaN(b.data[j]!))) maxAbs = Number.POSITIVE_INFINITY
        else if (d > maxAbs) maxAbs = d
        if (Math.abs(x) > scale) scale = Math.abs(x)
      }
    }
    const relError = scale > 0 ? maxAbs / scale : maxAbs
    return {name: o.name, maxAbsError: maxAbs, scale, relError, passed: relError <= options.tolerance}
  })
  return {backend, backendNotes: notes, samples: samples.length, inputSource: options.inputSource, tolerance: options.tolerance, outputs, passed: outputs.every((o) => o.passed)}
}
