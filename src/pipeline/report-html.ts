import type {RunReport, StageReport} from './report-types.js'

/**
 * The run report as one self-contained HTML page: inline CSS and SVG charts, no scripts, no
 * external assets, so it opens from a CI artifact store or an e-mail attachment as it is.
 */
export function renderHtmlReport(report: RunReport): string {
  const sections = [summary(report), gatesTable(report), stagesTable(report), perStageCharts(report), latencyDistributions(report), pareto(report)].filter(Boolean)
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kiln · ${esc(report.pipeline)} · ${esc(report.runId)}</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>${esc(report.pipeline)}</h1><p class="status ${esc(report.status)}">${esc(STATUS[report.status] ?? report.status)}</p></header>
${sections.join('\n')}
<footer>kiln ${esc(report.kiln)} · run ${esc(report.runId)} · ${esc(Object.entries(report.runtime ?? {}).map(([k, v]) => `${k} ${v}`).join(' · '))}</footer>
</body>
</html>
`
}

const STATUS: Record<string, string> = {passed: 'passed', failed: 'a stage failed', 'gate-failed': 'a quality gate failed'}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1080px;padding:16px 24px;color:#1f2328;background:#fff}
header{display:flex;align-items:baseline;gap:16px;border-bottom:1px solid #d0d7de;margin-bottom:12px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:24px 0 8px}
.status{padding:2px 10px;border-radius:12px;font-weight:600}.status.passed{background:#dafbe1;color:#116329}
.status.failed,.status.gate-failed{background:#ffebe9;color:#a40e26}
table{border-collapse:collapse;width:100%;margin:4px 0 12px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#116329}.fail{color:#a40e26;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #d0d7de;border-radius:6px;padding:8px}
.chart h3{font-size:13px;margin:0 0 4px;color:#57606a}svg text{font:11px system-ui,sans-serif;fill:#1f2328}
.muted{color:#57606a}footer{margin-top:32px;color:#57606a;font-size:12px;border-top:1px solid #d0d7de;padding-top:8px}
`

const PALETTE = ['#0969da', '#bf3989', '#1a7f37', '#bc4c00', '#8250df', '#0a3069', '#9a6700']

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]!)
}

function fmt(x: number | undefined, digits = 3): string {
  if (x === undefined || Number.isNaN(x)) return '—'
  if (Number.isInteger(x)) return x.toLocaleString('en-US')
  return Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(digits) : x.toPrecision(digits)
}

function bytes(x?: number): string {
  if (x === undefined) return '—'
  return x >= 2 ** 20 ? `${(x / 2 ** 20).toFixed(2)} MiB` : x >= 1024 ? `${(x / 1024).toFixed(1)} KiB` : `${x} B`
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)

function summary(r: RunReport): string {
  const last = [...r.stages].reverse().find((s) => s.artifact)
  return `<section><table>
<tr><th>input model</th><td>${esc(r.input.path)} <span class="muted">(${bytes(r.input.bytes)})</span></td></tr>
${last?.artifact ? `<tr><th>output</th><td>${esc(last.artifact.path)} <span class="muted">(${bytes(last.artifact.bytes)}, ${esc(last.artifact.format)})</span></td></tr>` : ''}
<tr><th>pipeline file</th><td>${esc(r.file)}</td></tr>
<tr><th>started</th><td>${esc(r.startedAt)} · ${fmt(r.seconds)} s</td></tr>
</table></section>`
}

function gatesTable(r: RunReport): string {
  if (!r.gates.length) return ''
  const rows = r.gates
    .map((g) => `<tr><td>${esc(g.stage ?? '')}</td><td>${esc(g.name)}</td><td class="num">${fmt(g.value)}</td><td class="num">${fmt(g.limit)}</td><td class="${g.passed ? 'pass' : 'fail'}">${g.passed ? 'passed' : 'failed'}</td><td>${esc(g.message ?? '')}</td></tr>`)
    .join('\n')
  return `<section><h2>Quality gates</h2><table><tr><th>stage</th><th>gate</th><th>value</th><th>limit</th><th></th><th>detail</th></tr>\n${rows}</table></section>`
}

