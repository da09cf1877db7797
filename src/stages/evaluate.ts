import * as fsp from 'node:fs/promises'
import {z} from 'zod'
import {compressedSize} from '../delivery/compress.js'
import {UsageError} from '../errors.js'
import {evaluateModel} from '../eval/evaluate.js'
import type {GateSpec} from '../eval/gates.js'
import {checkGates} from '../eval/gates.js'
import type {ABResult, ModelBench} from '../runtime/bench.js'
import {benchmark, benchmarkAB} from '../runtime/bench.js'
import type {ArtifactRecord, StageContext} from './types.js'
import {defineStage} from './types.js'

const GateSchema = z.union([z.number(), z.strictObject({min: z.number().optional(), max: z.number().optional()})])

const schema = z.strictObject({
  dataset: z.string().min(1).describe('Name of a dataset under `datasets:`.'),
  baseline: z.string().min(1).optional().describe('`input` (the pipeline input model) or a stage id: the model to compare with.'),
  metrics: z.array(z.string().min(1)).optional().describe('Built-in metrics (accuracy, top5, precision, recall, f1, auc, mse, mae, agreement, cosine, outputError) or ./metric.js modules.'),
  task: z.enum(['classification', 'binary', 'regression']).optional().describe('How outputs relate to labels (default classification; binary when positiveClass/threshold are set, or when the output is one value per sample: split at 0.5 for probabilities, 0 for logits).'),
  output: z.union([z.string(), z.array(z.string()).min(1)]).optional().describe('Output(s) the metrics read (default the first).'),
  reduce: z.enum(['max', 'mean', 'first']).optional().describe('Binary: how a sample\'s output values become one score.'),
  activation: z.enum(['none', 'sigmoid']).optional().describe('Binary: applied to the score before the threshold.'),
  positiveClass: z.number().int().optional().describe('Binary: label of the positive class (default 1).'),
  threshold: z.number().optional().describe('Binary: decision threshold (default 0.5).'),
  batch: z.number().int().min(1).optional().describe('Evaluation batch size (default 32, or the model\'s fixed batch).'),
  benchmark: z
    .strictObject({
      profile: z.string().optional().describe('Hardware profile (default the pipeline target).'),
      batch: z.array(z.number().int().min(1)).min(1).optional().describe('Batch sizes (default the profile\'s).'),
      iterations: z.number().int().min(1).optional(),
      durationMs: z.number().positive().optional(),
      warmup: z.number().int().min(0).optional(),
    })
    .refine((b) => b.iterations === undefined || b.durationMs === undefined, {message: 'give `iterations` or `durationMs`, not both: a duration overrides the count', path: ['durationMs']})
    .optional()
    .describe('Measure latency; with a baseline, interleaved A/B with a speed-up interval.'),
  gates: z.record(z.string(), GateSchema).default({}).describe('Quality gates: accuracyDrop, agreement, latencyP95Ms, speedup, sizeRatio... or any metric with {min, max}.'),
})

type Params = z.output<typeof schema>

/** Chart data the HTML report reads from an evaluate stage (`StageResult.report.evaluate`). */
export interface EvaluateReport {
  metrics: Record<string, number>
  model: {path: string; bytes: number; compressedBytes?: number}
  baseline?: {path: string; bytes: number; compressedBytes?: number; from: string}
  bench?: {candidate: ModelBench; baseline?: ModelBench; comparisons?: ABResult['comparisons']}
}

function resolveBaseline(ctx: StageContext, ref: string): ArtifactRecord {
  if (ref === 'input') return ctx.inputArtifact
  const a = ctx.artifacts.get(ref)
  if (!a) {
    throw new UsageError(`baseline '${ref}' is neither 'input' nor the id of an earlier stage`, {
      code: 'E_EVAL_BASELINE',
      tryMessage: `Use 'input'${ctx.artifacts.size ? ` or one of: ${[...ctx.artifacts.keys()].join(', ')}` : ''}.`,
    })
  }
  return a
}

function onnxFile(a: ArtifactRecord, what: string): string {
  if (a.format !== 'onnx' && !a.path.endsWith('.onnx')) {
    throw new UsageError(`${what} is a ${a.format} artifact; evaluate runs ONNX models`, {code: 'E_EVAL_FORMAT', tryMessage: 'Evaluate before encrypt/sign, or after convert to ONNX.'})
  }
  return a.path
}

