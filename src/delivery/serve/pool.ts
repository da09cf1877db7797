import {Worker} from 'node:worker_threads'
import {tensorBuffers} from './datatypes.js'
import type {RawTensor} from './datatypes.js'
import type {BufferPool} from '../../util/buffer-pool.js'
import {HttpError} from './http-error.js'
import {SessionHost} from './session-host.js'
import type {FromWorker, ModelPayload, SessionValueInfo, ToWorker} from './worker-protocol.js'

/** Options of the inference pool. */
export interface PoolOptions {
  /** Inference workers, each with its own session of every loaded model: the number of requests that run at once. */
  size: number
  /** onnxruntime intra-op threads per session. */
  threads: number
  /** Requests allowed to wait for a free worker; one more is refused with 429 and `Retry-After`. */
  maxQueue: number
  /** Where input buffers go when a worker hands them back after a run. */
  buffers?: BufferPool
}

export interface LoadedSignature {
  inputs: SessionValueInfo[]
  outputs: SessionValueInfo[]
}

/** What the server runs models with: inference workers ({@link InferencePool}) or its own thread ({@link InlinePool}). */
export interface InferenceRunner {
  /** Inference workers (0: inference runs on the HTTP thread). */
  readonly size: number
  readonly queueDepth: number
  readonly running: number
  load(key: string, model: ModelPayload): Promise<LoadedSignature>
  unload(key: string): Promise<void>
  /**
   * Throw the 429 a request arriving now would get, counting `waiting` requests that are on their
   * way in (bodies still being read) as already queued: called before a body is read, so that a
   * full server never holds more bodies than it has room to run and queue.
   */
  admit(waiting: number): void
  /**
   * Run a model. Rejects with a 429 `HttpError` at once when the queue is full, and with the
   * session's own message (400) when onnxruntime refuses the inputs.
   */
  run(key: string, inputs: RawTensor[], outputs: string[]): Promise<{outputs: RawTensor[]; ms: number}>
  close(): Promise<void>
}

const shuttingDown = () => new HttpError(503, 'the server is shutting down', {'retry-after': '1'})

/** The 429 for a full queue, with a `Retry-After` from the smoothed run time and the backlog. */
function queueFull(running: number, queued: number, avgMs: number, lanes: number): HttpError {
  const seconds = Math.max(1, Math.ceil(((queued + 1) * avgMs) / Math.max(1, lanes) / 1000))
  return new HttpError(429, `too many requests: ${running} in progress and ${queued} queued`, {'retry-after': String(seconds)})
}

const refused = (message: string) => new HttpError(400, `the model refused the inputs: ${message}`)

interface Pending {
  resolve: (msg: FromWorker) => void
  reject: (error: Error) => void
}

interface Slot {
  worker: Worker
  pending: Map<number, Pending>
  /** Runs sent to this worker and not answered yet (at most the pool's `depth`). */
  inflight: number
  /** False while a replacement worker is reloading the models its predecessor held. */
  ready: boolean
}

interface Job {
  key: string
  inputs: RawTensor[]
  outputs: string[]
  resolve: (r: {outputs: RawTensor[]; ms: number}) => void
  reject: (error: Error) => void
}

/**
 * Runs handed to one worker before it answers: the one it executes and those already waiting in
 * its message port, so it starts again the moment it finishes instead of idling for a round trip
 * through the HTTP thread. At least two; for fast models, as many as keep it busy through
 * {@link COVER_MS} of the HTTP thread not answering: a full garbage collection there takes 5–15 ms,
 * and with two in hand a worker running BlazeFace (1 ms) sat idle a quarter of the time.
 */
const MIN_DEPTH = 2
const MAX_DEPTH = 16
const COVER_MS = 10

/** A worker failure that is not the request's fault (crash, exit). */
export class WorkerFailure extends Error {}

/**
 * The worker's entry. Built code runs `worker.js`; when the sources run under tsx (benchmarks, tests
 * importing the pool), the worker must register tsx itself before it imports `worker.ts`.
 */
function startWorker(name: string): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url), {name})
  const entry = new URL('./worker.ts', import.meta.url).href
  const bootstrap = `import('tsx/esm/api').then((tsx) => tsx.register()).then(() => import(${JSON.stringify(entry)}))`
  return new Worker(bootstrap, {eval: true, name})
}