const KEY_METRICS = ['accuracy', 'accuracyDrop', 'agreement', 'latencyP50Ms', 'latencyP95Ms', 'speedup', 'sizeRatio', 'sparsity']

function stagesTable(r: RunReport): string {
  const rows = r.stages
    .map((s) => {
      const m = KEY_METRICS.filter((k) => num(s.metrics[k]) !== undefined).map((k) => `${k} ${fmt(num(s.metrics[k]))}`)
      return `<tr><td>${esc(s.id)}</td><td>${esc(s.uses)}</td><td class="${s.status === 'failed' ? 'fail' : ''}">${esc(s.status)}</td><td class="num">${fmt(s.seconds)}</td><td class="num">${bytes(s.artifact?.bytes)}</td><td>${esc(m.join(' · '))}${s.error ? `<span class="fail">${esc(s.error.message)}</span>` : ''}</td></tr>`
    })
    .join('\n')
  return `<section><h2>Stages</h2><table><tr><th>stage</th><th>uses</th><th>status</th><th>seconds</th><th>size</th><th>metrics</th></tr>\n${rows}</table></section>`
}

/** A horizontal bar chart: one bar per label. */
function barChart(title: string, items: {label: string; value: number; note?: string}[], unit: string): string {
  const W = 480
  const left = 130
  const barH = 20
  const H = items.length * (barH + 8) + 28
  const max = Math.max(...items.map((i) => i.value), Number.MIN_VALUE)
  const bars = items
    .map((it, i) => {
      const y = 8 + i * (barH + 8)
      const w = Math.max(1, ((W - left - 90) * it.value) / max)
      return `<text x="${left - 6}" y="${y + 14}" text-anchor="end">${esc(it.label)}</text><rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${PALETTE[i % PALETTE.length]}" rx="2"><title>${esc(`${it.label}: ${fmt(it.value)} ${unit}`)}</title></rect><text x="${left + w + 4}" y="${y + 14}">${esc(it.note ?? `${fmt(it.value)} ${unit}`)}</text>`
    })
    .join('')
  return `<div class="chart"><h3>${esc(title)}</h3><svg role="img" aria-label="${esc(title)}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${bars}</svg></div>`
}

function perStageCharts(r: RunReport): string {
  const charts: string[] = []
  const sizes = [{label: 'input', value: r.input.bytes}, ...r.stages.filter((s) => s.artifact).map((s) => ({label: s.id, value: s.artifact!.bytes}))]
  if (sizes.length > 1) charts.push(barChart('Model size per stage', sizes.map((s) => ({...s, note: bytes(s.value)})), 'bytes'))
  const metric = (k: string) => r.stages.filter((s) => num(s.metrics[k]) !== undefined).map((s) => ({label: s.id, value: num(s.metrics[k])!}))
  const acc = metric('accuracy')
  for (const s of r.stages) {
    const b = num(s.metrics['baseline.accuracy'])
    if (b !== undefined && !acc.some((a) => a.label === 'baseline')) acc.unshift({label: 'baseline', value: b})
  }
  if (acc.length) charts.push(barChart('Accuracy per stage', acc, ''))
  const lat = metric('latencyP95Ms')
  if (lat.length) charts.push(barChart('p95 latency per stage', lat, 'ms'))
  if (!charts.length) return ''
  return `<section><h2>Size, latency and accuracy per stage</h2><div class="charts">${charts.join('')}</div></section>`
}

interface BenchRun {
  batch: number
  samplesMs: number[]
  latencyMs: {p50: number; p95: number; p99: number; mean: number}
}
interface BenchModel {
  model: string
  runs: BenchRun[]
}

/** Benchmark series from evaluate stages' report data: one per model and batch size. */
function benchSeries(r: RunReport): {label: string; run: BenchRun}[] {
  const out: {label: string; run: BenchRun}[] = []
  const seen = new Set<string>()
  for (const s of r.stages) {
    const bench = (s.report?.evaluate as {bench?: {candidate?: BenchModel; baseline?: BenchModel}} | undefined)?.bench
    if (!bench) continue
    for (const [who, m] of [['baseline', bench.baseline], [s.id, bench.candidate]] as const) {
      if (!m) continue
      for (const run of m.runs ?? []) {
        const label = `${who} · batch ${run.batch}`
        const key = `${m.model}\u0000${run.batch}`
        if (seen.has(key) || !run.samplesMs?.length) continue
        seen.add(key)
        out.push({label, run})
      }
    }
  }
  return out
}

