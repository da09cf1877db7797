import type * as Ort from 'onnxruntime-node'
import type {BatchTensor} from '../data/dataset.js'
import type {HardwareProfile} from '../stages/types.js'

let ortPromise: Promise<typeof Ort> | undefined

/**
 * onnxruntime-node, loaded on first use. Never import it at module top level: `kiln --help` must
 * start fast, and most commands never run a model.
 */
export async function loadOrt(): Promise<typeof Ort> {
  ortPromise ??= import('onnxruntime-node').then((m) => ((m as unknown as {default?: typeof Ort}).default ?? m) as typeof Ort)
  return ortPromise
}

/** A batch's tensors as onnxruntime feeds, over the same memory. */
export async function toFeeds(inputs: Record<string, BatchTensor>): Promise<Record<string, Ort.Tensor>> {
  const ort = await loadOrt()
  const feeds: Record<string, Ort.Tensor> = {}
  for (const [name, t] of Object.entries(inputs)) feeds[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims)
  return feeds
}

/** Session options for a hardware profile. Quiet logging: tf2onnx models warn on every load. */
export function sessionOptions(profile?: Partial<HardwareProfile>): Ort.InferenceSession.SessionOptions {
  const options: Ort.InferenceSession.SessionOptions = {
    logSeverityLevel: 3,
    executionProviders: profile?.providers ?? ['cpu'],
    graphOptimizationLevel: profile?.graphOptimizationLevel ?? 'all',
  }
  // onnxruntime-node rejects keys that are present but undefined: set only what the profile gives.
  if (profile?.threads !== undefined) options.intraOpNumThreads = profile.threads
  if (profile?.interOpThreads !== undefined) options.interOpNumThreads = profile.interOpThreads
  if (profile?.executionMode !== undefined) options.executionMode = profile.executionMode
  return options
}

/** Create an inference session from a file path or model bytes. */
export async function createSession(model: string | Uint8Array, profile?: Partial<HardwareProfile>): Promise<Ort.InferenceSession> {
  const ort = await loadOrt()
  const options = sessionOptions(profile)
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options)
}

export type {Ort}
