/**
 * Quantization arithmetic shared by every mode: affine parameters from a range, and weight
 * quantization per tensor or per channel. Round half to even matches onnxruntime's QuantizeLinear.
 */

export type IntType = 'uint8' | 'int8'

export interface QuantParams {
  scale: number
  zeroPoint: number
}

export function qRange(type: IntType, reduceRange = false): {qmin: number; qmax: number} {
  if (type === 'uint8') return reduceRange ? {qmin: 0, qmax: 127} : {qmin: 0, qmax: 255}
  return reduceRange ? {qmin: -64, qmax: 63} : {qmin: -128, qmax: 127}
}

export function roundHalfEven(x: number): number {
  // Math.round sends halves up; an odd result from an exact half goes back down to even.
  const r = Math.round(x)
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r
}

/**
 * Affine parameters for a float range. The range always includes 0 so that zero (padding, ReLU
 * floor) is exact. Symmetric ranges put the zero point in the middle (0 for int8, 128 for uint8).
 */
export function paramsForRange(min: number, max: number, type: IntType, symmetric: boolean, reduceRange = false): QuantParams {
  let lo = Math.min(min, 0)
  let hi = Math.max(max, 0)
  const {qmin, qmax} = qRange(type, reduceRange)
  if (symmetric) {
    const a = Math.max(Math.abs(lo), Math.abs(hi))
    lo = -a
    hi = a
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new RangeError(`non-finite range [${min}, ${max}]`)
  if (hi - lo < 1e-12) return {scale: 1, zeroPoint: symmetric && type === 'uint8' ? 128 : type === 'uint8' ? 0 : 0}
  if (symmetric) {
    const scale = (hi - lo) / (qmax - qmin)
    const zeroPoint = type === 'uint8' ? Math.ceil((qmax + qmin) / 2) : 0
    return {scale, zeroPoint}
  }
  const scale = (hi - lo) / (qmax - qmin)
  const zeroPoint = Math.min(qmax, Math.max(qmin, roundHalfEven(qmin - lo / scale)))
  return {scale, zeroPoint}
}

export interface QuantizedWeight {
  data: Int8Array | Uint8Array
  scales: Float32Array
  zeroPoints: Int8Array | Uint8Array
  /** Channel axis, or undefined for per-tensor. */
  axis?: number
}

/**
 * Quantize a weight tensor symmetrically to int8 (what onnxruntime's S8 kernels expect), per
 * tensor or per channel along `axis`. Reduce-range keeps 7 bits for CPUs whose u8s8 dot product
 * can saturate (no VNNI).
 */
export function quantizeWeight(values: Float32Array, dims: number[], axis: number | undefined, reduceRange: boolean): QuantizedWeight {
  const {qmax} = qRange('int8', reduceRange)
  const out = new Int8Array(values.length)
  if (axis === undefined) {
    let a = 0
    for (let i = 0; i < values.length; i++) a = Math.max(a, Math.abs(values[i]!))
    const scale = a > 0 ? a / qmax : 1
    for (let i = 0; i < values.length; i++) out[i] = clampRound(values[i]! / scale, -qmax, qmax)
    return {data: out, scales: Float32Array.of(scale), zeroPoints: Int8Array.of(0)}
  }
  const channels = dims[axis]!
  const inner = dims.slice(axis + 1).reduce((x, y) => x * y, 1)
  const outer = dims.slice(0, axis).reduce((x, y) => x * y, 1)
  const absmax = new Float64Array(channels)
  // One flat pass each: the channel of element k is floor(k / inner) mod channels.
  for (let o = 0, k = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      let a = absmax[c]!
      for (let i = 0; i < inner; i++, k++) {
        const v = values[k]!
        const m = v < 0 ? -v : v
        if (m > a) a = m
      }
      absmax[c] = a
    }
  }
  const scales = new Float32Array(channels)
  const inv = new Float64Array(channels)
  for (let c = 0; c < channels; c++) {
    scales[c] = absmax[c]! > 0 ? absmax[c]! / qmax : 1
    inv[c] = 1 / scales[c]!
  }
  for (let o = 0, k = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const m = inv[c]!
      for (let i = 0; i < inner; i++, k++) out[k] = clampRound(values[k]! * m, -qmax, qmax)
    }
  }
  return {data: out, scales, zeroPoints: new Int8Array(channels), axis}
}

export function clampRound(x: number, lo: number, hi: number): number {
  const r = roundHalfEven(x)
  return r < lo ? lo : r > hi ? hi : r
}

/** Signal-to-quantization-noise ratio in dB of `test` against `ref` (Infinity when identical). */
export function sqnr(ref: ArrayLike<number>, test: ArrayLike<number>): number {
  let s = 0
  let n = 0
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!
    const d = r - test[i]!
    s += r * r
    n += d * d
  }
  if (n === 0) return Number.POSITIVE_INFINITY
  if (s === 0) return Number.NEGATIVE_INFINITY
  return 10 * Math.log10(s / n)
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!
    aa += a[i]! * a[i]!
    bb += b[i]! * b[i]!
  }
  if (aa === 0 && bb === 0) return 1
  return ab / Math.sqrt(aa * bb || 1)
}
