import {performance} from 'node:perf_hooks'
import {compressedSize} from '../delivery/compress.js'
import {KilnError} from '../errors.js'
import type {DatasetSpec, HardwareProfile} from '../stages/types.js'
import {sampleBatch} from '../data/dataset.js'
import {inputMetaOf} from '../eval/evaluate.js'
import type {Ort} from './ort.js'
import {loadOrt, toFeeds} from './ort.js'
import {checkProviders, createProfileSession, PROFILE_DEFAULTS} from './profiles.js'
import {bootstrapMeanCi, meanCi, percentile} from './stats.js'
import * as fsp from 'node:fs/promises'

/** Options of {@link benchmark} and {@link benchmarkAB}; unset ones come from the profile. */
export interface BenchOptions {
  /** Batch sizes to measure (default: the profile's `batch`). */
  batch?: number[]
  /** Warm-up runs discarded before measuring (default: profile, else 10). */
  warmup?: number
  /** Measured runs per batch size (default: profile, else 100). Ignored when `durationMs` is set. */
  iterations?: number
  /** Measure for this long per batch size instead of a fixed count. */
  durationMs?: number
  /** Concurrent `run` calls on the one session (default: profile, else 1). */
  concurrency?: number
  /**
   * Sizes for symbolic dimensions other than the batch (e.g. `{height: 320}`), by dim name or
   * `input.axis`. Unnamed ones default to 64.
   */
  dims?: Record<string, number>
  /** Real input tensors to run instead of generated ones (their first dim must be the batch). */
  feeds?: (batch: number) => Record<string, Ort.Tensor> | undefined
  /** A dataset whose first samples are the inputs (arrays named after the model's inputs), instead of generated ones. */
  data?: DatasetSpec
  /** Coefficient of variation above which a run is flagged noisy (default 0.1). */
  noisyCv?: number
  /** Compute the zstd-compressed size of the model file (default true; costs a compression). */
  compressedSize?: boolean
  signal?: AbortSignal
}

/** Latency statistics in milliseconds. */
export interface LatencyStats {
  n: number
  mean: number
  /** 95% confidence interval of the mean (percentile bootstrap: latencies are skewed). */
  ciLow: number
  ciHigh: number
  stdev: number
  /** Coefficient of variation (stdev / mean). */
  cv: number
  min: number
  max: number
  p50: number
  p90: number
  p95: number
  p99: number
}

/** One model at one batch size. */
export interface BatchBench {
  batch: number
  concurrency: number
  warmup: number
  iterations: number
  latencyMs: LatencyStats
  /** Samples per second (batch × runs / wall time). */
  throughput: number
  /** Highest resident set size sampled while measuring. */
  peakRssBytes: number
  /** The coefficient of variation is above the noise threshold: treat the figures with care. */
  noisy: boolean
  inputShapes: Record<string, number[]>
  /** Raw latencies in run order (ms), at most 2,000 evenly spaced: for distribution charts. */
  samplesMs: number[]
}

export interface ModelBench {
  model: string
  profile: string
  /** Time to create the onnxruntime session (ms). */
  loadMs: number
  sizeBytes?: number
  compressedBytes?: number
  runs: BatchBench[]
}

export interface Comparison {
  batch: number
  /** Baseline mean latency / candidate mean latency: above 1 means the candidate is faster. */
  speedup: number
  /** 95% confidence interval of the speed-up, from the paired A/B rounds. */
  low: number
  high: number
  rounds: number
  /** `faster`/`slower` only when the whole interval is above/below 1. */
  verdict: 'faster' | 'slower' | 'inconclusive'
  message: string
}

export interface ABResult {
  baseline: ModelBench
  candidate: ModelBench
  comparisons: Comparison[]
}

function summarise(samples: ArrayLike<number>): LatencyStats {
  const sorted = Float64Array.from(samples).sort()
  const ci = meanCi(samples)
  const boot = bootstrapMeanCi(samples)
  return {
    n: samples.length,
    mean: ci.mean,
    ciLow: boot.low,
    ciHigh: boot.high,
    stdev: ci.stdev,
    cv: ci.mean > 0 ? ci.stdev / ci.mean : 0,
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
  }
}

