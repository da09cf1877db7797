import {parentPort} from 'node:worker_threads'
import {tensorBuffers} from './datatypes.js'
import type {TensorData} from './datatypes.js'
import {SessionHost} from './session-host.js'
import type {FromWorker, ToWorker} from './worker-protocol.js'

/**
 * An inference worker: a thread that owns one onnxruntime session per loaded model. onnxruntime-node
 * runs a session synchronously on the calling thread, so inference lives here to keep the HTTP
 * thread free for parsing, health checks and metrics while models run.
 */
const port = parentPort
if (!port) throw new Error('the inference worker must run in a worker thread')

const host = new SessionHost()

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
  return tensorBuffers(msg.inputs).filter((b) => b.byteLength > 0)
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.op) {
    case 'load': {
      reply({op: 'loaded', id: msg.id, ...(await host.load(msg.key, msg.model, msg.threads))})
      return
    }
    case 'unload': {
      await host.unload(msg.key)
      reply({op: 'unloaded', id: msg.id})
      return
    }
    case 'run': {
      const result = await host.run(msg.key, msg.inputs, msg.outputs)
      const transfer: ArrayBuffer[] = []
      const outputs = result.outputs.map((t) => {
        const owned = ownedData(t.data)
        if (owned.transfer) transfer.push(owned.transfer)
        return {...t, data: owned.data}
      })
      const returned = inputBuffers(msg).filter((b) => !transfer.includes(b))
      reply({op: 'result', id: msg.id, outputs, ms: result.ms, returned}, [...transfer, ...returned])
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
