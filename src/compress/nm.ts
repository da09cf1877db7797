import {UsageError} from '../errors.js'
import type {CompressHooks} from './prune-io.js'
import {throwIfAborted} from './prune-io.js'
import {readWeight, writeWeight} from './prune-weights.js'
import type {LayerWeight} from './prune-weights.js'

/** An N:M pattern: keep `n` of every `m` consecutive weights along the reduction axis. */
export interface NmPattern {
  n: number
  m: number
}

export function parsePattern(text: string): NmPattern {
  const match = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(text)
  const n = match ? Number(match[1]) : Number.NaN
  const m = match ? Number(match[2]) : Number.NaN
  if (!match || n < 1 || m < 2 || n >= m || m > 64) {
    throw new UsageError(`invalid N:M pattern '${text}'`, {
      code: 'E_PRUNE_PATTERN',
      tryMessage: 'Use N:M with 1 <= N < M <= 64, e.g. 2:4 or 4:8 (keep N of every M weights).',
    })
  }
  return {n, m}
}

/**
 * N:M pruning in place along each layer's reduction axis (the axis sparse matrix units group
 * along: K of a matmul, input channels of a conv). Every layer is checked before any is changed, so
 * an indivisible axis leaves the model untouched.
 */
export function nmPrune(layers: LayerWeight[], pattern: NmPattern, hooks: CompressHooks = {}): void {
  const {n, m} = pattern
  for (const l of layers) {
    const size = l.dims[l.reductionAxis]!
    if (size % m !== 0) {
      throw new UsageError(`${n}:${m} pruning: layer '${l.layer}' (${l.opType}, weight '${l.name}' [${l.dims.join(',')}]) has reduction axis ${l.reductionAxis} of size ${size}, which ${m} does not divide`, {
        code: 'E_PRUNE_NM_AXIS',
        tryMessage: `Leave that layer dense with an override ({'${l.layer}': 0}), use --protect-first-last if it is the first or last layer, or choose M dividing ${size}.`,
      })
    }
  }
  const order = new Int32Array(m)
  const mags = new Float32Array(m)
  for (const l of layers) {
    throwIfAborted(hooks.signal)
    const values = readWeight(l.tensor)
    const axis = l.reductionAxis
    const outer = l.dims.slice(0, axis).reduce((a, b) => a * b, 1)
    const len = l.dims[axis]!
    const inner = l.dims.slice(axis + 1).reduce((a, b) => a * b, 1)
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        for (let b = 0; b < len; b += m) {
          const base = (o * len + b) * inner + i
          for (let j = 0; j < m; j++) {
            order[j] = j
            mags[j] = Math.abs(values[base + j * inner]!)
          }
          // Insertion sort: m is tiny, and ties keep the earlier weight (deterministic).
          for (let j = 1; j < m; j++) {
            const v = order[j]!
            let k = j - 1
            while (k >= 0 && mags[order[k]!]! < mags[v]!) (order[k + 1] = order[k]!), k--
            order[k + 1] = v
          }
          for (let j = n; j < m; j++) values[base + order[j]! * inner] = 0
        }
      }
    }
    writeWeight(l.tensor, values)
  }
}
