#!/usr/bin/env tsx
// Pruning, low-rank and clustering on the trained Fashion-MNIST MLP and CNN, measured on the full
// 10k test set, plus clustering on a real model. Every ratio is against a baseline measured in the
// same run.
//
//   npx tsx bench/prune.ts            everything (a few minutes on 2 cores)
//   npx tsx bench/prune.ts --quick    1,000 test images, fewer latency rounds
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {clusterFile} from '../src/compress/cluster.js'
import {lowrankFile} from '../src/compress/lowrank.js'
import {modelFileSizes} from '../src/compress/prune-io.js'
import {pruneFile} from '../src/compress/prune.js'
import {quantizeModel} from '../src/compress/quant/index.js'
import {readNpz} from '../src/data/npy.js'
import {getProfile} from '../src/runtime/profiles.js'
import {benchmarkAB} from '../src/runtime/bench.js'
import {createSession, loadOrt} from '../src/runtime/ort.js'
import {MODELS, ensureTrainedModels} from '../test/helpers/fixtures.js'

const quick = process.argv.includes('--quick')
const trained = ensureTrainedModels()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-prune-'))
const profile = getProfile('cpu-2t')
const rows: Record<string, unknown>[] = []

const test = await readNpz(trained.test)
const images = test.get('input')!
const labels = test.get('labels')!
const count = quick ? 1000 : images.shape[0]!

async function accuracy(file: string): Promise<number> {
  const ort = await loadOrt()
  const session = await createSession(file, {threads: 2})
  const per = 28 * 28
  let hit = 0
  for (let start = 0; start < count; start += 500) {
    const n = Math.min(500, count - start)
    const x = new ort.Tensor('float32', (images.data as Float32Array).subarray(start * per, (start + n) * per), [n, 1, 28, 28])
    const out = (await session.run({input: x})).logits!.data as Float32Array
    for (let i = 0; i < n; i++) {
      let best = 0
      for (let c = 1; c < 10; c++) if (out[i * 10 + c]! > out[i * 10 + best]!) best = c
      if (best === Number(labels.data[start + i])) hit++
    }
  }
  await session.release()
  return hit / count
}

async function record(model: string, variant: string, file: string, base: {acc: number; raw: number; zstd: number}, extra: Record<string, unknown> = {}): Promise<void> {
  const acc = await accuracy(file)
  const sizes = await modelFileSizes(file)
  const row = {
    model,
    variant,
    accuracy: Number(acc.toFixed(4)),
    dropPoints: Number(((base.acc - acc) * 100).toFixed(2)),
    rawBytes: sizes.raw,
    zstdBytes: sizes.zstd,
    smallerThanFp32Raw: Number((base.raw / sizes.zstd).toFixed(2)),
    ...extra,
  }
  rows.push(row)
  console.log(JSON.stringify(row))
}

/** Candidate latency / baseline latency (below 1 is faster), paired A/B in one process. */
async function latencyRatio(baseline: string, candidate: string, batch: number): Promise<{ratio: number; low: number; high: number}> {
  const ab = await benchmarkAB({baseline, candidate}, profile, {batch: [batch], rounds: quick ? 6 : 30, iterations: quick ? 120 : 900, warmup: 20, compressedSize: false})
  const c = ab.comparisons[0]!
  return {ratio: Number((1 / c.speedup).toFixed(3)), low: Number((1 / c.high).toFixed(3)), high: Number((1 / c.low).toFixed(3))}
}

