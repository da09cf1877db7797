/**
 * `quantizeModel`: the one library entry behind the `quantize` stage and `kiln quantize`. It
 * pre-processes, quantizes in the chosen mode, then decides with measurements: accuracy against
 * fp32 on an evaluation set (falling back the most sensitive nodes), and A/B latency against the
 * input on the target profile (trying op mixes; keeping the input when nothing is faster).
 */
import * as fsp from 'node:fs/promises'
import {KilnError} from '../../errors.js'
import type {Batch, InputMeta} from '../../data/dataset.js'
import {readBatches, sampleBatch} from '../../data/dataset.js'
import {valueInfoShape} from '../../onnx/build.js'
import {allNodes, allTensors} from '../../onnx/graph.js'
import {fp16OutOfRange} from './fp16.js'
import {modelToBytes, opsetVersion, readModel, writeModel} from '../../onnx/model.js'
import {ModelProtoSchema, clone} from '../../onnx/proto.js'
import type {ModelProto, NodeProto} from '../../onnx/proto.js'
import {dtypeName} from '../../onnx/tensor.js'
import type {DatasetSpec, HardwareProfile} from '../../stages/types.js'
import {atomicWriteFile} from '../../util/fs.js'
import {equalizeCrossLayer, preprocessModel} from '../preprocess.js'
import type {PreprocessReport} from '../preprocess.js'
import {answerTensors, calibrate, CalibrationRun, Extremes} from './calibrate.js'
import type {CalibrationMethod, TensorStats} from './calibrate.js'
import {buildCandidate, candidateMixes} from './candidates.js'
import type {BuildConfig, Built, ModeContext} from './candidates.js'
import {inferTypes, sessionFor} from './graph-util.js'
import type {ABResult} from './measure.js'
import {agreement, evaluate, latencyAB, outputAgreement, referenceOutputs, syntheticInputs, tensorSqnr} from './measure.js'
import {checkOpset, upgradeOpset} from './opset.js'
import {planStatic, WEIGHTED_OPS} from './static.js'
import {MAX_TIMED_NODES, timeNodes} from './node-timing.js'
import type {NodeTiming} from './node-timing.js'
import type {FloatNode} from './static.js'
import {detectCpu} from './cpu.js'
import {makeExcluder} from './exclude.js'
import {gptqBlocks} from './int4.js'
import {describeMisapplied, misappliedOptions} from './options.js'
import type {QuantizeMode} from './options.js'
import type {Int4Algorithm} from './int4.js'

/** Below this measured speed-up a candidate counts as slower even when the interval is wide. */
const MIN_SPEEDUP = 0.97

export type {QuantizeMode} from './options.js'

export interface QuantizeOptions {
  /** Input ONNX model path. */
  input: string
  /** Output ONNX model path (written atomically). */
  output: string
  mode: QuantizeMode
  /** Calibration dataset (static mode). */
  calibration?: DatasetSpec
  /** Calibration method (static): `minmax`, `percentile` or `entropy` (KL). Default `minmax`. */
  method?: CalibrationMethod
  /** Percentile of |x| kept by the `percentile` method. Default 99.999. */
  percentile?: number
  /** Samples per calibration/evaluation batch when the model's batch dimension is free. Default 16. */
  batchSize?: number
  /** Per-channel weights (static, dynamic). Default true. */
  perChannel?: boolean
  /** Activation type (static). Default from the CPU: uint8 (U8S8). */
  activations?: 'uint8' | 'int8'
  /** Symmetric activations (static) or symmetric weights (int4). Default false (static), true (int4). */
  symmetric?: boolean
  /** int4 block size along K: 32, 64 or 128. Default 32. */
  blockSize?: number
  /** int4 algorithm: `rtn` (round to nearest), `hqq` (half-quadratic, data-free) or `gptq` (needs `calibration`). Default `rtn`. */
  algorithm?: Int4Algorithm
  /** MatMulNBits accuracy_level (int4). Default 4 (int8 compute on CPU). */
  accuracyLevel?: number
  /** Keep these nodes in float: node name, op type, `op:Type`, glob or /regex/. */
  exclude?: string[]
  /** Fold BatchNormalization and drop Identity/Dropout first. Default true. */
  preprocess?: boolean
  /** Static: cross-layer equalization of Conv → [ReLU] → Conv pairs before calibrating. Default false: on BlazeFace it measured slightly worse than none. */
  equalize?: boolean
  /** Evaluation dataset for the accuracy check (and accuracy-aware fallback). */
  eval?: DatasetSpec
  /** Largest accepted accuracy drop (fraction, e.g. 0.005); with `eval`, the most sensitive tensors/nodes fall back to float until it holds. */
  maxAccuracyDrop?: number
  /** Hardware profile to measure latency on. */
  profile: HardwareProfile
  /** Never ship a model slower than the input (static, dynamic, int4). Default true. */
  neverSlower?: boolean
  /** fp16: keep float32 model inputs/outputs. Default true. */
  keepIOTypes?: boolean
  /** fp16: op types kept in float32 (replaces the default list). */
  blockList?: string[]
  signal?: AbortSignal
  log?: (message: string) => void
  progress?: (message: string) => void
}

