import type * as Ort from 'onnxruntime-node'
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
