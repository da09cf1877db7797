import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../errors.js'
import type {RunReport, StageReport} from '../pipeline/report-types.js'

export interface MetricDiff {
  name: string
  a?: number
  b?: number
  /** b − a. */
  delta?: number
  /** (b − a) / |a|. */
  relative?: number
}

export interface StageDiff {
  id: string
  uses: string
  statusA?: StageReport['status']
  statusB?: StageReport['status']
  bytesA?: number
  bytesB?: number
  metrics: MetricDiff[]
}

export interface RunDiff {
  a: {runId: string; runDir: string; status: RunReport['status']; pipeline: string}
  b: {runId: string; runDir: string; status: RunReport['status']; pipeline: string}
  stages: StageDiff[]
  gates: {stage?: string; name: string; a?: {value: number; passed: boolean}; b?: {value: number; passed: boolean}}[]
}

/** Read a run's `report.json`, given the run directory or the file itself. */
export async function readRunReport(p: string): Promise<RunReport> {
  const file = p.endsWith('.json') ? p : path.join(p, 'report.json')
  let text: string
  try {
    text = await fsp.readFile(file, 'utf8')
  } catch (error) {
    throw new KilnError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code}`, {code: 'E_DIFF_RUN', exitCode: 2, tryMessage: 'Pass a run directory (e.g. .kiln/runs/<run>) or its report.json.'})
  }
  try {
    const r = JSON.parse(text) as RunReport
    if (!Array.isArray(r.stages)) throw new Error('no stages')
    return r
  } catch (error) {
    throw new KilnError(`${file} is not a kiln run report: ${(error as Error).message}`, {code: 'E_DIFF_RUN', exitCode: 2})
  }
}

/** Numeric metrics, nested objects flattened with dots. */
function flatNumbers(o: Record<string, unknown>, prefix = '', out: Record<string, number> = {}): Record<string, number> {
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'number' && Number.isFinite(v)) out[prefix + k] = v
    else if (v && typeof v === 'object' && !Array.isArray(v)) flatNumbers(v as Record<string, unknown>, `${prefix}${k}.`, out)
  }
  return out
}

/** Compare two runs stage by stage (matched by stage id): status, artifact size and every numeric metric. */
export function diffRuns(a: RunReport, b: RunReport): RunDiff {
  const ids = [...new Set([...a.stages.map((s) => s.id), ...b.stages.map((s) => s.id)])]
  const stages = ids.map((id): StageDiff => {
    const sa = a.stages.find((s) => s.id === id)
    const sb = b.stages.find((s) => s.id === id)
    const ma = flatNumbers(sa?.metrics ?? {})
    const mb = flatNumbers(sb?.metrics ?? {})
    const names = [...new Set([...Object.keys(ma), ...Object.keys(mb)])]
    return {
      id,
      uses: (sb ?? sa)!.uses,
      statusA: sa?.status,
      statusB: sb?.status,
      bytesA: sa?.artifact?.bytes,
      bytesB: sb?.artifact?.bytes,
      metrics: names.map((name) => {
        const x = ma[name]
        const y = mb[name]
        const d: MetricDiff = {name, a: x, b: y}
        if (x !== undefined && y !== undefined) {
          d.delta = y - x
          if (x !== 0) d.relative = (y - x) / Math.abs(x)
        }
        return d
      }),
    }
  })
  const key = (g: {stage?: string; name: string}) => `${g.stage ?? ''}\u0000${g.name}`
  const gateKeys = [...new Set([...a.gates.map(key), ...b.gates.map(key)])]
  const gates = gateKeys.map((k) => {
    const ga = a.gates.find((g) => key(g) === k)
    const gb = b.gates.find((g) => key(g) === k)
    const g = (ga ?? gb)!
    return {stage: g.stage, name: g.name, a: ga && {value: ga.value, passed: ga.passed}, b: gb && {value: gb.value, passed: gb.passed}}
  })
  const head = (r: RunReport) => ({runId: r.runId, runDir: r.runDir, status: r.status, pipeline: r.pipeline})
  return {a: head(a), b: head(b), stages, gates}
}

const num = (x?: number): string => (x === undefined ? '—' : Number.isInteger(x) ? String(x) : Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(3) : x.toPrecision(3))
const pct = (x?: number): string => (x === undefined ? '' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`)
const bytes = (x?: number): string => (x === undefined ? '—' : x >= 2 ** 20 ? `${(x / 2 ** 20).toFixed(2)} MiB` : x >= 1024 ? `${(x / 1024).toFixed(1)} KiB` : `${x} B`)

/** The diff as Markdown, sized for a pull-request comment: only metrics that changed are listed. */
export function renderDiffMarkdown(d: RunDiff): string {
  const out: string[] = [`## kiln diff: \`${d.a.runId}\` → \`${d.b.runId}\``, '', `Status: ${d.a.status} → ${d.b.status}`, '']
  out.push('| stage | status | size | Δ size |', '| --- | --- | --- | --- |')
  for (const s of d.stages) {
    const rel = s.bytesA !== undefined && s.bytesB !== undefined && s.bytesA > 0 ? (s.bytesB - s.bytesA) / s.bytesA : undefined
    out.push(`| ${s.id} (${s.uses}) | ${s.statusA ?? '—'} → ${s.statusB ?? '—'} | ${bytes(s.bytesA)} → ${bytes(s.bytesB)} | ${pct(rel)} |`)
  }
  for (const s of d.stages) {
    const changed = s.metrics.filter((m) => m.a !== m.b)
    if (!changed.length) continue
    out.push('', `### ${s.id}`, '', '| metric | A | B | Δ | Δ% |', '| --- | --- | --- | --- | --- |')
    for (const m of changed) out.push(`| ${m.name} | ${num(m.a)} | ${num(m.b)} | ${m.delta === undefined ? '' : `${m.delta >= 0 ? '+' : ''}${num(m.delta)}`} | ${pct(m.relative)} |`)
  }
  if (d.gates.length) {
    out.push('', '### Gates', '', '| gate | A | B |', '| --- | --- | --- |')
    const cell = (g?: {value: number; passed: boolean}) => (g ? `${num(g.value)} ${g.passed ? '✅' : '❌'}` : '—')
    for (const g of d.gates) out.push(`| ${g.stage ? `${g.stage}.` : ''}${g.name} | ${cell(g.a)} | ${cell(g.b)} |`)
  }
  return `${out.join('\n')}\n`
}
