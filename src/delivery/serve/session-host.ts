import type {Ort} from '../../runtime/ort.js'
import {createSession, loadOrt} from '../../runtime/ort.js'
import type {RawTensor, TensorData} from './datatypes.js'
import type {ModelPayload, SessionValueInfo} from './worker-protocol.js'

function describe(values: readonly Ort.InferenceSession.ValueMetadata[]): SessionValueInfo[] {
  return values.map((v) => (v.isTensor ? {name: v.name, isTensor: true, type: v.type, dims: [...v.shape]} : {name: v.name, isTensor: false, dims: []}))
}

/**
 * The onnxruntime sessions of one inference thread, one per loaded model: what an inference worker
 * holds, and what the HTTP thread holds itself when the server runs inference in line (`--pool 0`).
 */
export class SessionHost {
  private readonly sessions = new Map<string, Ort.InferenceSession>()

  async load(key: string, model: ModelPayload, threads: number): Promise<{inputs: SessionValueInfo[]; outputs: SessionValueInfo[]}> {
    const source = 'path' in model ? model.path : model.bytes
    const session = await createSession(source, {threads, interOpThreads: 1, executionMode: 'sequential'})
    const old = this.sessions.get(key)
    this.sessions.set(key, session)
    if (old) await old.release()
    return {inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata)}
  }

  async unload(key: string): Promise<void> {
    const session = this.sessions.get(key)
    this.sessions.delete(key)
    if (session) await session.release()
  }

  /** Run a loaded model; `ms` is the session's own run time. */
  async run(key: string, inputs: RawTensor[], outputs: string[]): Promise<{outputs: RawTensor[]; ms: number}> {
    const session = this.sessions.get(key)
    if (!session) throw new Error(`model ${key} is not loaded in this worker`)
    const ort = await loadOrt()
    const feeds: Record<string, Ort.Tensor> = {}
    for (const t of inputs) feeds[t.name] = new ort.Tensor(t.type as never, t.data as never, t.dims)
    const start = performance.now()
    const result = await session.run(feeds, outputs)
    const ms = performance.now() - start
    return {
      ms,
      outputs: outputs.map((name) => {
        const tensor = result[name]
        if (!tensor) throw new Error(`the session returned no output '${name}'`)
        return {name, type: tensor.type as RawTensor['type'], dims: [...tensor.dims], data: tensor.data as TensorData}
      }),
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.sessions.keys()].map((k) => this.unload(k)))
  }
}