export interface CandidateReport {
  name: string
  quantizedNodes: Record<string, number>
  latency?: ABResult[]
  accuracy?: number
  agreement?: number
  accepted: boolean
  reason: string
}

export interface QuantizeReport {
  mode: QuantizeMode
  decision: 'quantized' | 'kept-input'
  message: string
  inputBytes: number
  outputBytes: number
  sizeRatio: number
  opset: {from: number; to: number}
  preprocess?: PreprocessReport
  quantizedNodes: Record<string, number>
  leftFloat: FloatNode[]
  settings: Record<string, unknown>
  calibration?: {
    dataset: string
    samples: number
    batches: number
    method: CalibrationMethod | 'gptq'
    percentile?: number
    seconds: number
    /** No method chosen: min/max and per-sample-average ranges, each checked on the calibration samples; the closer one is kept. */
    compared?: CalibrationCheck[]
  }
  candidates: CandidateReport[]
  chosen?: string
  accuracy?: {samples: number; fp32?: number; quantized?: number; drop?: number; agreement: number; maxDrop?: number}
  /** Accuracy-aware: each unit's harm, as the output SQNR (dB, against fp32 on a few evaluation samples) with only that unit quantized; most harmful first. */
  sensitivity?: {node: string; opType: string; sqnrDb: number}[]
  /** Static, hardware-aware: each weighted op's compute time alone, float against int8 (µs per run, timed batch sizes summed). */
  nodeTimings?: NodeTiming[]
  /** Static: the quantized model against the float one on (up to 64) calibration samples. */
  calibrationCheck?: {samples: number; agreement: number; sqnrDb: number}
  fallback: string[]
  seconds: number
}

function modelInputs(model: ModelProto): InputMeta[] {
  const inits = new Set(model.graph!.initializer.map((t) => t.name))
  return model.graph!.input.filter((i) => !inits.has(i.name)).map((i) => {
    const s = valueInfoShape(i)
    return {name: i.name, type: dtypeName(s?.elemType ?? 1), dims: s?.shape ?? []}
  })
}

/** Copy tensors still viewing the input file's buffer so the buffer can be freed. */
function detachTensors(model: ModelProto): void {
  for (const {tensor} of allTensors(model)) {
    const raw = tensor.rawData
    if (raw.length > 0 && raw.buffer.byteLength > raw.length * 2) tensor.rawData = new Uint8Array(raw)
  }
}

