import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {BatchBench, Comparison, ModelBench} from '../runtime/bench.js'

/** What `kiln bench --json` prints: per model, per batch size; raw samples left out. */
export interface BenchCommandResult {
  profile: string
  models: (Omit<ModelBench, 'runs'> & {runs: Omit<BatchBench, 'samplesMs'>[]})[]
  comparisons?: Comparison[]
}

export default class Bench extends KilnCommand {
  static override summary = 'Benchmark a model on a hardware profile; with --vs, an interleaved A/B comparison.'
  static override description =
    'Reports load time, latency percentiles, mean with a 95% confidence interval, throughput and peak RSS. With --vs the two models run interleaved in one process and the speed-up comes with its confidence interval; a speed-up is only claimed when the interval supports it.'
  static override examples = ['<%= config.bin %> bench model.onnx --profile cpu-1t', '<%= config.bin %> bench int8.onnx --vs fp32.onnx --batch 1 --batch 32 --json']

  static override args = {model: Args.string({description: 'ONNX model to benchmark (the candidate with --vs).', required: true})}

  static override flags = {
    vs: Flags.string({description: 'Baseline model to compare with.'}),
    profile: Flags.string({char: 'p', description: 'Hardware profile: cpu-1t, cpu-2t, cpu-all.', default: 'cpu-2t'}),
    batch: Flags.integer({description: 'Batch size (repeatable; default the profile\'s).', multiple: true, min: 1}),
    iterations: Flags.integer({char: 'n', description: 'Measured runs per batch size.', min: 1, exclusive: ['duration']}),
    duration: Flags.string({description: 'Measure for this many seconds per batch size instead.', exclusive: ['iterations']}),
    warmup: Flags.integer({description: 'Warm-up runs discarded first.', min: 0}),
    concurrency: Flags.integer({description: 'Concurrent runs on one session.', min: 1}),
    rounds: Flags.integer({description: 'A/B rounds with --vs (default 20).', min: 2, dependsOn: ['vs']}),
    dim: Flags.string({description: 'Size of a symbolic dimension of the generated inputs: NAME=SIZE (repeatable; default 64).', multiple: true, exclusive: ['data']}),
    data: Flags.string({description: 'Time on real inputs: the first samples of a dataset (an NPZ whose arrays are named after the model inputs), instead of generated ones.'}),
  }

  async run(): Promise<BenchCommandResult> {
    const {args, flags} = await this.parse(Bench)
    const [{benchmark, benchmarkAB}, {getProfile}, {UsageError}] = await Promise.all([import('../runtime/bench.js'), import('../runtime/profiles.js'), import('../errors.js')])
    const profile = getProfile(flags.profile)
    const durationMs = flags.duration === undefined ? undefined : Number(flags.duration) * 1000
    if (durationMs !== undefined && !(durationMs > 0)) throw new UsageError(`--duration must be a positive number of seconds, got '${flags.duration}'`)
    const dims = flags.dim?.length
      ? Object.fromEntries(
          flags.dim.map((d) => {
            const [k, v] = d.split('=')
            if (!k || !v || !(Number(v) > 0)) throw new UsageError(`--dim expects NAME=SIZE, got '${d}'`)
            return [k, Number(v)]
          }),
        )
      : undefined
    const data = flags.data ? {name: path.basename(flags.data), path: path.resolve(flags.data)} : undefined
    const opts = {batch: flags.batch, iterations: flags.iterations, durationMs, warmup: flags.warmup, concurrency: flags.concurrency, rounds: flags.rounds, dims, data}
    const strip = (m: ModelBench) => ({...m, runs: m.runs.map(({samplesMs: _s, ...r}) => r)})
    let result: BenchCommandResult
    if (flags.vs) {
      const ab = await benchmarkAB({baseline: path.resolve(flags.vs), candidate: path.resolve(args.model)}, profile, opts)
      result = {profile: profile.name, models: [strip(ab.candidate), strip(ab.baseline)], comparisons: ab.comparisons}
    } else {
      result = {profile: profile.name, models: [strip(await benchmark(path.resolve(args.model), profile, opts))]}
    }
    const f = (x: number) => x.toFixed(3)
    for (const m of result.models) {
      this.say(`${path.basename(m.model)} on ${result.profile}: load ${m.loadMs.toFixed(1)} ms, ${m.sizeBytes ?? '?'} bytes (${m.compressedBytes ?? '?'} zstd)`)
      for (const r of m.runs) {
        const l = r.latencyMs
        this.say(
          `  batch ${r.batch}: p50 ${f(l.p50)}  p90 ${f(l.p90)}  p95 ${f(l.p95)}  p99 ${f(l.p99)} ms; mean ${f(l.mean)} ms (95% CI ${f(l.ciLow)}–${f(l.ciHigh)}); ${r.throughput.toFixed(1)} samples/s; peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB${r.noisy ? `  [noisy: CV ${l.cv.toFixed(2)}]` : ''}`,
        )
      }
    }
    for (const c of result.comparisons ?? []) this.say(`batch ${c.batch}: ${c.message}`)
    return result
  }
}