function thin(samples: number[], max = 2000): number[] {
  if (samples.length <= max) return samples
  const step = samples.length / max
  return Array.from({length: max}, (_, i) => samples[Math.floor(i * step)]!)
}

const FILL: Record<string, (n: number) => Ort.Tensor['data']> = {
  float32: (n) => Float32Array.from({length: n}, (_, i) => ((i * 2_654_435_761) % 1000) / 1000),
  float64: (n) => Float64Array.from({length: n}, (_, i) => ((i * 2_654_435_761) % 1000) / 1000),
  float16: (n) => new Uint16Array(n).fill(0x3800),
  int64: (n) => new BigInt64Array(n),
  int32: (n) => new Int32Array(n),
  int8: (n) => new Int8Array(n),
  uint8: (n) => Uint8Array.from({length: n}, (_, i) => (i * 31) % 256),
  bool: (n) => new Uint8Array(n),
}

/**
 * Inputs for a run, checked by running them once: the caller's tensors or dataset, else
 * deterministic synthetic tensors of the model's shapes. A model that will not run on them is
 * said plainly, with the shapes it got.
 */
async function makeFeeds(session: Ort.InferenceSession, batch: number, opts: BenchOptions): Promise<Record<string, Ort.Tensor>> {
  let feeds = opts.feeds?.(batch)
  if (!feeds && opts.data) {
    feeds = await toFeeds(await sampleBatch(opts.data, inputMetaOf(session), batch, opts.signal))
  }
  feeds ??= await syntheticFeeds(session, batch, opts)
  try {
    await session.run(feeds)
  } catch (error) {
    const shapes = Object.entries(feeds).map(([k, t]) => `${k} ${t.type}[${t.dims.join(',')}]`).join(', ')
    throw new KilnError(`the model does not run on the ${opts.feeds || opts.data ? 'given' : 'generated'} inputs (${shapes}): ${(error as Error).message.split('\n')[0]}`, {
      code: 'E_BENCH_INPUT',
      cause: error,
      tryMessage: opts.data ? 'Check that the dataset\'s arrays fit the model\'s inputs.' : 'Benchmark on real inputs with --data DATA.npz (arrays named after the model\'s inputs), or size its symbolic dimensions with --dim NAME=SIZE.',
    })
  }
  return feeds
}

/** Deterministic synthetic tensors of the model's input shapes. */
async function syntheticFeeds(session: Ort.InferenceSession, batch: number, opts: BenchOptions): Promise<Record<string, Ort.Tensor>> {
  const ort = await loadOrt()
  const feeds: Record<string, Ort.Tensor> = {}
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new KilnError(`input '${meta.name}' is not a tensor; kiln cannot generate it`, {code: 'E_BENCH_INPUT', tryMessage: 'Benchmark with real inputs (a dataset).'})
    const dims = meta.shape.map((d, axis) => {
      if (typeof d === 'number' && d >= 0) return d
      if (axis === 0) return batch
      return opts.dims?.[typeof d === 'string' && d ? d : `${meta.name}.${axis}`] ?? opts.dims?.[`${meta.name}.${axis}`] ?? 64
    })
    // A fixed first dim of 1 is a batch of one: a larger batch cannot run on it.
    if (meta.shape.length > 0 && typeof meta.shape[0] === 'number' && meta.shape[0] !== batch && batch !== 1) {
      throw new KilnError(`input '${meta.name}' has a fixed batch dimension of ${meta.shape[0]}; cannot benchmark batch ${batch}`, {code: 'E_BENCH_BATCH', tryMessage: `Use --batch ${meta.shape[0]}, or export the model with a dynamic batch dimension.`})
    }
    const fill = FILL[meta.type]
    if (!fill) throw new KilnError(`input '${meta.name}' has type ${meta.type}; kiln cannot generate it`, {code: 'E_BENCH_INPUT'})
    feeds[meta.name] = new ort.Tensor(meta.type as 'float32', fill(dims.reduce((a, b) => a * b, 1)) as Float32Array, dims)
  }
  return feeds
}

