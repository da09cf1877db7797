import type {InspectResult, TensorSignature} from './inspect.js'

/** Human-readable size: 1 decimal, binary units. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US')
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`
}

/** A plain-text table: columns padded to their widest cell, numbers right-aligned. */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))]
  const numeric = head.map((_, c) => rows.length > 0 && rows.every((r) => /^[\d.,%\s]+(B|KiB|MiB|GiB|TiB|%)?$/.test(String(r[c]))))
  const widths = head.map((_, c) => Math.max(...cells.map((r) => r[c]!.length)))
  const line = (r: string[]) =>
    r
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd()
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n')
}

function shape(s: TensorSignature): string {
  return s.shape ? `[${s.shape.join(', ')}]` : '?'
}

/**
 * The `kiln inspect` report as plain text. No colour codes: it is read in terminals, CI logs and
 * pasted into issues alike.
 */
export function formatInspect(r: InspectResult): string {
  const out: string[] = []
  const opsets = r.opsets.map((o) => `${o.domain || 'ai.onnx'} ${o.version}`).join(', ')
  const compressed = r.compressedBytes === null ? 'not measured' : `${formatBytes(r.compressedBytes)} (${(r.fileBytes / Math.max(1, r.compressedBytes)).toFixed(2)}× smaller)`
  out.push(
    table(
      ['model', r.file],
      [
        ['IR version', r.irVersion],
        ['opsets', opsets],
        ['producer', r.producer || '-'],
        ['file size', `${formatBytes(r.fileBytes)}${r.externalDataFiles.length ? ` (with ${r.externalDataFiles.length} external data file(s))` : ''}`],
        ['zstd size', compressed],
        ['nodes', `${formatCount(r.nodes)} in ${r.subgraphs + 1} graph(s) (${r.subgraphs} subgraph(s))`],
        ['parameters', `${formatCount(r.parameters.count)} in ${r.parameters.tensors} tensors, ${formatBytes(r.parameters.bytes)}`],
        ['  in Constant nodes', `${formatCount(r.parameters.inConstantNodes.count)} in ${r.parameters.inConstantNodes.tensors} tensors`],
        ['sparsity', `${pct(r.sparsity.overall)} exact zeros over ${formatCount(r.sparsity.floatParams)} float weights`],
      ],
    ),
  )
  const io = [...r.inputs.map((s) => ['input', s.name, s.dtype, shape(s)]), ...r.outputs.map((s) => ['output', s.name, s.dtype, shape(s)])]
  out.push('', table(['', 'name', 'dtype', 'shape'], io))
  out.push('', table(['dtype', 'tensors', 'params', 'bytes'], r.parameters.byDtype.map((d) => [d.dtype, d.tensors, formatCount(d.params), formatBytes(d.bytes)])))
  out.push('', table(['op', 'domain', 'count'], r.ops.map((o) => [o.op, o.domain || 'ai.onnx', o.count])))
  if (r.sparsity.largest.length) {
    out.push(
      '',
      table(
        ['largest weights', 'where', 'dtype', 'shape', 'params', 'zeros'],
        r.sparsity.largest.map((l) => [l.name, `${l.kind} in ${l.graph}`, l.dtype, `[${l.shape.join(', ')}]`, formatCount(l.params), l.sparsity === null ? '-' : pct(l.sparsity)]),
      ),
    )
  }
  return out.join('\n')
}