function histogram(label: string, run: BenchRun, lo: number, hi: number, color: string): string {
  const W = 320
  const H = 150
  const pad = {l: 36, r: 8, t: 8, b: 28}
  const bins = 24
  const counts = new Array<number>(bins).fill(0)
  let over = 0
  for (const v of run.samplesMs) {
    if (v > hi) over++
    const b = Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo || 1)) * bins)))
    counts[b]!++
  }
  const maxC = Math.max(...counts, 1)
  const bw = (W - pad.l - pad.r) / bins
  const x = (v: number) => pad.l + ((v - lo) / (hi - lo || 1)) * (W - pad.l - pad.r)
  const rects = counts
    .map((c, i) => {
      const h = ((H - pad.t - pad.b) * c) / maxC
      return `<rect x="${(pad.l + i * bw + 0.5).toFixed(1)}" y="${(H - pad.b - h).toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${Math.max(h, c ? 1 : 0).toFixed(1)}" fill="${color}"/>`
    })
    .join('')
  const mark = (v: number, name: string, dy: number) => (v >= lo && v <= hi ? `<line x1="${x(v).toFixed(1)}" x2="${x(v).toFixed(1)}" y1="${pad.t}" y2="${H - pad.b}" stroke="#1f2328" stroke-dasharray="3 2"/><text x="${(x(v) + 3).toFixed(1)}" y="${pad.t + 10 + dy}">${name}</text>` : '')
  const axis = `<line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}" stroke="#57606a"/><text x="${pad.l}" y="${H - 10}">${fmt(lo)} ms</text><text x="${W - pad.r}" y="${H - 10}" text-anchor="end">${fmt(hi)} ms</text>`
  const title = `${label}: p50 ${fmt(run.latencyMs.p50)} · p95 ${fmt(run.latencyMs.p95)} · p99 ${fmt(run.latencyMs.p99)} ms${over ? ` · ${over} above the axis` : ''}`
  return `<div class="chart"><h3>${esc(title)}</h3><svg role="img" aria-label="${esc(`latency distribution ${label}`)}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${rects}${mark(run.latencyMs.p50, 'p50', 0)}${mark(run.latencyMs.p95, 'p95', 14)}${axis}</svg></div>`
}

function latencyDistributions(r: RunReport): string {
  const series = benchSeries(r)
  if (!series.length) return ''
  // One axis for all models of a batch size, cut a little past the largest p95: a few slow outliers
  // (a busy CI machine) would otherwise squash every distribution into one bar. The title counts them.
  const charts = series.map((s, i) => {
    const same = series.filter((o) => o.run.batch === s.run.batch)
    const lo = Math.min(...same.map((o) => Math.min(...o.run.samplesMs)))
    const hi = Math.max(...same.map((o) => o.run.latencyMs.p95)) * 1.25
    return histogram(s.label, s.run, lo, Math.max(hi, lo * 1.01 + 1e-6), PALETTE[i % PALETTE.length]!)
  })
  return `<section><h2>Latency distributions</h2><div class="charts">${charts.join('')}</div></section>`
}

interface Point {
  label: string
  x: number
  y: number
}

/** Points not dominated by another (lower x and higher y are better). */
export function paretoFront(points: Point[]): Point[] {
  return points.filter((p) => !points.some((q) => q !== p && q.x <= p.x && q.y >= p.y && (q.x < p.x || q.y > p.y))).sort((a, b) => a.x - b.x)
}