/** What {@link measureLoop} returns: latencies in run order, the loop's wall time and peak RSS. */
export interface Loop {
  samples: number[]
  wallMs: number
  peakRss: number
}

/**
 * The measuring loop: nothing but a clock read around each `run`. RSS is sampled every 50 ms,
 * outside the timed span. Exported so the harness's own cost can be measured against a bare loop.
 */
export async function measureLoop(session: Pick<Ort.InferenceSession, 'run'>, feeds: Record<string, Ort.Tensor>, count: number | undefined, durationMs: number | undefined, concurrency: number, signal?: AbortSignal): Promise<Loop> {
  const samples: number[] = []
  let peakRss = process.memoryUsage.rss()
  const start = performance.now()
  const end = durationMs === undefined ? Number.POSITIVE_INFINITY : start + durationMs
  const limit = count ?? Number.POSITIVE_INFINITY
  // One clock read before and one after each run; the second doubles as the duration check.
  let now = start
  let lastRss = start
  const worker = async () => {
    while (samples.length < limit && now < end) {
      if (signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
      const t0 = performance.now()
      await session.run(feeds)
      now = performance.now()
      samples.push(now - t0)
      // Reading RSS costs tens of microseconds (it reads /proc): sample it every 50 ms, not per run.
      if (now - lastRss > 50) {
        peakRss = Math.max(peakRss, process.memoryUsage.rss())
        lastRss = now
      }
    }
  }
  await Promise.all(Array.from({length: concurrency}, worker))
  return {samples, wallMs: performance.now() - start, peakRss: Math.max(peakRss, process.memoryUsage.rss())}
}

function settings(profile: HardwareProfile, opts: BenchOptions) {
  const durationMs = opts.durationMs ?? (opts.iterations === undefined ? profile.durationMs : undefined)
  return {
    batches: opts.batch ?? profile.batch ?? [1],
    warmup: opts.warmup ?? profile.warmup ?? PROFILE_DEFAULTS.warmup,
    iterations: durationMs === undefined ? (opts.iterations ?? profile.iterations ?? PROFILE_DEFAULTS.iterations) : undefined,
    durationMs,
    concurrency: opts.concurrency ?? profile.concurrency ?? 1,
    noisyCv: opts.noisyCv ?? 0.1,
  }
}

async function load(model: string, profile: HardwareProfile, opts: BenchOptions): Promise<{session: Ort.InferenceSession; bench: ModelBench}> {
  // Load the runtime itself first: its one-time import is not the model's load time.
  await loadOrt()
  await checkProviders(profile)
  const t0 = performance.now()
  const session = await createProfileSession(model, profile)
  const loadMs = performance.now() - t0
  const bench: ModelBench = {model, profile: profile.name, loadMs, runs: []}
  const st = await fsp.stat(model).catch(() => undefined)
  if (st?.isFile()) {
    bench.sizeBytes = st.size
    if (opts.compressedSize !== false) bench.compressedBytes = await compressedSize(model)
  }
  return {session, bench}
}

function batchResult(batch: number, s: ReturnType<typeof settings>, feeds: Record<string, Ort.Tensor>, loop: Loop): BatchBench {
  const latencyMs = summarise(loop.samples)
  return {
    batch,
    concurrency: s.concurrency,
    warmup: s.warmup,
    iterations: loop.samples.length,
    latencyMs,
    throughput: (loop.samples.length * batch) / (loop.wallMs / 1000),
    peakRssBytes: loop.peakRss,
    noisy: latencyMs.cv > s.noisyCv,
    inputShapes: Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, [...t.dims]])),
    samplesMs: thin(loop.samples),
  }
}

/**
 * Benchmark one model on a hardware profile: session load time, then per batch size a warm-up and
 * a measured loop (a fixed count or a duration) with latency percentiles, the mean with its 95%
 * confidence interval, throughput, peak RSS and a noise flag.
 */
