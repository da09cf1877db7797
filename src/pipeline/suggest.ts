/**
 * Did-you-mean suggestions for pipeline-file errors: the closest known name by edit distance,
 * so `sparsty` suggests `sparsity` and `quantise` suggests `quantize`.
 */

/** Damerau-style edit distance (insert, delete, substitute, swap adjacent), case-insensitive. */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase()
  const t = b.toLowerCase()
  if (s === t) return 0
  if (s.length === 0) return t.length
  if (t.length === 0) return s.length
  // Three rolling rows are enough for the adjacent-swap rule.
  let prev2 = new Array<number>(t.length + 1).fill(0)
  let prev = Array.from({length: t.length + 1}, (_, j) => j)
  let cur = new Array<number>(t.length + 1).fill(0)
  for (let i = 1; i <= s.length; i++) {
    cur[0] = i
    for (let j = 1; j <= t.length; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1
      let d = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) d = Math.min(d, prev2[j - 2] + 1)
      cur[j] = d
    }
    ;[prev2, prev, cur] = [prev, cur, prev2]
  }
  return prev[t.length]
}

/**
 * The known name closest to `word`, or undefined when none is close enough to be a plausible typo
 * (a suggestion that is merely the least-bad of unrelated names only misleads).
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const c of new Set(candidates)) {
    if (c === word) continue
    const d = editDistance(word, c)
    if (d < bestDistance) {
      best = c
      bestDistance = d
    }
  }
  if (best === undefined) return undefined
  // Also accept a case-only difference or a prefix/suffix abbreviation (`calib` for `calibration`).
  const limit = Math.max(1, Math.floor(Math.max(word.length, best.length) / 3))
  // Short names: one edit can turn anything into anything (`e` → `a`), so demand a shared letter.
  if (bestDistance <= limit && bestDistance < Math.min(word.length, best.length)) return best
  const w = word.toLowerCase()
  for (const c of candidates) {
    const lc = c.toLowerCase()
    if (w.length >= 3 && (lc.startsWith(w) || w.startsWith(lc))) return c
  }
  return undefined
}

/** `did you mean \`x\`?`, or a list of the valid names when there are few and none is close. */
export function didYouMean(word: string, candidates: readonly string[], options: {listUpTo?: number} = {}): string | undefined {
  const near = closest(word, candidates)
  if (near !== undefined) return `did you mean \`${near}\`?`
  const listUpTo = options.listUpTo ?? 12
  if (candidates.length > 0 && candidates.length <= listUpTo) return `expected one of: ${candidates.map((c) => `\`${c}\``).join(', ')}`
  return undefined
}
