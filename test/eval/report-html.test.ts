import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {diffRuns, renderDiffMarkdown} from '../../src/eval/diff.js'
import {paretoFront, renderHtmlReport} from '../../src/pipeline/report-html.js'
import type {RunReport, StageReport} from '../../src/pipeline/report-types.js'
import stage from '../../src/stages/evaluate.js'
import {ensureTrainedModels} from '../helpers/fixtures.js'
import {makeStageContext} from '../helpers/stage.js'

const CHROMIUM = '/usr/bin/chromium'
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-report-'))

/** A run report built from real evaluate stage results: the CNN and the MLP, each against the other. */
async function realReport(): Promise<RunReport> {
  const t = ensureTrainedModels()
  const stages: StageReport[] = []
  for (const [id, model, base] of [['eval-cnn', t.cnn, t.mlp], ['eval-mlp', t.mlp, t.cnn]] as const) {
    const {ctx, input} = await makeStageContext({id, input: model, datasets: {test: {path: t.test, limit: 1000}}})
    const b = await makeStageContext({input: base})
    const params = stage.schema.parse({dataset: 'test', baseline: 'input', metrics: ['accuracy', 'agreement'], benchmark: {batch: [1], iterations: 60, warmup: 5}, gates: {accuracyDrop: 0.01}})
    const r = await stage.run({...ctx, inputArtifact: b.input}, input, params)
    stages.push({id, uses: 'evaluate', status: 'ran', seconds: 1, artifact: {path: input.path, sha256: input.sha256, bytes: input.bytes, format: 'onnx'}, metrics: r.metrics, report: r.report})
  }
  const d = await makeStageContext({input: t.mlp})
  return {
    kiln: '0.1.0',
    pipeline: 'fashion <demo>',
    file: '/tmp/kiln.yaml',
    runId: 'run-1',
    runDir: out,
    status: 'gate-failed',
    startedAt: new Date(0).toISOString(),
    seconds: 3,
    input: d.input,
    stages,
    gates: stages.flatMap((s) => [{stage: s.id, name: 'accuracyDrop', value: Number(s.metrics.accuracyDrop), limit: 0.01, passed: Number(s.metrics.accuracyDrop) <= 0.01, message: 'x'}]),
    runtime: {node: process.version},
  }
}

describe('HTML report', () => {
  let report: RunReport
  beforeAll(async () => {
    report = await realReport()
  }, 300_000)

  it('is self-contained and escapes what it shows', () => {
    const html = renderHtmlReport(report)
    expect(html).not.toMatch(/<script|<link|src="http|href="http|@import/i)
    expect(html).toContain('fashion &lt;demo&gt;')
    expect(html).toContain('Latency distributions')
    expect(html).toContain('Pareto front')
    expect(html).toContain('a quality gate failed')
  })

  it('finds the Pareto front', () => {
    const pts = [{label: 'a', x: 1, y: 0.8}, {label: 'b', x: 2, y: 0.9}, {label: 'c', x: 3, y: 0.85}, {label: 'd', x: 0.5, y: 0.7}]
    expect(paretoFront(pts).map((p) => p.label)).toEqual(['d', 'a', 'b'])
  })

  const hasChromium = fs.existsSync(CHROMIUM)
  if (!hasChromium && process.env.CI !== 'true') console.warn(`report-html: ${CHROMIUM} missing: the browser check is skipped (apt-get install -y chromium; under CI=true this fails)`)
  it.skipIf(!hasChromium && process.env.CI !== 'true')('renders in headless Chromium with charts that draw', async () => {
    expect(fs.existsSync(CHROMIUM), `${CHROMIUM} is required under CI=true`).toBe(true)
    const {chromium} = await import('playwright-core')
    const file = path.join(out, 'report.html')
    fs.writeFileSync(file, renderHtmlReport(report))
    const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chromium-'))
    // A persistent context is how playwright takes a fresh --user-data-dir.
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: {width: 1100, height: 900},
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
    try {
      const page = await browser.newPage()
      const failed: string[] = []
      page.on('requestfailed', (r) => failed.push(r.url()))
      await page.goto(`file://${file}`)
      const boxes = await page.$$eval('svg', (svgs) => svgs.map((s) => ({label: s.getAttribute('aria-label'), w: s.getBoundingClientRect().width, h: s.getBoundingClientRect().height, marks: s.querySelectorAll('rect,circle,polyline').length})))
      expect(boxes.length).toBeGreaterThanOrEqual(6)
      for (const b of boxes) {
        expect(b.w, String(b.label)).toBeGreaterThan(100)
        expect(b.h, String(b.label)).toBeGreaterThan(50)
        expect(b.marks, String(b.label)).toBeGreaterThan(0)
      }
      // Histogram bars must have drawn area, not just exist.
      const drawn = await page.$$eval('svg[aria-label^="latency distribution"] rect', (rs) => rs.filter((r) => r.getBoundingClientRect().height > 0).length)
      expect(drawn).toBeGreaterThan(4)
      await page.screenshot({path: path.join(out, 'report.png'), fullPage: true})
      expect(fs.statSync(path.join(out, 'report.png')).size).toBeGreaterThan(10_000)
      expect(failed).toEqual([])
    } finally {
      await browser.close()
    }
  }, 60_000)

  it('diffs two runs stage by stage as Markdown', () => {
    const b: RunReport = structuredClone(report)
    b.runId = 'run-2'
    b.stages[0]!.metrics.accuracy = Number(report.stages[0]!.metrics.accuracy) - 0.05
    b.stages[0]!.artifact!.bytes = Math.round(report.stages[0]!.artifact!.bytes / 2)
    const d = diffRuns(report, b)
    const acc = d.stages[0]!.metrics.find((m) => m.name === 'accuracy')!
    expect(acc.delta).toBeCloseTo(-0.05, 10)
    const md = renderDiffMarkdown(d)
    expect(md).toContain('`run-1` → `run-2`')
    expect(md).toMatch(/\| eval-cnn \(evaluate\) \| ran → ran \| .* \| -50\.0% \|/)
    expect(md).toMatch(/\| accuracy \| .* \| -0\.0500 \|/)
  })
})
