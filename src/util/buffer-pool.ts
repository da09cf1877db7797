/**
 * Memory handed out again and again: request bodies in `kiln serve`, batches in the dataset reader.
 * A fresh buffer costs a page fault per 4 KiB the first time it is written, which for a 200 KB
 * image input is as much CPU as the model itself; recycled buffers are already mapped. A request
 * body is read into one of these, its tensors are views of it, it travels to an inference worker
 * and back without a copy, and returns here when the answer has been sent.
 *
 * Buffers come in power-of-two size classes from 4 KiB. At most `keepBytes` wait idle; beyond
 * that, returned buffers are left to the garbage collector, so memory stays bounded.
 */
/** Larger requests get buffers of their own size, not kept for reuse. */
export const MAX_POOLED = 8 * 1024 * 1024

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>()
  private idleBytes = 0

  constructor(private readonly keepBytes = 64 * 1024 * 1024) {}

  /** The size class a request of `bytes` is served from. */
  static classOf(bytes: number): number {
    return Math.max(4096, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))))
  }

  /**
   * A buffer of at least `bytes` (its byteLength is the size class); its contents are undefined.
   * Past {@link MAX_POOLED} a buffer is exactly the size asked and is not kept afterwards: rounding
   * a 40 MB body up to 64 MB would cost more than the page faults it saves.
   */
  take(bytes: number): ArrayBuffer {
    if (bytes > MAX_POOLED) return new ArrayBuffer(bytes)
    const size = BufferPool.classOf(bytes)
    const list = this.free.get(size)
    const buffer = list?.pop()
    if (buffer) {
      this.idleBytes -= size
      return buffer
    }
    return new ArrayBuffer(size)
  }

  /** Give a buffer back. Detached buffers (moved to a worker) and foreign sizes are ignored. */
  give(buffer: ArrayBuffer): void {
    const size = buffer.byteLength
    if (size === 0 || size > MAX_POOLED || size !== BufferPool.classOf(size) || this.idleBytes + size > this.keepBytes) return
    let list = this.free.get(size)
    if (!list) this.free.set(size, (list = []))
    if (list.includes(buffer)) return
    list.push(buffer)
    this.idleBytes += size
  }

  /** Bytes waiting to be reused. */
  get idle(): number {
    return this.idleBytes
  }
}