export default defineStage({
  kind: 'evaluate',
  version: '1',
  description: 'Measure accuracy against labels and a baseline, benchmark latency, and check quality gates.',
  schema,
  datasets: (p: Params) => [p.dataset],
  async run(ctx, input, p) {
    const model = onnxFile(input, 'the input of evaluate')
    const baseRec = p.baseline ? resolveBaseline(ctx, p.baseline) : undefined
    const baseline = baseRec ? onnxFile(baseRec, `baseline '${p.baseline}'`) : undefined
    const profile = ctx.profile(p.benchmark?.profile ?? ctx.target)
    ctx.progress('evaluating')
    const ev = await evaluateModel({
      model,
      baseline,
      dataset: ctx.dataset(p.dataset),
      metrics: p.metrics,
      task: p.task,
      outputs: p.output === undefined ? undefined : Array.isArray(p.output) ? p.output : [p.output],
      reduce: p.reduce,
      activation: p.activation,
      positiveClass: p.positiveClass,
      threshold: p.threshold,
      batchSize: p.batch,
      profile,
      baseDir: ctx.baseDir,
      signal: ctx.signal,
      progress: (n) => ctx.progress(`evaluated ${n} samples`),
    })
    const metrics: Record<string, number> = {...ev.metrics, samples: ev.samples, samplesPerSecond: ev.samplesPerSecond}
    const values: Record<string, number | undefined> = {...ev.metrics}
    const notes: Record<string, string> = {}
    if (ev.metrics.accuracy !== undefined && ev.metrics['baseline.accuracy'] !== undefined) {
      metrics.accuracyDrop = values.accuracyDrop = ev.metrics['baseline.accuracy'] - ev.metrics.accuracy
    } else notes.accuracyDrop = 'it needs a baseline and the accuracy metric'

    const sizeOf = async (file: string) => ({path: file, bytes: (await fsp.stat(file)).size, compressedBytes: await compressedSize(file)})
    const modelSize = await sizeOf(model)
    metrics.sizeBytes = values.sizeBytes = modelSize.bytes
    metrics.compressedBytes = modelSize.compressedBytes
    const report: EvaluateReport = {metrics, model: modelSize}
    const ref = baseRec ?? ctx.inputArtifact
    if (ref.path.endsWith('.onnx') || ref.format === 'onnx') {
      const refSize = await sizeOf(ref.path)
      metrics.sizeRatio = values.sizeRatio = modelSize.bytes / refSize.bytes
      metrics.compressedSizeRatio = values.compressedSizeRatio = modelSize.compressedBytes / refSize.compressedBytes
      report.baseline = {...refSize, from: p.baseline ?? 'input'}
    }

    if (p.benchmark) {
      ctx.progress(`benchmarking on ${profile.name}`)
      const opts = {batch: p.benchmark.batch, iterations: p.benchmark.iterations, durationMs: p.benchmark.durationMs, warmup: p.benchmark.warmup, signal: ctx.signal, compressedSize: false}
      let candidate: ModelBench
      if (baseline) {
        const ab = await benchmarkAB({baseline, candidate: model}, profile, opts)
        candidate = ab.candidate
        report.bench = {candidate, baseline: ab.baseline, comparisons: ab.comparisons}
        const c = ab.comparisons[0]!
        metrics.speedup = c.speedup
        metrics.speedupLow = c.low
        metrics.speedupHigh = c.high
        // The gate is on the interval's lower bound: a speed-up the interval does not support does not pass.
        values.speedup = c.low
        notes.speedup = c.message
      } else {
        candidate = await benchmark(model, profile, opts)
        report.bench = {candidate}
        notes.speedup = 'it needs a baseline and a benchmark'
      }
      const first = candidate.runs[0]!
      metrics.benchBatch = first.batch
      metrics.loadMs = candidate.loadMs
      metrics.latencyMeanMs = first.latencyMs.mean
      metrics.latencyP50Ms = values.latencyP50Ms = first.latencyMs.p50
      metrics.latencyP95Ms = values.latencyP95Ms = first.latencyMs.p95
      metrics.latencyP99Ms = values.latencyP99Ms = first.latencyMs.p99
      metrics.throughput = values.throughput = first.throughput
      metrics.peakRssBytes = first.peakRssBytes
      if (candidate.runs.some((r) => r.noisy)) ctx.log.warn(`benchmark on ${profile.name} was noisy (coefficient of variation ${first.latencyMs.cv.toFixed(2)}): latency figures are unreliable`)
    } else {
      for (const g of ['latencyP50Ms', 'latencyP95Ms', 'latencyP99Ms', 'throughput', 'speedup']) notes[g] = 'no benchmark was run'
    }
    for (const g of Object.keys(notes)) notes[`${g}.try`] = g.startsWith('latency') || g === 'throughput' || g === 'speedup' ? "Add 'benchmark: {profile: …}' (and a baseline for speedup) to the evaluate stage." : "Set 'baseline:' and include 'accuracy' in metrics."
    const gates = checkGates(p.gates as Record<string, GateSpec>, values, ctx.id, Object.fromEntries(Object.entries(notes).filter(([k]) => !(k in values) || k === 'speedup' || k.endsWith('.try'))))
    for (const g of gates) if (!g.passed) ctx.log.warn(`gate ${g.name}: ${g.message}`)
    return {metrics, gates, report: {evaluate: report}}
  },
})