/**
 * A fixed pool of inference workers and a bounded queue in front of them. Memory stays bounded:
 * at most `size` requests run and `maxQueue` wait; the rest are told to come back later.
 */
export class InferencePool implements InferenceRunner {
  private readonly slots: Slot[] = []
  private readonly queue: Job[] = []
  private readonly models = new Map<string, {model: ModelPayload; threads: number}>()
  private nextId = 1
  private closed = false
  /** Smoothed run time, for a `Retry-After` that reflects the actual backlog. */
  private avgMs = 10
  /** Runs handed to a worker and not yet answered. */
  private readonly underway = new Set<Promise<unknown>>()

  constructor(private readonly options: PoolOptions) {
    for (let i = 0; i < options.size; i++) this.slots.push(this.spawn(i))
  }

  get size(): number {
    return this.slots.length
  }

  get queueDepth(): number {
    return this.queue.length
  }

  get running(): number {
    return this.slots.reduce((n, s) => n + s.inflight, 0)
  }

  /** Runs a worker may hold at once, from the smoothed run time (see {@link COVER_MS}). */
  private get depth(): number {
    return Math.min(MAX_DEPTH, Math.max(MIN_DEPTH, Math.ceil(COVER_MS / this.avgMs)))
  }

  private spawn(index: number): Slot {
    const worker = startWorker(`kiln-infer-${index}`)
    const slot: Slot = {worker, pending: new Map(), inflight: 0, ready: true}
    worker.on('message', (msg: FromWorker) => {
      const p = slot.pending.get(msg.id)
      if (!p) return
      slot.pending.delete(msg.id)
      p.resolve(msg)
    })
    const fail = (error: Error): void => {
      for (const p of slot.pending.values()) p.reject(new WorkerFailure(`inference worker stopped: ${error.message}`))
      slot.pending.clear()
      if (this.closed) return
      const i = this.slots.indexOf(slot)
      if (i >= 0) this.replace(i)
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)))
    return slot
  }

  /** A worker died: start another and give it every loaded model before it takes requests. */
  private replace(index: number): void {
    const slot = this.spawn(index)
    slot.ready = false
    this.slots[index] = slot
    const loads = [...this.models].map(([key, m]) => this.send(slot, {op: 'load', id: 0, key, model: m.model, threads: m.threads}))
    void Promise.allSettled(loads).then(() => {
      slot.ready = true
      this.dispatch()
    })
  }

  private send(slot: Slot, msg: ToWorker, transfer: ArrayBuffer[] = []): Promise<FromWorker> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      slot.pending.set(id, {resolve, reject})
      slot.worker.postMessage({...msg, id}, transfer)
    })
  }

  /** Load a model into every worker; resolves with the session's signature once all have it. */
  async load(key: string, model: ModelPayload): Promise<LoadedSignature> {
    const replies = await Promise.allSettled(this.slots.map((s) => this.send(s, {op: 'load', id: 0, key, model, threads: this.options.threads})))
    const failed = replies.find((r) => r.status === 'rejected' || r.value.op === 'error')
    if (failed) {
      await this.unload(key)
      if (failed.status === 'rejected') throw failed.reason as Error
      throw new Error((failed.value as {message: string}).message)
    }
    this.models.set(key, {model, threads: this.options.threads})
    const first = (replies[0] as PromiseFulfilledResult<FromWorker>).value as Extract<FromWorker, {op: 'loaded'}>
    return {inputs: first.inputs, outputs: first.outputs}
  }

  async unload(key: string): Promise<void> {
    this.models.delete(key)
    await Promise.allSettled(this.slots.map((s) => this.send(s, {op: 'unload', id: 0, key})))
  }

  admit(waiting: number): void {
    if (this.closed) throw shuttingDown()
    // Room: what the ready workers may hold, and the queue.
    const capacity = this.slots.filter((s) => s.ready).length * this.depth + this.options.maxQueue
    if (this.running + this.queue.length + waiting >= capacity) throw queueFull(this.running, this.queue.length + waiting, this.avgMs, this.slots.length)
  }

  run(key: string, inputs: RawTensor[], outputs: string[]): Promise<{outputs: RawTensor[]; ms: number}> {
    try {
      this.admit(0)
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise((resolve, reject) => {
      this.queue.push({key, inputs, outputs, resolve, reject})
      this.dispatch()
    })
  }

  private dispatch(): void {
    const depth = this.depth
    while (this.queue.length > 0) {
      // The least loaded worker first, so every worker runs before any gets a second job.
      let slot: Slot | undefined
      for (const s of this.slots) if (s.ready && s.inflight < depth && (!slot || s.inflight < slot.inflight)) slot = s
      if (!slot) return
      const job = this.queue.shift()!
      const chosen = slot
      chosen.inflight++
      // Tensors of one request can share a buffer (views of its body): each buffer moves once.
      const transfer = tensorBuffers(job.inputs)
      const underway: Promise<unknown> = this.send(chosen, {op: 'run', id: 0, key: job.key, inputs: job.inputs, outputs: job.outputs}, transfer)
        .then((msg) => {
          if ((msg.op === 'result' || msg.op === 'error') && msg.returned) for (const b of msg.returned) this.options.buffers?.give(b)
          if (msg.op === 'result') {
            this.avgMs = this.avgMs * 0.9 + msg.ms * 0.1
            job.resolve({outputs: msg.outputs, ms: msg.ms})
          } else if (msg.op === 'error') job.reject(refused(msg.message))
          else job.reject(new WorkerFailure(`unexpected worker reply ${msg.op}`))
        }, job.reject)
        .finally(() => {
          chosen.inflight--
          this.underway.delete(underway)
          this.dispatch()
        })
      this.underway.add(underway)
    }
  }

  /** Stop taking work, fail whatever still waits, let the runs already in a worker answer, and end the workers. */
  async close(): Promise<void> {
    this.closed = true
    for (const job of this.queue.splice(0)) job.reject(shuttingDown())
    // A run already in a worker takes one inference more: let it answer before the workers end.
    await Promise.allSettled([...this.underway])
    await Promise.all(this.slots.map((s) => s.worker.terminate()))
  }
}

