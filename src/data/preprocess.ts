import {KilnError} from '../errors.js'
import type {TypedArray} from '../onnx/tensor.js'

/** Preprocessing of one dataset entry (`datasets.<name>.preprocess` in the pipeline file). */
export interface Preprocess {
  /** Resize to `[height, width]` (one number: square). Bilinear for arrays, sharp for images. */
  resize?: number | [number, number]
  /** Centre-crop to `[height, width]` after resizing. */
  crop?: number | [number, number]
  /** Layout the model expects. Images are decoded HWC; arrays are taken as stored unless the model's shape says otherwise. */
  layout?: 'NCHW' | 'NHWC'
  /** Multiply raw values by this first (1/255 for pixels to [0, 1]). */
  scale?: number
  /** Subtract (one value or one per channel), after scaling. */
  mean?: number | number[]
  /** Divide by (one value or one per channel), after the mean. */
  std?: number | number[]
  /** Element type of the model input. */
  dtype?: 'float32' | 'float16' | 'uint8' | 'int8' | 'int32' | 'int64'
}

const KEYS = new Set(['resize', 'crop', 'layout', 'scale', 'mean', 'std', 'dtype'])

/** Validate a `preprocess` record (the pipeline schema does too; `kiln eval` flags come here directly). */
export function parsePreprocess(raw: Record<string, unknown> | undefined, dataset: string): Preprocess {
  if (!raw) return {}
  const unknown = Object.keys(raw).filter((k) => !KEYS.has(k))
  if (unknown.length) throw new KilnError(`dataset '${dataset}': unknown preprocess option(s) ${unknown.join(', ')}`, {code: 'E_DATA', tryMessage: `Use: ${[...KEYS].join(', ')}`})
  return raw as Preprocess
}

export const size2 = (s: number | [number, number]): [number, number] => (typeof s === 'number' ? [s, s] : s)

/** A sample in HWC (channels last) or CHW, with its element values. */
export interface Sample {
  data: TypedArray | Float32Array
  /** Per-sample shape. */
  shape: number[]
}

/** Bilinear resize of a [C,H,W] or [H,W] float plane stack (half-pixel centres, as image libraries do). */
export function resizeBilinear(src: ArrayLike<number>, channels: number, h: number, w: number, oh: number, ow: number, channelsLast: boolean): Float32Array {
  const out = new Float32Array(channels * oh * ow)
  const sy = h / oh
  const sx = w / ow
  for (let y = 0; y < oh; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), h - 1)
    const y0 = Math.floor(fy)
    const y1 = Math.min(y0 + 1, h - 1)
    const dy = fy - y0
    for (let x = 0; x < ow; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), w - 1)
      const x0 = Math.floor(fx)
      const x1 = Math.min(x0 + 1, w - 1)
      const dx = fx - x0
      for (let c = 0; c < channels; c++) {
        const at = channelsLast ? (yy: number, xx: number) => src[(yy * w + xx) * channels + c]! : (yy: number, xx: number) => src[(c * h + yy) * w + xx]!
        const v = (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x1)) + dy * ((1 - dx) * at(y1, x0) + dx * at(y1, x1))
        out[channelsLast ? (y * ow + x) * channels + c : (c * oh + y) * ow + x] = v
      }
    }
  }
  return out
}

/** Centre crop of a [C,H,W] (or [H,W,C]) sample. */
export function centreCrop(src: ArrayLike<number>, channels: number, h: number, w: number, ch: number, cw: number, channelsLast: boolean): Float32Array {
  if (ch > h || cw > w) throw new KilnError(`crop ${ch}×${cw} is larger than the sample (${h}×${w})`, {code: 'E_DATA', tryMessage: 'Resize first (preprocess.resize) or crop less.'})
  const top = Math.floor((h - ch) / 2)
  const left = Math.floor((w - cw) / 2)
  const out = new Float32Array(channels * ch * cw)
  for (let y = 0; y < ch; y++)
    for (let x = 0; x < cw; x++)
      for (let c = 0; c < channels; c++) {
        out[channelsLast ? (y * cw + x) * channels + c : (c * ch + y) * cw + x] = channelsLast ? src[((y + top) * w + x + left) * channels + c]! : src[(c * h + y + top) * w + x + left]!
      }
  return out
}

/** HWC → CHW or back. */
export function transposeLayout(src: ArrayLike<number>, h: number, w: number, c: number, toChannelsFirst: boolean): Float32Array {
  const out = new Float32Array(h * w * c)
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let k = 0; k < c; k++) {
        if (toChannelsFirst) out[(k * h + y) * w + x] = src[(y * w + x) * c + k]!
        else out[(y * w + x) * c + k] = src[(k * h + y) * w + x]!
      }
  return out
}

/**
 * Scale, normalise per channel and write into `out` at `offset` as the model's element type.
 * `channelOf(i)` gives the channel of element i (the layout decides).
 */
export function normaliseInto(
  src: ArrayLike<number | bigint>,
  out: TypedArray,
  offset: number,
  pre: Preprocess,
  channelOf: (i: number) => number,
): void {
  const scale = pre.scale ?? 1
  const mean = pre.mean === undefined ? undefined : Array.isArray(pre.mean) ? pre.mean : [pre.mean]
  const std = pre.std === undefined ? undefined : Array.isArray(pre.std) ? pre.std : [pre.std]
  const simple = scale === 1 && !mean && !std
  const isBig = out instanceof BigInt64Array || out instanceof BigUint64Array
  const rounds = !(out instanceof Float32Array || out instanceof Float64Array) && !isBig && !(pre.dtype === 'float16')
  for (let i = 0; i < src.length; i++) {
    let v = Number(src[i]!)
    if (!simple) {
      v *= scale
      if (mean) v -= mean.length === 1 ? mean[0]! : mean[channelOf(i)]!
      if (std) v /= std.length === 1 ? std[0]! : std[channelOf(i)]!
    }
    if (isBig) (out as BigInt64Array)[offset + i] = BigInt(Math.round(v))
    else (out as Float32Array)[offset + i] = rounds ? Math.round(v) : v
  }
}
