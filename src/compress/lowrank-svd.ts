/**
 * Truncated SVD through the eigen-decomposition of the smaller Gram matrix (cyclic Jacobi, in
 * float64). Weight matrices of inference models have a small side of at most a few thousand, where
 * this is exact enough and takes well under a second per layer.
 */

/** Eigenvalues (descending) and eigenvectors (columns of `vectors`, n×n row-major) of a symmetric matrix. */
export function symmetricEigen(a: Float64Array, n: number, signal?: AbortSignal): {values: Float64Array; vectors: Float64Array} {
  const m = a.slice()
  const v = new Float64Array(n * n)
  for (let i = 0; i < n; i++) v[i * n + i] = 1
  for (let sweep = 0; sweep < 60; sweep++) {
    if (signal?.aborted) break
    let off = 0
    let diag = 0
    for (let i = 0; i < n; i++) {
      diag += m[i * n + i]! ** 2
      for (let j = i + 1; j < n; j++) off += m[i * n + j]! ** 2
    }
    if (off <= 1e-22 * diag || off === 0) break
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q]!
        const app = m[p * n + p]!
        const aqq = m[q * n + q]!
        // Rotating an entry already negligible beside its diagonal changes nothing measurable.
        if (Math.abs(apq) <= 1e-18 * Math.sqrt(Math.abs(app * aqq)) || apq === 0) continue
        const theta = (aqq - app) / (2 * apq)
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1))
        const c = 1 / Math.sqrt(t * t + 1)
        const s = t * c
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p]!
          const mkq = m[k * n + q]!
          m[k * n + p] = c * mkp - s * mkq
          m[k * n + q] = s * mkp + c * mkq
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k]!
          const mqk = m[q * n + k]!
          m[p * n + k] = c * mpk - s * mqk
          m[q * n + k] = s * mpk + c * mqk
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!
          const vkq = v[k * n + q]!
          v[k * n + p] = c * vkp - s * vkq
          v[k * n + q] = s * vkp + c * vkq
        }
      }
    }
  }
  const order = Array.from({length: n}, (_, i) => i).sort((x, y) => m[y * n + y]! - m[x * n + x]!)
  const values = Float64Array.from(order, (i) => Math.max(0, m[i * n + i]!))
  const vectors = new Float64Array(n * n)
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) vectors[r * n + c] = v[r * n + order[c]!]!
  return {values, vectors}
}

/** Squared singular values (descending) of W [k×n] and a factoriser for any rank. */
export interface Decomposition {
  /** σ², descending. */
  energy: Float64Array
  /** W ≈ A·B with A [k×r], B [r×n]. */
  factor(rank: number): {a: Float32Array; b: Float32Array}
}

export function decompose(w: Float32Array, k: number, n: number, signal?: AbortSignal): Decomposition {
  const small = Math.min(k, n)
  const gram = new Float64Array(small * small)
  if (n <= k) {
    // WᵀW (n×n)
    for (let r = 0; r < k; r++) {
      const row = r * n
      for (let i = 0; i < n; i++) {
        const wi = w[row + i]!
        if (wi === 0) continue
        for (let j = i; j < n; j++) gram[i * n + j]! += wi * w[row + j]!
      }
    }
  } else {
    // WWᵀ (k×k)
    for (let i = 0; i < k; i++) {
      for (let j = i; j < k; j++) {
        let s = 0
        for (let c = 0; c < n; c++) s += w[i * n + c]! * w[j * n + c]!
        gram[i * k + j] = s
      }
    }
  }
  for (let i = 0; i < small; i++) for (let j = 0; j < i; j++) gram[i * small + j] = gram[j * small + i]!
  const {values, vectors} = symmetricEigen(gram, small, signal)
  return {
    energy: values,
    factor(rank) {
      const a = new Float32Array(k * rank)
      const b = new Float32Array(rank * n)
      if (n <= k) {
        // W ≈ (W·V_r)·V_rᵀ; loops ordered so the innermost one walks memory contiguously.
        const row = new Float64Array(rank)
        for (let r = 0; r < k; r++) {
          row.fill(0)
          for (let i = 0; i < n; i++) {
            const wi = w[r * n + i]!
            if (wi === 0) continue
            for (let c = 0; c < rank; c++) row[c]! += wi * vectors[i * n + c]!
          }
          for (let c = 0; c < rank; c++) a[r * rank + c] = row[c]!
        }
        for (let c = 0; c < rank; c++) for (let i = 0; i < n; i++) b[c * n + i] = vectors[i * n + c]!
      } else {
        // W ≈ U_r·(U_rᵀ·W)
        for (let r = 0; r < k; r++) for (let c = 0; c < rank; c++) a[r * rank + c] = vectors[r * k + c]!
        const acc = new Float64Array(n)
        for (let c = 0; c < rank; c++) {
          acc.fill(0)
          for (let r = 0; r < k; r++) {
            const u = vectors[r * k + c]!
            for (let j = 0; j < n; j++) acc[j]! += u * w[r * n + j]!
          }
          for (let j = 0; j < n; j++) b[c * n + j] = acc[j]!
        }
      }
      return {a, b}
    },
  }
}

/** ‖W − A·B‖ / ‖W‖ (Frobenius), measured on the factors as stored. */
export function relativeError(w: Float32Array, a: Float32Array, b: Float32Array, k: number, n: number, rank: number): number {
  let err = 0
  let norm = 0
  const row = new Float64Array(n)
  for (let r = 0; r < k; r++) {
    row.fill(0)
    for (let c = 0; c < rank; c++) {
      const ac = a[r * rank + c]!
      for (let j = 0; j < n; j++) row[j]! += ac * b[c * n + j]!
    }
    for (let j = 0; j < n; j++) {
      const x = w[r * n + j]!
      err += (x - row[j]!) ** 2
      norm += x * x
    }
  }
  return norm === 0 ? 0 : Math.sqrt(err / norm)
}