/**
 * Inference on the HTTP thread itself, one run at a time, behind the same bounded queue. No
 * hand-off to a worker: for a small, fast model that hand-off (a message each way, the tensors
 * moved across threads) costs as much as the model. While a model runs, health checks and metrics
 * wait for it; a worker pool (`size` ≥ 1) keeps them answered.
 */
export class InlinePool implements InferenceRunner {
  readonly size = 0
  private readonly host = new SessionHost()
  private readonly queue: Job[] = []
  private active = 0
  private closed = false
  private avgMs = 10
  /** The run in progress, if any. */
  private current?: Promise<unknown>

  constructor(private readonly options: PoolOptions) {}

  get queueDepth(): number {
    return this.queue.length
  }

  get running(): number {
    return this.active
  }

  load(key: string, model: ModelPayload): Promise<LoadedSignature> {
    return this.host.load(key, model, this.options.threads)
  }

  unload(key: string): Promise<void> {
    return this.host.unload(key)
  }

  admit(waiting: number): void {
    if (this.closed) throw shuttingDown()
    if (this.active + this.queue.length + waiting >= 1 + this.options.maxQueue) throw queueFull(this.active, this.queue.length + waiting, this.avgMs, 1)
  }

  run(key: string, inputs: RawTensor[], outputs: string[]): Promise<{outputs: RawTensor[]; ms: number}> {
    try {
      this.admit(0)
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise((resolve, reject) => {
      this.queue.push({key, inputs, outputs, resolve, reject})
      this.next()
    })
  }

  private next(): void {
    if (this.active > 0) return
    const job = this.queue.shift()
    if (!job) return
    this.active = 1
    this.current = this.host
      .run(job.key, job.inputs, job.outputs)
      .then(
        (r) => {
          this.avgMs = this.avgMs * 0.9 + r.ms * 0.1
          job.resolve(r)
        },
        (error: unknown) => job.reject(refused(error instanceof Error ? error.message : String(error))),
      )
      .finally(() => {
        this.active = 0
        this.next()
      })
  }

  async close(): Promise<void> {
    this.closed = true
    for (const job of this.queue.splice(0)) job.reject(shuttingDown())
    // Its sessions go only once the run in progress has answered.
    await this.current?.catch(() => undefined)
    await this.host.close()
  }
}