function scatter(title: string, xLabel: string, points: Point[]): string {
  const W = 480
  const H = 300
  const pad = {l: 56, r: 72, t: 12, b: 40}
  const xs = points.map((p) => p.x)
  const ys = points.map((p) => p.y)
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)]
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)]
  const spanX = x1 - x0 || Math.abs(x1) * 0.1 || 1
  const spanY = y1 - y0 || Math.abs(y1) * 0.01 || 0.01
  const sx = (v: number) => pad.l + ((v - x0 + spanX * 0.05) / (spanX * 1.1)) * (W - pad.l - pad.r)
  const sy = (v: number) => H - pad.b - ((v - y0 + spanY * 0.05) / (spanY * 1.1)) * (H - pad.t - pad.b)
  const front = paretoFront(points)
  const line = front.length > 1 ? `<polyline fill="none" stroke="#1a7f37" stroke-width="2" points="${front.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ')}"/>` : ''
  const dots = points
    .map((p, i) => {
      const onFront = front.includes(p)
      // Labels of points on the right half go to their left, so they stay inside the chart.
      const right = sx(p.x) > W / 2
      return `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="${onFront ? 6 : 4}" fill="${onFront ? '#1a7f37' : '#8c959f'}"><title>${esc(`${p.label}: ${fmt(p.x)} ${xLabel}, accuracy ${fmt(p.y, 4)}`)}</title></circle><text x="${(sx(p.x) + (right ? -8 : 8)).toFixed(1)}" y="${(sy(p.y) + (sy(p.y) < pad.t + 20 ? 16 : -6) - (i % 2) * 10).toFixed(1)}"${right ? ' text-anchor="end"' : ''}>${esc(p.label)}</text>`
    })
    .join('')
  const axes = `<line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}" stroke="#57606a"/><line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${H - pad.b}" stroke="#57606a"/>
<text x="${(W + pad.l) / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)} (lower is better)</text><text x="14" y="${(H - pad.b) / 2}" transform="rotate(-90 14 ${(H - pad.b) / 2})" text-anchor="middle">accuracy</text>
<text x="${pad.l}" y="${H - pad.b + 14}">${fmt(x0)}</text><text x="${W - pad.r}" y="${H - pad.b + 14}" text-anchor="end">${fmt(x1)}</text><text x="${pad.l - 4}" y="${sy(y0).toFixed(1)}" text-anchor="end">${fmt(y0, 4)}</text><text x="${pad.l - 4}" y="${sy(y1).toFixed(1)}" text-anchor="end">${fmt(y1, 4)}</text>`
  return `<div class="chart"><h3>${esc(title)}</h3><svg role="img" aria-label="${esc(title)}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${axes}${line}${dots}</svg></div>`
}

/** Size and latency against accuracy across evaluated candidates, with the Pareto front drawn. */
function pareto(r: RunReport): string {
  const evals = r.stages.filter((s: StageReport) => num(s.metrics.accuracy) !== undefined)
  const bySize: Point[] = []
  const byLatency: Point[] = []
  for (const s of evals) {
    const acc = num(s.metrics.accuracy)!
    const size = num(s.metrics.sizeBytes)
    const lat = num(s.metrics.latencyP95Ms)
    if (size !== undefined) bySize.push({label: s.id, x: size / 1024, y: acc})
    if (lat !== undefined) byLatency.push({label: s.id, x: lat, y: acc})
  }
  // The baseline is a candidate too: its accuracy and size come with the first evaluate that has one.
  const withBase = evals.find((s) => num(s.metrics['baseline.accuracy']) !== undefined)
  const baseReport = withBase?.report?.evaluate as {baseline?: {bytes: number}} | undefined
  if (withBase && baseReport?.baseline) bySize.push({label: 'baseline', x: baseReport.baseline.bytes / 1024, y: num(withBase.metrics['baseline.accuracy'])!})
  const charts: string[] = []
  // Candidates that are the same model (a baseline also evaluated as a stage) share one point.
  const merge = (pts: Point[]) =>
    pts.reduce<Point[]>((acc, p) => {
      const same = acc.find((q) => q.x === p.x && q.y === p.y)
      if (same) same.label += ` = ${p.label}`
      else acc.push({...p})
      return acc
    }, [])
  bySize.splice(0, bySize.length, ...merge(bySize))
  if (bySize.length >= 2) charts.push(scatter('Accuracy vs size (Pareto front in green)', 'size, KiB', bySize))
  if (byLatency.length >= 2) charts.push(scatter('Accuracy vs p95 latency (Pareto front in green)', 'p95 latency, ms', byLatency))
  if (!charts.length) return ''
  return `<section><h2>Candidates</h2><div class="charts">${charts.join('')}</div></section>`
}
