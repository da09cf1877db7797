import type {RawTensor} from './datatypes.js'

/** Where a worker gets a model from: a file it may read itself, or bytes decrypted in memory. */
export type ModelPayload = {path: string} | {bytes: Uint8Array}

/** One input or output as onnxruntime reports it (dims: numbers, or the symbolic name of a dynamic dim). */
export interface SessionValueInfo {
  name: string
  isTensor: boolean
  type?: string
  dims: (number | string)[]
}

export type ToWorker =
  | {op: 'load'; id: number; key: string; model: ModelPayload; threads: number}
  | {op: 'unload'; id: number; key: string}
  | {op: 'run'; id: number; key: string; inputs: RawTensor[]; outputs: string[]}

/** Results and errors of a run carry back (`returned`) the input buffers the run was given, for reuse. */
export type FromWorker =
  | {op: 'loaded'; id: number; inputs: SessionValueInfo[]; outputs: SessionValueInfo[]}
  | {op: 'unloaded'; id: number}
  | {op: 'result'; id: number; outputs: RawTensor[]; ms: number; returned?: ArrayBuffer[]}
  | {op: 'error'; id: number; message: string; returned?: ArrayBuffer[]}