export async function benchmark(model: string, profile: HardwareProfile, opts: BenchOptions = {}): Promise<ModelBench> {
  const s = settings(profile, opts)
  const {session, bench} = await load(model, profile, opts)
  try {
    for (const batch of s.batches) {
      const feeds = await makeFeeds(session, batch, opts)
      await measureLoop(session, feeds, s.warmup, undefined, 1, opts.signal)
      const loop = await measureLoop(session, feeds, s.iterations, s.durationMs, s.concurrency, opts.signal)
      bench.runs.push(batchResult(batch, s, feeds, loop))
    }
  } finally {
    await session.release()
  }
  return bench
}

/**
 * Compare two models in one process, interleaved in rounds (A B, then B A, ...) so that drift in
 * the machine's speed hits both alike. The speed-up (baseline mean / candidate mean) and its 95%
 * confidence interval come from the per-round ratios (geometric mean, t interval on the logs); a
 * speed-up is only claimed when the whole interval is above 1.
 */
export async function benchmarkAB(models: {baseline: string; candidate: string}, profile: HardwareProfile, opts: BenchOptions & {rounds?: number} = {}): Promise<ABResult> {
  const s = settings(profile, opts)
  const rounds = Math.max(2, opts.rounds ?? 20)
  const a = await load(models.baseline, profile, opts)
  const b = await load(models.candidate, profile, opts)
  const comparisons: Comparison[] = []
  try {
    for (const batch of s.batches) {
      const fa = await makeFeeds(a.session, batch, opts)
      const fb = await makeFeeds(b.session, batch, opts)
      await measureLoop(a.session, fa, s.warmup, undefined, 1, opts.signal)
      await measureLoop(b.session, fb, s.warmup, undefined, 1, opts.signal)
      const per = s.iterations === undefined ? undefined : Math.max(1, Math.ceil(s.iterations / rounds))
      const roundMs = s.durationMs === undefined ? undefined : s.durationMs / rounds / 2
      const la: Loop = {samples: [], wallMs: 0, peakRss: 0}
      const lb: Loop = {samples: [], wallMs: 0, peakRss: 0}
      const logRatios: number[] = []
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 === 0 ? ([[a, fa, la], [b, fb, lb]] as const) : ([[b, fb, lb], [a, fa, la]] as const)
        const means: number[] = []
        for (const [m, feeds, acc] of order) {
          const loop = await measureLoop(m.session, feeds, per, roundMs, s.concurrency, opts.signal)
          acc.samples.push(...loop.samples)
          acc.wallMs += loop.wallMs
          acc.peakRss = Math.max(acc.peakRss, loop.peakRss)
          means.push(loop.samples.reduce((x, y) => x + y, 0) / loop.samples.length)
        }
        const [first, second] = means as [number, number]
        const [ma, mb] = r % 2 === 0 ? [first, second] : [second, first]
        logRatios.push(Math.log(ma / mb))
      }
      a.bench.runs.push(batchResult(batch, s, fa, la))
      b.bench.runs.push(batchResult(batch, s, fb, lb))
      const ci = meanCi(logRatios)
      const [speedup, low, high] = [Math.exp(ci.mean), Math.exp(ci.low), Math.exp(ci.high)]
      const verdict = low > 1 ? 'faster' : high < 1 ? 'slower' : 'inconclusive'
      const fmt = (x: number) => x.toFixed(3)
      comparisons.push({
        batch,
        speedup,
        low,
        high,
        rounds,
        verdict,
        message:
          verdict === 'faster'
            ? `candidate is ${fmt(speedup)}× faster (95% CI ${fmt(low)}–${fmt(high)})`
            : verdict === 'slower'
              ? `candidate is ${fmt(1 / speedup)}× slower (speed-up ${fmt(speedup)}, 95% CI ${fmt(low)}–${fmt(high)})`
              : `no supported difference: speed-up ${fmt(speedup)}, 95% CI ${fmt(low)}–${fmt(high)} includes 1`,
      })
    }
  } finally {
    await a.session.release()
    await b.session.release()
  }
  return {baseline: a.bench, candidate: b.bench, comparisons}
}
