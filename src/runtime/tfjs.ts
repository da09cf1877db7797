import {createRequire} from 'node:module'
import path from 'node:path'
import type * as TfNs from '@tensorflow/tfjs'
import {KilnError} from '../errors.js'

export type Tf = typeof TfNs

/** Which TF.js backend runs models: native TensorFlow (tfjs-node), WebAssembly, or plain JS. */
export type TfjsBackendName = 'tensorflow' | 'wasm' | 'cpu'

export interface LoadedTfjs {
  tf: Tf
  backend: TfjsBackendName
  /** Why a preferred backend was not used (e.g. tfjs-node not installed). */
  notes: string[]
}

export interface LoadTfjsOptions {
  /** Force a backend instead of the best available one (tfjs-node, then wasm, then cpu). */
  backend?: TfjsBackendName
}

let loaded: Promise<LoadedTfjs> | undefined

// A variable, so TypeScript does not try to resolve an optional package that is not installed.
const TFJS_NODE = '@tensorflow/tfjs-node'

async function tryNode(notes: string[]): Promise<LoadedTfjs | undefined> {
  try {
    const mod = (await import(TFJS_NODE)) as {default?: Tf} & Tf
    const tf = (mod.default ?? mod) as Tf
    await tf.setBackend('tensorflow')
    await tf.ready()
    return {tf, backend: 'tensorflow', notes}
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    notes.push(code === 'ERR_MODULE_NOT_FOUND' ? 'tfjs-node is not installed' : `tfjs-node failed to load: ${(error as Error).message.split('\n')[0]}`)
    return undefined
  }
}

async function tryWasm(tf: Tf, notes: string[]): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm')
    // Point at the .wasm files inside the installed package: they load from disk, offline.
    const require = createRequire(import.meta.url)
    const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep
    wasm.setWasmPaths(dist)
    if (!(await tf.setBackend('wasm'))) throw new Error('setBackend(wasm) returned false')
    await tf.ready()
    return true
  } catch (error) {
    notes.push(`wasm backend failed: ${(error as Error).message.split('\n')[0]}`)
    return false
  }
}

async function load(options: LoadTfjsOptions): Promise<LoadedTfjs> {
  const notes: string[] = []
  if (options.backend === undefined || options.backend === 'tensorflow') {
    const node = await tryNode(notes)
    if (node) return node
    if (options.backend === 'tensorflow') {
      throw new KilnError('the tensorflow (tfjs-node) backend was requested but is not available', {
        code: 'E_TFJS_BACKEND',
        tryMessage: 'Install @tensorflow/tfjs-node where it can download libtensorflow, or use the wasm backend.',
      })
    }
  }
  const tf = (await import('@tensorflow/tfjs')) as Tf
  if (options.backend !== 'cpu' && (await tryWasm(tf, notes))) return {tf, backend: 'wasm', notes}
  await tf.setBackend('cpu')
  await tf.ready()
  return {tf, backend: 'cpu', notes}
}

/**
 * TF.js with the best backend available: tfjs-node when a user has installed it (dynamic import;
 * it cannot be a dependency because its install downloads libtensorflow), else WebAssembly, else the
 * pure-JS cpu backend. Loaded once per process and never at start-up.
 */
export async function loadTfjs(options: LoadTfjsOptions = {}): Promise<LoadedTfjs> {
  if (options.backend) {
    const l = await load(options)
    return l
  }
  loaded ??= load(options)
  return loaded
}
