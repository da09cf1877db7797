import * as fsp from 'node:fs/promises'
import path from 'node:path'
import type {GateResult} from '../stages/types.js'
import {atomicWriteFile} from '../util/fs.js'
import {redact, redactDeep} from '../util/redact.js'
import type {RunReport, StageReport} from './report-types.js'

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`
}

function formatValue(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(1) : String(Number(v.toPrecision(4)))
  if (typeof v === 'boolean') return v ? 'yes' : 'no'
  return String(v)
}

/** The scalar metrics of a stage, flattened one level (`latency.p95Ms`), for tables. */
export function scalarMetrics(metrics: Record<string, unknown>, limit = 8): [string, string][] {
  const out: [string, string][] = []
  const visit = (prefix: string, value: unknown, depth: number): void => {
    if (out.length >= limit) return
    if (typeof value === 'number' || typeof value === 'boolean' || (typeof value === 'string' && value.length <= 40)) {
      out.push([prefix, formatValue(value)])
    } else if (value && typeof value === 'object' && !Array.isArray(value) && depth < 1) {
      for (const [k, v] of Object.entries(value)) visit(`${prefix}.${k}`, v, depth + 1)
    }
  }
  for (const [k, v] of Object.entries(metrics)) visit(k, v, 0)
  return out
}

const STATUS_ICON: Record<StageReport['status'], string> = {ran: '✅ ran', cached: '♻️ cached', failed: '❌ failed', skipped: '⏭️ skipped'}

function gateLine(g: GateResult): string {
  return `| ${g.passed ? '✅' : '❌'} | \`${g.stage ?? ''}\` | ${g.name} | ${formatValue(g.value)} | ${formatValue(g.limit)} | ${g.message ?? ''} |`
}

/** `report.md`: short enough for a pull-request comment or a GitHub job summary. */
export function renderMarkdown(report: RunReport): string {
  const head = report.status === 'passed' ? '✅ passed' : report.status === 'gate-failed' ? '❌ quality gate failed' : '❌ failed'
  const lines = [
    `## kiln · ${report.pipeline} · ${head}`,
    '',
    `Run \`${report.runId}\` in ${report.seconds.toFixed(1)} s · input \`${path.basename(report.input.path)}\` ${formatBytes(report.input.bytes)} (sha256 \`${report.input.sha256.slice(0, 12)}\`)`,
    '',
    '| stage | kind | status | time | output | metrics |',
    '|---|---|---|---|---|---|',
  ]
  for (const s of report.stages) {
    const output = s.artifact ? `${formatBytes(s.artifact.bytes)} (${s.artifact.format})` : ''
    const metrics = s.error ? `**${redact(s.error.message).split('\n')[0]}**` : scalarMetrics(s.metrics, 6).map(([k, v]) => `${k}=${v}`).join(', ')
    lines.push(`| \`${s.id}\` | ${s.uses} | ${STATUS_ICON[s.status]} | ${s.seconds.toFixed(1)} s | ${output} | ${metrics.replaceAll('|', '\\|')} |`)
  }
  if (report.gates.length > 0) {
    lines.push('', '| | stage | gate | value | limit | |', '|---|---|---|---|---|---|', ...report.gates.map(gateLine))
  }
  const runtime = Object.entries(report.runtime).filter(([k]) => k !== 'kiln')
  lines.push('', `<sub>kiln ${report.kiln} · ${runtime.map(([k, v]) => `${k} ${v}`).join(' · ')}</sub>`, '')
  return lines.join('\n')
}

function xml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({'<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;'})[c]!)
}

/** `junit.xml`: one test case per stage and one per quality gate, for CI test-result views. */
export function renderJunit(report: RunReport): string {
  const cases: string[] = []
  let failures = 0
  let skipped = 0
  for (const s of report.stages) {
    let body = ''
    if (s.status === 'failed') {
      failures++
      body = `<failure message="${xml(redact(s.error?.message ?? 'failed'))}" type="${xml(s.error?.code ?? 'StageFailed')}">${xml(redact(s.error?.try ?? ''))}</failure>`
    } else if (s.status === 'skipped') {
      skipped++
      body = '<skipped/>'
    }
    cases.push(`    <testcase classname="${xml(report.pipeline)}.stages" name="${xml(`${s.id} (${s.uses})`)}" time="${s.seconds.toFixed(3)}">${body}</testcase>`)
  }
  for (const g of report.gates) {
    let body = ''
    if (!g.passed) {
      failures++
      const msg = `${g.name}: value ${formatValue(g.value)}, limit ${formatValue(g.limit)}${g.message ? ` — ${g.message}` : ''}`
      body = `<failure message="${xml(msg)}" type="QualityGate">${xml(msg)}</failure>`
    }
    cases.push(`    <testcase classname="${xml(report.pipeline)}.gates.${xml(g.stage ?? '')}" name="${xml(g.name)}" time="0">${body}</testcase>`)
  }
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="kiln" tests="${cases.length}" failures="${failures}" time="${report.seconds.toFixed(3)}">`,
    `  <testsuite name="${xml(report.pipeline)}" tests="${cases.length}" failures="${failures}" skipped="${skipped}" time="${report.seconds.toFixed(3)}" timestamp="${report.startedAt}">`,
    ...cases,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n')
}

/**
 * Write report.json, report.md, junit.xml and report.html into the run directory (atomically), and
 * append the Markdown to `GITHUB_STEP_SUMMARY` when set.
 */
export async function writeReports(report: RunReport, runDir: string): Promise<void> {
  const safe = redactDeep(report)
  const md = renderMarkdown(safe)
  await atomicWriteFile(path.join(runDir, 'report.json'), `${JSON.stringify(safe, null, 2)}\n`)
  await atomicWriteFile(path.join(runDir, 'report.md'), md)
  await atomicWriteFile(path.join(runDir, 'junit.xml'), renderJunit(safe))
  const {renderHtmlReport} = await import('./report-html.js')
  await atomicWriteFile(path.join(runDir, 'report.html'), renderHtmlReport(safe))
  const summary = process.env.GITHUB_STEP_SUMMARY
  if (summary) await fsp.appendFile(summary, `${md}\n`)
}
