import path from 'node:path'
import {AbortedError, KilnError, UsageError} from '../../errors.js'
import {modelToBytes, writeModel} from '../../onnx/model.js'
import {assembleModel} from './assemble.js'
import {convertGraphModel} from './graph/convert.js'
import type {ConvertedGraph} from './graph/convert.js'
import {convertLayersModel} from './layers/convert.js'
import {loadTfjsModel} from './manifest.js'
import {datasetInputs, sampleInputs} from './samples.js'
import {verifyAgainstTfjs} from './verify.js'
import type {VerifyReport} from './verify.js'
import type {DatasetSpec} from '../../stages/types.js'

/** Default verification tolerance: max abs error relative to each output's largest |value|. */
export const DEFAULT_TOLERANCE = 1e-4

/** Options for converting a TF.js model (layers or graph `model.json`) to ONNX. */
export interface TfjsConvertOptions {
  /** Interface layout: keep the model's NHWC (default) or expose NCHW. */
  layout?: 'nhwc' | 'nchw'
  /** ONNX opset to target (default 17). */
  opset?: number
  /**
   * Built-in verification against TF.js itself (default on). `tolerance`: max abs error relative to
   * each output's scale (default 1e-4); `samples`: how many inputs (default 4); `dataset`: an
   * npz/npy file (or a pipeline dataset) whose arrays are named or mapped like the inputs, in the
   * converted model's layout; `images`:
   * a folder of PNG/JPEG photos used for image inputs (else seeded random values).
   */
  verify?: boolean | {tolerance?: number; samples?: number; dataset?: string | DatasetSpec; images?: string}
  /** Mark unsupported ops for this custom-op domain instead of failing. */
  customOpDomain?: string
  signal?: AbortSignal
  log?: (message: string) => void
}

export interface TfjsConvertResult {
  metrics: Record<string, unknown>
}

export type {VerifyReport}

const MIN_OPSET = 13

/** Convert `modelJson` to an ONNX file at `outFile`. */
export async function convertTfjs(modelJson: string, outFile: string, options: TfjsConvertOptions = {}): Promise<TfjsConvertResult> {
  const opset = options.opset ?? 17
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > 21) {
    throw new UsageError(`opset ${opset} is not supported for TF.js conversion (supported: ${MIN_OPSET}–21)`, {tryMessage: 'Use opset 17 (the default).'})
  }
  const nchw = options.layout === 'nchw'
  const log = options.log ?? (() => {})
  const started = performance.now()
  const model = await loadTfjsModel(modelJson)
  if (options.signal?.aborted) throw new AbortedError()

  const converted: ConvertedGraph =
    model.kind === 'graph'
      ? convertGraphModel(model.json.modelTopology, model.json.signature, model.weights, {nchw, opset, customOpDomain: options.customOpDomain})
      : convertLayersModel(model.json.modelTopology, model.weights, {nchw, opset, customOpDomain: options.customOpDomain})
  const b = converted.builder
  const onnx = assembleModel(b, path.basename(modelJson, '.json'), opset, options.customOpDomain)
  const convertSeconds = (performance.now() - started) / 1000
  const opCounts: Record<string, number> = {}
  for (const n of onnx.graph!.node) opCounts[n.opType] = (opCounts[n.opType] ?? 0) + 1
  log(`converted ${model.kind} model ${path.basename(modelJson)}: ${onnx.graph!.node.length} ONNX nodes in ${convertSeconds.toFixed(2)} s`)

  let verify: VerifyReport | {skipped: string} | undefined
  if (options.verify !== false) {
    if (b.customOps.size) {
      verify = {skipped: `the model has custom-domain ops (${[...b.customOps.keys()].join(', ')}) that onnxruntime cannot run`}
      log(`verification skipped: ${verify.skipped}`)
    } else {
      const v = typeof options.verify === 'object' ? options.verify : {}
      const tolerance = v.tolerance ?? DEFAULT_TOLERANCE
      const count = v.samples ?? 4
      const specs = converted.inputs
      const {samples, source} = v.dataset
        ? {samples: await datasetInputs(v.dataset, specs, count, nchw, options.signal), source: `dataset ${typeof v.dataset === 'string' ? v.dataset : v.dataset.name}`}
        : await sampleInputs(specs, count, v.images)
      if (options.signal?.aborted) throw new AbortedError()
      verify = await verifyAgainstTfjs(model, modelToBytes(onnx), {inputs: specs, outputs: converted.outputs, nchw}, samples, {tolerance, inputSource: source, signal: options.signal})
      log(`verified against TF.js (${verify.backend}) on ${source}: ${verify.outputs.map((o) => `${o.name} max abs ${o.maxAbsError.toExponential(2)}, rel ${o.relError.toExponential(2)}`).join('; ')}`)
      if (!verify.passed) {
        const bad = verify.outputs.filter((o) => !o.passed)
        throw new KilnError(
          `converted model disagrees with TF.js above tolerance ${tolerance}: ${bad.map((o) => o.shapeMismatch ? `${o.name} shape ${o.shapeMismatch}` : `${o.name} rel error ${o.relError.toExponential(2)} (max abs ${o.maxAbsError.toExponential(2)}, scale ${o.scale.toExponential(2)})`).join('; ')}`,
          {code: 'E_TFJS_VERIFY', tryMessage: 'Report the model so the op conversion can be fixed; raise the tolerance only if the error is expected (e.g. a huge-range output).'},
        )
      }
    }
  }

  const written = await writeModel(onnx, outFile)
  return {
    metrics: {
      format: model.kind,
      layout: nchw ? 'nchw' : 'nhwc',
      opset,
      inputs: converted.inputs.map((i) => ({name: i.name, shape: i.shape})),
      outputs: converted.outputs.map((o) => ({name: o.name, shape: o.shape})),
      nodes: onnx.graph!.node.length,
      transposes: opCounts.Transpose ?? 0,
      opCounts,
      customOps: Object.fromEntries(b.customOps),
      weights: model.weights.size,
      bytes: written.bytes,
      convertSeconds,
      verify: verify ?? {skipped: 'disabled'},
    },
  }
}
