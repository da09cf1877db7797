/** Two-sided 95% Student t quantiles for small samples (df 1..30); the normal value beyond. */
const T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042]

export function t95(df: number): number {
  if (df < 1) return Number.NaN
  return df <= 30 ? T95[df - 1]! : df <= 60 ? 2.0 : df <= 120 ? 1.98 : 1.96
}

export function mean(xs: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < xs.length; i++) s += xs[i]!
  return s / xs.length
}

export function stdev(xs: ArrayLike<number>, m = mean(xs)): number {
  if (xs.length < 2) return 0
  let s = 0
  for (let i = 0; i < xs.length; i++) s += (xs[i]! - m) ** 2
  return Math.sqrt(s / (xs.length - 1))
}

/** Percentile (0–100) of sorted values, linear interpolation between ranks. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const r = (p / 100) * (sorted.length - 1)
  const lo = Math.floor(r)
  const hi = Math.min(lo + 1, sorted.length - 1)
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (r - lo)
}

/** Mean with its 95% confidence interval (Student t). */
export function meanCi(xs: ArrayLike<number>): {mean: number; low: number; high: number; stdev: number} {
  const m = mean(xs)
  const s = stdev(xs, m)
  const half = xs.length > 1 ? (t95(xs.length - 1) * s) / Math.sqrt(xs.length) : Number.POSITIVE_INFINITY
  return {mean: m, low: m - half, high: m + half, stdev: s}
}

/**
 * Percentile-bootstrap 95% interval of the mean (seeded, so reports are reproducible). Latencies
 * are skewed with long tails; a t interval there can even dip below zero.
 */
export function bootstrapMeanCi(xs: ArrayLike<number>, resamples = 1000, seed = 1): {low: number; high: number} {
  const n = xs.length
  if (n < 2) return {low: Number.NaN, high: Number.NaN}
  let a = seed >>> 0
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
  const means = new Float64Array(resamples)
  for (let r = 0; r < resamples; r++) {
    let s = 0
    for (let i = 0; i < n; i++) s += xs[Math.floor(rand() * n)]!
    means[r] = s / n
  }
  means.sort()
  return {low: percentile(means, 2.5), high: percentile(means, 97.5)}
}
