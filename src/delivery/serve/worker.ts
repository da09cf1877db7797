import {parentPort} from 'node:worker_threads'
import type {Ort} from '../../runtime/ort.js'
import {createSession, loadOrt} from '../../runtime/ort.js'
import type {RawTensor, TensorData} from './datatypes.js'
import type {FromWorker, SessionValueInfo, ToWorker} from './worker-protocol.js'

/**
 * An inference worker: a thread that owns one onnxruntime session per loaded model. onnxruntime-node
 * runs a session synchronously on the calling thread, so inference lives here to keep the HTTP
 * thread free for parsing, health checks and metrics while models run.
 */
const port = parentPort
if (!port) throw new Error('the inference worker must run in a worker thread')

const sessions = new Map<string, Ort.InferenceSession>()

function describe(values: readonly Ort.InferenceSession.ValueMetadata[]): SessionValueInfo[] {
  return values.map((v) => (v.isTensor ? {name: v.name, isTensor: true, type: v.type, dims: [...v.shape]} : {name: v.name, isTensor: false, dims: []}))
}

function reply(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(message, transfer)
}

/** An output view that owns its whole buffer can move to the HTTP thread without a copy. */
function ownedData(data: TensorData): {data: TensorData; transfer?: ArrayBuffer} {
  if (Array.isArray(data)) return {data}
  const buffer = data.buffer as ArrayBuffer
  if (data.byteOffset === 0 && data.byteLength === buffer.byteLength) return {data, transfer: buffer}
  const copy = data.slice()
  return {data: copy, transfer: copy.buffer as ArrayBuffer}
}

/** The buffers a run's inputs live in, each once: they go back to the HTTP thread for reuse. */
function inputBuffers(msg: ToWorker): ArrayBuffer[] {
  if (msg.op !== 'run') return []
  return [...new Set(msg.inputs.flatMap((t) => (Array.isArray(t.data) ? [] : [t.data.buffer as ArrayBuffer])))].filter((b) => b.byteLength > 0)
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.op) {
    case 'load': {
      const source = 'path' in msg.model ? msg.model.path : msg.model.bytes
      const session = await createSession(source, {threads: msg.threads, interOpThreads: 1, executionMode: 'sequential'})
      const old = sessions.get(msg.key)
      sessions.set(msg.key, session)
      if (old) await old.release()
      reply({op: 'loaded', id: msg.id, inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata)})
      return
    }
    case 'unload': {
      const session = sessions.get(msg.key)
      sessions.delete(msg.key)
      if (session) await session.release()
      reply({op: 'unloaded', id: msg.id})
      return
    }
    case 'run': {
      const session = sessions.get(msg.key)
      if (!session) throw new Error(`model ${msg.key} is not loaded in this worker`)
      const ort = await loadOrt()
      const feeds: Record<string, Ort.Tensor> = {}
      for (const t of msg.inputs) feeds[t.name] = new ort.Tensor(t.type as never, t.data as never, t.dims)
      const start = performance.now()
      const result = await session.run(feeds, msg.outputs)
      const ms = performance.now() - start
      const outputs: RawTensor[] = []
      const transfer: ArrayBuffer[] = []
      for (const name of msg.outputs) {
        const tensor = result[name]
        if (!tensor) throw new Error(`the session returned no output '${name}'`)
        const owned = ownedData(tensor.data as TensorData)
        if (owned.transfer) transfer.push(owned.transfer)
        outputs.push({name, type: tensor.type as RawTensor['type'], dims: [...tensor.dims], data: owned.data})
      }
      const returned = inputBuffers(msg).filter((b) => !transfer.includes(b))
      reply({op: 'result', id: msg.id, outputs, ms, returned}, [...transfer, ...returned])
    }
  }
}

// Messages are handled one at a time: a run must not interleave with a load of the same model.
let chain: Promise<void> = Promise.resolve()
port.on('message', (msg: ToWorker) => {
  chain = chain.then(() =>
    handle(msg).catch((error: unknown) => {
      const returned = inputBuffers(msg)
      reply({op: 'error', id: msg.id, message: error instanceof Error ? error.message : String(error), returned}, returned)
    }),
  )
})