for (const name of ['mlp', 'cnn'] as const) {
  const fp32 = trained[name]
  const s = await modelFileSizes(fp32)
  const base = {acc: await accuracy(fp32), raw: s.raw, zstd: s.zstd}
  rows.push({model: name, variant: 'fp32', accuracy: base.acc, rawBytes: s.raw, zstdBytes: s.zstd})
  console.log(JSON.stringify(rows.at(-1)))

  for (const sparsity of [0.5, 0.7, 0.8]) {
    const pruned = path.join(dir, `${name}-p${sparsity}.onnx`)
    await pruneFile(fp32, pruned, {sparsity, scope: 'global'})
    await record(name, `magnitude ${sparsity} global`, pruned, base)
    const q = path.join(dir, `${name}-p${sparsity}-int8.onnx`)
    const report = await quantizeModel({
      input: pruned,
      output: q,
      mode: 'static',
      calibration: {name: 'calib', path: trained.calib},
      profile,
      neverSlower: false,
    })
    await record(name, `magnitude ${sparsity} + int8 static (${report.decision}) + zstd`, q, base)
  }

  // Clustering the surviving weights (float storage) before int8 leaves few distinct codes per
  // channel, which zstd then packs into a few bits each.
  for (const k of [8, 16]) {
    const pruned = path.join(dir, `${name}-p0.5.onnx`)
    const clustered = path.join(dir, `${name}-p0.5-k${k}.onnx`)
    await clusterFile(pruned, clustered, {clusters: k, storage: 'float'})
    const q = path.join(dir, `${name}-p0.5-k${k}-int8.onnx`)
    const report = await quantizeModel({input: clustered, output: q, mode: 'static', calibration: {name: 'calib', path: trained.calib}, profile, neverSlower: false})
    await record(name, `magnitude 0.5 + cluster k=${k} + int8 static (${report.decision}) + zstd`, q, base)
  }
  {
    // Sensitivity-guided: per-layer ratios chosen on the calibration images (agreement with fp32), not the test set.
    const planned = path.join(dir, `${name}-planned.onnx`)
    try {
      const r = await pruneFile(fp32, planned, {sparsity: 0.5, eval: {dataset: {name: 'calib', path: trained.calib}, maxAccuracyDrop: 0.03, samples: 256}})
      await record(name, 'sensitivity plan 0.5 (calib agreement drop <= 3%)', planned, base, {plan: r.sensitivity!.plan.map((p) => `${p.layer}:${p.ratio.toFixed(2)}`).join(' ')})
    } catch (error) {
      rows.push({model: name, variant: 'sensitivity plan 0.5', failed: (error as Error).message})
      console.log(JSON.stringify(rows.at(-1)))
    }
  }

  const lr = path.join(dir, `${name}-lowrank.onnx`)
  const lrr = await lowrankFile(fp32, lr, {energy: 0.9})
  await record(name, 'lowrank energy 0.9', lr, base, {factorised: lrr.factorised, paramsBefore: lrr.params.before, paramsAfter: lrr.params.after})

  for (const storage of ['codebook', 'float'] as const) {
    const cl = path.join(dir, `${name}-k16-${storage}.onnx`)
    await clusterFile(fp32, cl, {clusters: 16, storage})
    await record(name, `cluster k=16 ${storage}`, cl, base, {latencyRatioB32: await latencyRatio(fp32, cl, 32)})
  }

  if (name === 'cnn') {
    for (const [ratio, multiple] of [[0.3, 1], [0.3, 8], [0.3, 16], [0.5, 8]] as const) {
      const ch = path.join(dir, `cnn-ch${ratio}-${multiple}.onnx`)
      const r = await pruneFile(fp32, ch, {sparsity: ratio, method: 'channel', criterion: 'l1', channelMultiple: multiple})
      await record(name, `channel ${ratio} l1 multiple ${multiple} (kept ${r.channel!.groups.map((g) => g.kept).join('/')})`, ch, base, {
        flopsRatio: Number((r.flops!.after / r.flops!.before).toFixed(3)),
        latencyRatioB1: await latencyRatio(fp32, ch, 1),
        latencyRatioB32: await latencyRatio(fp32, ch, 32),
      })
    }
  }
}

// Clustering on a real vendor model: size with zstd, and latency of the in-graph codebook decode.
for (const storage of ['codebook', 'float'] as const) {
  const out = path.join(dir, `ocrRec-k16-${storage}.onnx`)
  const r = await clusterFile(MODELS.ocrRec, out, {clusters: 16, storage})
  const row = {
    model: 'ppocr_rec_v4',
    variant: `cluster k=16 ${storage}`,
    rawBefore: r.sizes.before.raw,
    zstdBefore: r.sizes.before.zstd,
    rawAfter: r.sizes.after.raw,
    zstdAfter: r.sizes.after.zstd,
    zstdRatio: Number((r.sizes.before.zstd / r.sizes.after.zstd).toFixed(2)),
    latencyRatioB1: (await benchmarkAB({baseline: MODELS.ocrRec, candidate: out}, profile, {batch: [1], rounds: quick ? 4 : 10, iterations: quick ? 20 : 60, warmup: 5, dims: {'p2o.DynamicDimension.1': 320}, compressedSize: false})).comparisons[0]!.speedup ** -1,
  }
  rows.push(row)
  console.log(JSON.stringify(row))
}

console.log('\n| model | variant | accuracy | drop (pts) | raw bytes | zstd bytes | fp32 raw / zstd | extra |')
console.log('|---|---|---|---|---|---|---|---|')
for (const r of rows) {
  const {model, variant, accuracy, dropPoints, rawBytes, zstdBytes, smallerThanFp32Raw, ...extra} = r
  console.log(`| ${model} | ${variant} | ${accuracy ?? ''} | ${dropPoints ?? ''} | ${rawBytes ?? ''} | ${zstdBytes ?? ''} | ${smallerThanFp32Raw ?? ''} | ${JSON.stringify(extra)} |`)
}