export async function quantizeModel(opts: QuantizeOptions): Promise<QuantizeReport> {
  const misapplied = misappliedOptions(opts.mode, opts as unknown as Record<string, unknown>)
  if (misapplied.length > 0) {
    throw new KilnError(`${describeMisapplied(misapplied)}: --mode ${opts.mode} would ignore ${misapplied.length === 1 ? 'it' : 'them'}`, {
      code: 'E_QUANT_OPTIONS',
      exitCode: 2,
      tryMessage: `Drop ${misapplied.length === 1 ? 'it' : 'them'}, or pick the mode ${misapplied.length === 1 ? 'it belongs' : 'they belong'} to.`,
    })
  }
  const started = performance.now()
  const log = opts.log ?? (() => {})
  const progress = opts.progress ?? (() => {})
  const inputBytes = (await fsp.stat(opts.input).catch(() => ({size: 0}))).size
  const work = await readModel(opts.input)
  const from = checkOpset(work)
  const inputs = modelInputs(work)
  // A fixed batch size only when every input with a batch axis says the same (Silero's state is [2, batch, 128]).
  const leading = inputs.filter((i) => i.dims.length > 0).map((i) => i.dims[0])
  const fixedBatch = typeof leading[0] === 'number' && leading[0] > 0 && leading.every((d) => d === leading[0]) ? leading[0] : undefined
  const batchSize = fixedBatch ?? opts.batchSize ?? 16
  const cpu = detectCpu()
  const activations = opts.activations ?? 'uint8'
  const settings: Record<string, unknown> = {mode: opts.mode, profile: opts.profile.name, cpu: cpu.summary}
  const report: QuantizeReport = {
    mode: opts.mode, decision: 'quantized', message: '', inputBytes, outputBytes: 0, sizeRatio: 1, opset: {from, to: from},
    quantizedNodes: {}, leftFloat: [], settings, candidates: [], fallback: [], seconds: 0,
  }
  if (opts.preprocess !== false && opts.mode !== 'int4') report.preprocess = preprocessModel(work)
  if (report.preprocess && opts.mode === 'static' && opts.equalize === true) report.preprocess.equalizedPairs = equalizeCrossLayer(work)
  if (opts.mode === 'static' || opts.mode === 'dynamic') upgradeOpset(work, 13)
  report.opset.to = opsetVersion(work) ?? from

  const reduceRange = !cpu.vnni && cpu.x86
  const ctx: ModeContext = {
    mode: opts.mode, exclude: opts.exclude ?? [], perChannel: opts.perChannel ?? true, activations,
    // Symmetric weights by default for int4; asymmetric activations by default for static.
    symmetric: opts.symmetric ?? opts.mode === 'int4',
    reduceRange, blockSize: opts.blockSize ?? 32, algorithm: opts.algorithm ?? 'rtn', accuracyLevel: opts.accuracyLevel ?? 4,
    keepIOTypes: opts.keepIOTypes ?? true, blockList: opts.blockList,
  }
  Object.assign(settings, {perChannel: ctx.perChannel, reduceRange})
  if (opts.mode === 'static') Object.assign(settings, {activations, symmetricActivations: ctx.symmetric, method: opts.method ?? 'minmax'})
  if (opts.mode === 'int4') Object.assign(settings, {blockSize: ctx.blockSize, algorithm: ctx.algorithm, symmetric: ctx.symmetric, accuracyLevel: ctx.accuracyLevel})

  // Calibration and evaluation are done with each batch before they ask for the next: its memory is recycled.
  const batchesOf = (spec: DatasetSpec, size = batchSize) => () => readBatches(spec, {batchSize: size, inputs, signal: opts.signal, reuse: true})

  let calibrationStats: Map<string, TensorStats> | undefined
  let rangesBy: ((method: CalibrationMethod) => Map<string, {min: number; max: number}>) | undefined
  let weightedPlanned: NodeProto[] = []
  if (opts.mode === 'static') {
    if (!opts.calibration) {
      throw new KilnError('static quantization needs a calibration dataset', {code: 'E_QUANT_NO_CALIBRATION', exitCode: 2, tryMessage: 'Pass --calibration DATA.npz (100–500 representative samples), or use --mode dynamic.'})
    }
    const meta = await inferTypes(work)
    const plan = planStatic(work, meta, staticOpts(ctx, makeExcluder(ctx.exclude)))
    weightedPlanned = [...plan.nodes].filter((n) => WEIGHTED_OPS.has(n.opType))
    if (weightedPlanned.length === 0) throw noQuantizableOps(work, opts.mode)
    progress('calibrating')
    const t = performance.now()
    const cal = await dataContext('calibration', () => calibrate(work, plan.calibrate, batchesOf(opts.calibration!)(), {threads: opts.profile.threads, signal: opts.signal, onBatch: (n) => progress(`calibrating: ${n} samples`)}))
    const method = opts.method ?? 'minmax'
    calibrationStats = cal.stats
    const answers = answerTensors(work)
    // A tensor calibration never saw (an If branch no sample took) gets no range: its node stays float.
    rangesBy = (m) => new Map([...cal.stats].filter(([, s]) => s.count > 0).map(([k, s]) => [k, s.range(answers.has(k) ? 'minmax' : m, opts.percentile)]))
    ctx.ranges = rangesBy(method)
    ctx.meta = meta
    report.calibration = {dataset: opts.calibration.name, samples: cal.samples, batches: cal.batches, method, percentile: method === 'percentile' ? (opts.percentile ?? 99.999) : undefined, seconds: (performance.now() - t) / 1000}
  }

  if (opts.mode === 'int4' && ctx.algorithm === 'gptq') {
    if (!opts.calibration) {
      throw new KilnError('GPTQ needs a calibration dataset', {code: 'E_QUANT_NO_CALIBRATION', exitCode: 2, tryMessage: 'Pass --calibration DATA.npz (a few hundred representative samples), or use --algorithm rtn or hqq, which need no data.'})
    }
    const t = performance.now()
    const g = await dataContext('calibration', () =>
      gptqBlocks(work, {blockSize: ctx.blockSize, symmetric: ctx.symmetric, excluded: makeExcluder(ctx.exclude)}, batchesOf(opts.calibration!), {threads: opts.profile.threads, signal: opts.signal, progress}),
    )
    ctx.int4Packed = g.packed
    if (g.unseen.length > 0) log(`GPTQ had no input statistics for ${g.unseen.length} MatMul(s) (the calibration data never reached them, or their inputs were always zero); rounded to nearest instead: ${g.unseen.slice(0, 5).join(', ')}${g.unseen.length > 5 ? ', …' : ''}`)
    report.calibration = {dataset: opts.calibration.name, samples: g.samples, batches: g.batches, method: 'gptq', seconds: (performance.now() - t) / 1000}
  }

  const mixes = candidateMixes(work, opts.mode)
  const measureSpeed = (opts.neverSlower ?? true) && opts.mode !== 'fp16'
  const accuracyAware = opts.eval !== undefined && opts.maxAccuracyDrop !== undefined
  const timing = measureSpeed ? await timingInputs(timingBatches(opts.profile, fixedBatch), opts.calibration ?? opts.eval, inputs, opts.signal) : new Map<number, TimingInput>()
  const batches = [...timing.keys()]

  let detached = false
  const build = (cfg: BuildConfig, inPlace: boolean): Built => {
    if (!detached && !inPlace) (detachTensors(work), (detached = true))
    return buildCandidate(inPlace ? work : clone(ModelProtoSchema, work), ctx, cfg)
  }
  // The first mix, on a copy: what the calibration checks below run.
  const buildFirst = () => build({mix: mixes[0]!, extraExcluded: new Set()}, false)

  // A built model against the float one on up to 64 calibration samples: what fp16 and static check.
  const onCalibration = async (size: number) => {
    const spec = {...opts.calibration!, limit: Math.min(opts.calibration!.limit ?? Infinity, CHECK_SAMPLES)}
    const sample = await dataContext('calibration', async () => {
      const got: Batch[] = []
      for await (const b of readBatches(spec, {batchSize: size, inputs, signal: opts.signal})) got.push(b)
      return got
    })
    const reference = await referenceOutputs(opts.input, sample, opts.profile)
    const check = async (built: Built) => {
      const r = await outputAgreement(reference, modelToBytes(built.model), sample, opts.profile)
      return {samples: r.samples, agreement: r.agreement, sqnrDb: Math.round(r.sqnrDb * 100) / 100}
    }
    return {sample, check}
  }

  // fp16 with data: the converted model is checked against the float one on (up to 64) calibration
  // samples. If its outputs drift (or overflow), the tensors whose values reach beyond float16's
  // range on that data stay float32 with the nodes around them, and the check runs again. (Silero's
  // legacy model scales its spectrum by 2^20.) Only then are the tensors scanned: exposing every
  // tensor of a model costs far more than running it.
  if (opts.mode === 'fp16' && opts.calibration) {
    progress('checking the float16 model against the float one')
    const t = performance.now()
    const {sample, check: checkOf} = await onCalibration(1)
    const probe = () => checkOf(buildFirst())
    let check = await probe()
    report.calibration = {dataset: opts.calibration.name, samples: sample.length, batches: sample.length, method: 'minmax', seconds: 0}
    if (!(check.sqnrDb >= FP16_CHECK_SQNR_DB)) {
      progress('scanning value ranges against float16')
      const meta = await inferTypes(work)
      // Tensors an op can make larger than its inputs; weights and constants are checked without data.
      const computed = [...allNodes(work)].filter(({node}) => !RANGE_BOUNDED_OPS.has(node.opType)).flatMap(({node}) => node.output)
      const floats = [...new Set(computed.filter((o) => o && meta.get(o)?.type === 'float32'))]
      const run = await CalibrationRun.open(work, floats, opts.profile.threads)
      const cal = await run.collect((async function* () { yield* sample })(), {signal: opts.signal, accumulator: () => new Extremes()}).finally(() => run.close())
      ctx.fp16KeepTensors = fp16OutOfRange(cal.stats)
      log(`fp16: output SQNR ${check.sqnrDb} dB against float on ${check.samples} calibration samples; ${ctx.fp16KeepTensors.size} tensor(s) beyond float16's range stay float32`)
      if (ctx.fp16KeepTensors.size) check = await probe()
    }
    report.calibration.seconds = (performance.now() - t) / 1000
    report.calibrationCheck = check
  }

  // Static: the quantized model against the float one on (up to 64) calibration samples. With no
  // method chosen, min/max ranges and each sample's own range averaged are both tried, and the
  // model that follows the float one closer is kept: min/max suits most data, but a few samples
  // unlike the rest (a blank image) stretch its ranges until the typical sample has a handful of
  // int8 steps. Without an accuracy target, a collapsed model is never shipped.
  let checked: {method: CalibrationMethod; ranges: Map<string, {min: number; max: number}>; built: Built; check: CalibrationCheck} | undefined
  if (opts.mode === 'static' && (!accuracyAware || opts.method === undefined)) {
    progress('checking the quantized model against the float one')
    const {check: checkOf} = await onCalibration(batchSize)
    const attempt = async (method: CalibrationMethod) => {
      const ranges = (ctx.ranges = rangesBy!(method))
      const built = buildFirst()
      return {method, ranges, built: built as Built | undefined, check: {method, ...(await checkOf(built))}}
    }
    const tried = [await attempt(opts.method ?? 'minmax')]
    if (opts.method === undefined) {
      // One quantized copy of the model at a time (a large model's copy is large): the one the
      // comparison keeps is built again if it was the first.
      tried[0]!.built = undefined
      tried.push(await attempt('average'))
    }
    // A collapsed model loses to one that is not; otherwise the higher output SQNR wins (min/max on a tie).
    const score = (c: CalibrationCheck) => (collapsing(c) ? -1e9 : 0) + c.sqnrDb
    const kept = tried.reduce((a, b) => (score(b.check) > score(a.check) ? b : a))
    ctx.ranges = kept.ranges
    if (tried.length > 1) {
      report.calibration!.compared = tried.map((t) => t.check)
      report.calibration!.method = kept.method
      report.settings.method = kept.method
      log(`calibration: ${describeComparison(report.calibration!.compared, kept.method)}`)
    }
    const {samples, agreement: agree, sqnrDb} = kept.check
    report.calibrationCheck = {samples, agreement: agree, sqnrDb}
    if (!accuracyAware && collapsing(kept.check)) {
      const minmax = tried.find((t) => t.method === 'minmax')
      // The diagnosis speaks of the ranges the user asked for, or of min/max when none was asked.
      const told = opts.method ? kept : (minmax ?? kept)
      throw collapsed(told.check, {...opts, method: told.method}, work, told.ranges, calibrationStats)
    }
    checked = {...kept, built: kept.built ?? buildFirst()}
  }

  // Static, hardware-aware: time every weighted op alone in float and int8 on the profile; when
  // some lose, a candidate keeps just those in float (the whole-model A/B below still decides).
  if (opts.mode === 'static' && measureSpeed && weightedPlanned.length <= MAX_TIMED_NODES) {
    progress('timing each weighted op in float and int8')
    const seen = new Map([...(calibrationStats ?? [])].map(([k, st]) => [k, st.dims]))
    const timings = await timeNodes(work, weightedPlanned, ctx.meta!, seen, ctx.ranges!, {
      batches, profile: opts.profile, activations, symmetric: ctx.symmetric, reduceRange, signal: opts.signal,
    })
    report.nodeTimings = timings.map((t) => ({...t, floatUs: Math.round(t.floatUs), int8Us: Math.round(t.int8Us)}))
    const losers = timings.filter((t) => t.int8Us > t.floatUs * GAIN_THRESHOLD)
    if (losers.length > 0 && losers.length < timings.length) {
      const why = (t: NodeTiming) => `not faster in int8 on ${opts.profile.name} (${t.int8Us.toFixed(0)} µs vs ${t.floatUs.toFixed(0)} µs in float)`
      mixes.splice(1, 0, {name: 'only the ops that gain', arith: true, keepFloat: new Map(losers.map((t) => [t.node, why(t)]))})
    }
  }
  // Accuracy: baseline predictions once, then each candidate against them.
  let fp32Eval: Awaited<ReturnType<typeof evaluate>> | undefined
  if (opts.eval) {
    progress('evaluating fp32')
    fp32Eval = await dataContext('evaluation', () => evaluate(opts.input, batchesOf(opts.eval!), opts.profile, opts.signal))
  }
  const accuracyOf = async (bytes: Uint8Array) => {
    const q = await evaluate(bytes, batchesOf(opts.eval!), opts.profile, opts.signal, fp32Eval!.threshold)
    const agree = agreement(fp32Eval!.predictions, q.predictions)
    const drop = fp32Eval!.accuracy !== undefined && q.accuracy !== undefined ? fp32Eval!.accuracy - q.accuracy : 1 - agree
    return {q, agree, drop}
  }

  let extraExcluded = new Set<string>()
  if (accuracyAware) {
    progress('checking accuracy')
    const first = build({mix: mixes[0]!, extraExcluded}, false)
    if (Object.keys(first.quantizedNodes).length === 0) throw noQuantizableOps(work, opts.mode)
    let acc = await accuracyOf(modelToBytes(first.model))
    if (acc.drop > opts.maxAccuracyDrop!) {
      progress('measuring node sensitivity')
      const sample: Batch[] = []
      // Read to the end (a limited spec) rather than break: the reader prefetches the next batch.
      const few = Math.min(batchSize, 8)
      for await (const b of readBatches({...opts.eval!, limit: Math.min(opts.eval!.limit ?? Infinity, few * 2)}, {batchSize: few, inputs, signal: opts.signal})) sample.push(b)
      // A unit's harm is the model's output SQNR with that unit alone quantized. (Inside the fully
      // quantized model a tensor's SQNR mostly shows the error of everything before it.) Many units,
      // or a large model: the ones that look worst there are measured alone, within a bound.
      let ranked = first.units
      if (ranked.length > 8) {
        const sq = await tensorSqnr(await readModel(opts.input), first.model, first.units.map((u) => [u.ref, u.test]), sample, opts.profile)
        ranked = [...ranked].sort((a, b) => (sq.get(a.ref) ?? Infinity) - (sq.get(b.ref) ?? Infinity))
      }
      const measured = ranked.slice(0, MAX_SENSITIVITY_UNITS)
      const reference = await referenceOutputs(opts.input, sample, opts.profile)
      const everyKey = first.units.map((u) => u.key)
      const table: {key: string; node: string; opType: string; sqnrDb: number}[] = []
      const since = performance.now()
      for (const u of measured) {
        if (opts.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
        if (table.length >= 8 && performance.now() - since > SENSITIVITY_BUDGET_MS) break
        const alone = build({mix: mixes[0]!, extraExcluded: new Set(everyKey.filter((k) => k !== u.key))}, false)
        const {sqnrDb} = await outputAgreement(reference, modelToBytes(alone.model), sample, opts.profile)
        if (Number.isFinite(sqnrDb)) table.push({key: u.key, node: u.node, opType: u.opType, sqnrDb})
      }
      table.sort((a, b) => a.sqnrDb - b.sqnrDb)
      report.sensitivity = table.map(({node, opType, sqnrDb}) => ({node, opType, sqnrDb: Math.round(sqnrDb * 100) / 100}))
      // Fallback order: the units measured alone, most harmful first, then the others as they looked in the quantized model.
      const inTable = new Set(table.map((r) => r.key))
      const order = [...table.map((r) => r.key), ...ranked.map((u) => u.key).filter((k) => !inTable.has(k))]
      for (let k = 1; acc.drop > opts.maxAccuracyDrop! && k <= order.length * 2; k *= 2) {
        extraExcluded = new Set(order.slice(0, Math.min(k, order.length)))
        const next = build({mix: mixes[0]!, extraExcluded}, false)
        acc = await accuracyOf(modelToBytes(next.model))
        log(`accuracy-aware: ${extraExcluded.size} node(s) in float → drop ${(acc.drop * 100).toFixed(2)} points`)
        if (k >= order.length) break
      }
      // Doubling overshoots: narrow down between the last failing and the first passing count.
      const keys = (n: number) => new Set(order.slice(0, n))
      let hi = extraExcluded.size
      let lo = Math.floor(hi / 2)
      for (let step = 0; acc.drop <= opts.maxAccuracyDrop! && hi - lo > 1 && step < 3; step++) {
        const mid = Math.floor((lo + hi) / 2)
        const trial = await accuracyOf(modelToBytes(build({mix: mixes[0]!, extraExcluded: keys(mid)}, false).model))
        log(`accuracy-aware: ${mid} in float → drop ${(trial.drop * 100).toFixed(2)} points`)
        if (trial.drop <= opts.maxAccuracyDrop!) hi = mid
        else lo = mid
      }
      if (acc.drop <= opts.maxAccuracyDrop!) extraExcluded = keys(hi)
      report.fallback = [...extraExcluded]
    }
  }

  // Candidates: each mix built, checked for accuracy, timed against the input.
  let best: {built: Built; bytes: Uint8Array; score: number; name: string} | undefined
  for (const mix of mixes) {
    // The first mix was built already for the check above; the same build serves here.
    const built = mix === mixes[0] && checked && !accuracyAware ? checked.built : build({mix, extraExcluded}, mixes.length === 1 && !accuracyAware)
    if (mixes.length === 1) detachTensors(built.model)
    const cand: CandidateReport = {name: mix.name, quantizedNodes: built.quantizedNodes, accepted: false, reason: ''}
    report.candidates.push(cand)
    if (Object.keys(built.quantizedNodes).length === 0) {
      cand.reason = 'nothing to quantize in this mix'
      continue
    }
    const bytes = modelToBytes(built.model)
    await (await sessionFor(bytes, opts.profile)).release()
    if (opts.eval) {
      const acc = await accuracyOf(bytes)
      cand.accuracy = acc.q.accuracy
      cand.agreement = acc.agree
      if (opts.maxAccuracyDrop !== undefined && acc.drop > opts.maxAccuracyDrop) {
        cand.reason = `accuracy drop ${(acc.drop * 100).toFixed(2)} points exceeds ${(opts.maxAccuracyDrop * 100).toFixed(2)}`
        continue
      }
    }
    let score = Number.POSITIVE_INFINITY
    if (measureSpeed) {
      progress(`timing ${mix.name} against the input`)
      try {
        const feeds = async (b: number) => {
          const t = timing.get(b)
          if (t && 'error' in t) throw t.error
          return t ? t.inputs : syntheticInputs(inputs, b)
        }
        cand.latency = await latencyAB(opts.input, bytes, opts.profile, batches, feeds, opts.signal)
        score = Math.min(...cand.latency.map((r) => r.speedup))
        if (cand.latency.some((r) => r.verdict === 'slower')) score = Math.min(score, 0.999)
      } catch (error) {
        if (error instanceof KilnError && error.code === 'E_ABORTED') throw error
        // Never slower means measured: a candidate whose speed could not be measured is not shipped.
        cand.reason = `latency not measured, so not shipped: ${(error as Error).message}`
        continue
      }
      // Slower: measured slower with confidence, or a point estimate clearly under 1 even if noisy.
      if (cand.latency?.some((r) => r.verdict === 'slower' || r.speedup < MIN_SPEEDUP)) {
        cand.reason = `slower than the input (${score.toFixed(2)}× at worst)`
        continue
      }
    }
    cand.accepted = true
    cand.reason ||= measureSpeed ? `${score.toFixed(2)}× the input's speed at worst` : 'accepted'
    if (!best || score > best.score) best = {built, bytes, score, name: mix.name}
    if (!measureSpeed) break
  }

  if (report.fallback.length === 0 && report.candidates.every((c) => Object.keys(c.quantizedNodes).length === 0)) throw noQuantizableOps(work, opts.mode)
  if (!best) {
    await atomicWriteFile(opts.output, await fsp.readFile(opts.input))
    report.decision = 'kept-input'
    const why = report.candidates.map((c) => `${c.name}: ${c.reason}`).join('; ')
    report.message = `kept the input model unchanged: no quantized variant was both accurate enough and faster on ${opts.profile.name} (${why})`
    report.leftFloat = []
    report.outputBytes = inputBytes
  } else {
    report.chosen = best.name
    report.quantizedNodes = best.built.quantizedNodes
    report.leftFloat = best.built.leftFloat
    const written = best.bytes.length < 1.8 * 2 ** 30 ? (await atomicWriteFile(opts.output, best.bytes), {bytes: best.bytes.length}) : await writeModel(best.built.model, opts.output)
    report.outputBytes = written.bytes
    const count = Object.values(best.built.quantizedNodes).reduce((a, b) => a + b, 0)
    report.message = `${opts.mode}: ${count} node(s) quantized (${best.name})${Number.isFinite(best.score) ? `, ${best.score.toFixed(2)}× the input's speed` : ''}`
  }
  report.sizeRatio = report.inputBytes ? report.outputBytes / report.inputBytes : 1
  const chosen = report.candidates.find((c) => c.accepted && c.name === report.chosen)
  if (fp32Eval) {
    report.accuracy = {samples: fp32Eval.samples, fp32: fp32Eval.accuracy, quantized: report.decision === 'kept-input' ? fp32Eval.accuracy : chosen?.accuracy, agreement: report.decision === 'kept-input' ? 1 : (chosen?.agreement ?? 0), maxDrop: opts.maxAccuracyDrop}
    if (report.accuracy.fp32 !== undefined && report.accuracy.quantized !== undefined) report.accuracy.drop = report.accuracy.fp32 - report.accuracy.quantized
  }
  report.seconds = (performance.now() - started) / 1000
  log(report.message)
  return report
}

/** Dataset errors name the role the data plays here, and always say what to try. */
async function dataContext<T>(role: 'calibration' | 'evaluation', fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (error) {
    if (!(error instanceof KilnError) || !error.code.startsWith('E_DATA')) throw error
    throw new KilnError(`${role} data: ${error.message}`, {
      code: error.code,
      exitCode: error.exitCode,
      cause: error,
      tryMessage: error.tryMessage ?? `Give an .npz with at least one sample, whose arrays are named after the model's inputs and shaped like them.`,
    })
  }
}

function staticOpts(ctx: ModeContext, excluded: (n: NodeProto) => boolean) {
  return {perChannel: ctx.perChannel, activations: ctx.activations, symmetricActivations: ctx.symmetric, reduceRange: ctx.reduceRange, excluded}
}

/** Accuracy-aware mode measures at most this many units alone (each is one build and one run of the sample), */
const MAX_SENSITIVITY_UNITS = 96
/** for at most about this long (once 8 are measured); the rest stay in their quantized-model order. */
const SENSITIVITY_BUDGET_MS = 60_000

/** An op must run in at most this fraction of its float time in int8 to count as gaining. */
const GAIN_THRESHOLD = 0.9

/** A quantized model this far from the float one on its own calibration data (agreement and output SQNR in dB) has collapsed. */
const COLLAPSE_AGREEMENT = 0.8
const COLLAPSE_SQNR_DB = 20
/** Calibration samples a built model is checked on against the float one. */
const CHECK_SAMPLES = 64
/** fp16 output SQNR (dB, against float on calibration samples) below which value ranges are scanned. */
const FP16_CHECK_SQNR_DB = 40
/** Ops whose outputs never reach further from zero than their inputs (or are bounded): no range to check. */
const RANGE_BOUNDED_OPS = new Set(['Constant', 'Relu', 'Clip', 'Sigmoid', 'HardSigmoid', 'Tanh', 'Softmax', 'LogSoftmax', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'GlobalMaxPool', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'Reshape', 'Transpose', 'Flatten', 'Squeeze', 'Unsqueeze', 'Concat', 'Split', 'Slice', 'Gather', 'Identity', 'Resize', 'Expand', 'Tile', 'Shape', 'Cast'])

/** A static model checked against the float one on calibration samples. */
export interface CalibrationCheck {
  method: CalibrationMethod
  samples: number
  agreement: number
  sqnrDb: number
}

/** Too far from the float model to ship: most predictions changed and the outputs mostly noise. */
function collapsing(c: {agreement: number; sqnrDb: number}): boolean {
  return c.agreement < COLLAPSE_AGREEMENT && c.sqnrDb < COLLAPSE_SQNR_DB
}

/** Why one calibration method was kept over the other, in one line. */
export function describeComparison(compared: CalibrationCheck[], kept: CalibrationMethod): string {
  const k = compared.find((c) => c.method === kept)!
  const others = compared.filter((c) => c.method !== kept)
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`
  return `${kept} ranges kept over ${others.map((o) => o.method).join(', ')}: output SQNR ${k.sqnrDb.toFixed(1)} dB vs ${others.map((o) => `${o.sqnrDb.toFixed(1)} dB${collapsing(o) ? ' (collapsed)' : ''}`).join(', ')}, agreement ${pct(k.agreement)} vs ${others.map((o) => pct(o.agreement)).join(', ')} on ${k.samples} calibration samples`
}

/**
 * The error for a collapsed static model, with what likely did it: with a clipping method, the
 * tensors it clipped hardest (observed range against the range kept).
 */
function collapsed(check: {samples: number; agreement: number; sqnrDb: number}, opts: QuantizeOptions, model: ModelProto, ranges: Map<string, {min: number; max: number}>, stats?: Map<string, TensorStats>): KilnError {
  const method = opts.method ?? 'minmax'
  const producers = new Map<string, NodeProto>()
  for (const {node} of allNodes(model)) for (const o of node.output) producers.set(o, node)
  const clipped = [...(stats ?? [])]
    .map(([name, st]) => {
      const r = ranges.get(name) ?? {min: 0, max: 0}
      const seen = Math.max(Math.abs(st.min), Math.abs(st.max))
      const kept = Math.max(Math.abs(r.min), Math.abs(r.max))
      return {name, st, r, ratio: kept > 0 ? seen / kept : 1}
    })
    .filter((c) => c.ratio > 1.5)
    .sort((a, b) => b.ratio - a.ratio)
  const where = (t: string) => {
    const p = producers.get(t)
    return p ? `${p.opType} ${p.name || t}` : t
  }
  const clip = clipped.slice(0, 3).map((c) => `${where(c.name)}: seen [${c.st.min.toPrecision(3)}, ${c.st.max.toPrecision(3)}], kept [${c.r.min.toPrecision(3)}, ${c.r.max.toPrecision(3)}]`)
  const clipping =
    method !== 'minmax' && method !== 'average' && clipped.length
      ? ` The ${method} method clipped ${clipped.length} activation range${clipped.length > 1 ? 's' : ''} to less than 2/3 of what the data reaches; the most: ${clip.join('; ')}.`
      : ''
  const outliers = method === 'average' ? undefined : outlyingSamples(stats, ranges)
  const span = (r: {min: number; max: number}) => `[${r.min.toPrecision(3)}, ${r.max.toPrecision(3)}]`
  const stretched = outliers
    ? ` A few calibration samples set ${outliers.tensors.length} activation range${outliers.tensors.length > 1 ? 's' : ''} at more than ${OUTLIER_RATIO}× what the typical sample reaches, most often sample${outliers.samples.length > 1 ? 's' : ''} ${outliers.samples.join(', ')} (in the order read, from 0); the most: ${outliers.tensors
        .slice(0, 3)
        .map((c) => `${where(c.name)}: the average sample reaches ${span(c.st.averageRange())}, sample ${c.st.peak!.sample} ${span(c.st.peak!)}`)
        .join('; ')}.`
    : ''
  const why = clipping + stretched
  return new KilnError(
    `static int8 quantization collapsed: on ${check.samples} calibration samples the quantized model agrees with the float one on ${(check.agreement * 100).toFixed(1)}% of predictions (output SQNR ${check.sqnrDb.toFixed(1)} dB).${why}`,
    {
      code: 'E_QUANT_COLLAPSE',
      tryMessage: `${outliers ? "Calibrate with --method average (each sample's own range, averaged), or leave those samples out of the calibration data. " : method !== 'minmax' ? 'Calibrate with --method minmax or --method percentile (or a higher --percentile). ' : ''}${opts.perChannel === false ? 'Use per-channel weights (drop --no-per-channel). ' : ''}Or give --eval DATA with --max-accuracy-drop X, so that the most sensitive nodes fall back to float until the drop holds.`,
    },
  )
}

/** How far past the typical sample's range a range must reach to count as set by a few samples. */
const OUTLIER_RATIO = 4

/**
 * Activation ranges that a few samples stretched far past what the typical sample reaches (a blank
 * image among photos), with the samples that did it most often. Undefined when there are none.
 */
function outlyingSamples(stats: Map<string, TensorStats> | undefined, ranges: Map<string, {min: number; max: number}>): {tensors: {name: string; st: TensorStats}[]; samples: number[]} | undefined {
  const reach = (r: {min: number; max: number}) => Math.max(Math.abs(r.min), Math.abs(r.max))
  const tensors = [...(stats ?? [])]
    .filter(([name, st]) => st.peak && st.samples > 1 && ranges.has(name))
    .map(([name, st]) => ({name, st, ratio: reach(ranges.get(name)!) / Math.max(1e-12, reach(st.averageRange()))}))
    .filter((c) => c.ratio > OUTLIER_RATIO)
    .sort((a, b) => b.ratio - a.ratio)
  if (!tensors.length) return undefined
  const counts = new Map<number, number>()
  for (const c of tensors) counts.set(c.st.peak!.sample, (counts.get(c.st.peak!.sample) ?? 0) + 1)
  const samples = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k]) => k)
  return {tensors, samples}
}

function noQuantizableOps(model: ModelProto, mode: QuantizeMode): KilnError {
  const ops = new Map<string, number>()
  for (const {node} of allNodes(model)) ops.set(node.opType, (ops.get(node.opType) ?? 0) + 1)
  const want = mode === 'int4' ? 'MatMul or Gemm with constant 2-D weights' : 'Conv/MatMul/Gemm with constant weights'
  return new KilnError(`no quantizable ops for ${mode} quantization: the model has no ${want}`, {
    code: 'E_QUANT_NOTHING',
    tryMessage: `Its ops: ${[...ops.keys()].slice(0, 12).join(', ')}. Try another mode, or check --exclude.`,
  })
}

/** A batch to time on: the data's first samples, or why they could not be read (undefined: generated inputs). */
type TimingInput = {inputs: Batch['inputs']} | {error: unknown} | undefined

/**
 * The inputs to time at each batch size, read once for every candidate. Batch sizes the data
 * cannot make are left out: a model whose inputs have no batch axis of their own runs one sample at
 * a time, so it is timed at batch 1 rather than not at all.
 */
async function timingInputs(wanted: number[], data: DatasetSpec | undefined, inputs: InputMeta[], signal?: AbortSignal): Promise<Map<number, TimingInput>> {
  const out = new Map<number, TimingInput>()
  const read = async (b: number): Promise<TimingInput | 'impossible'> => {
    if (!data) return undefined
    try {
      return {inputs: await sampleBatch(data, inputs, b, signal)}
    } catch (error) {
      if (error instanceof KilnError && error.code === 'E_ABORTED') throw error
      return error instanceof KilnError && error.code === 'E_DATA_BATCH' ? 'impossible' : {error}
    }
  }
  for (const b of wanted) {
    const t = await read(b)
    if (t !== 'impossible') out.set(b, t)
  }
  // Every dataset makes a batch of one.
  if (out.size === 0) out.set(1, (await read(1)) as TimingInput)
  return out
}

function timingBatches(profile: HardwareProfile, fixedBatch?: number): number[] {
  if (fixedBatch) return [fixedBatch]
  return profile.batch?.length ? profile.batch : [1]
}



