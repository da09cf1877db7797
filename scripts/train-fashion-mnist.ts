#!/usr/bin/env tsx
// Train the two Fashion-MNIST example models (an MLP and a small CNN with BatchNormalization) with
// TF.js on the WASM backend, export each to ONNX by writing the graph directly, check the ONNX
// outputs against TF.js, and write the models plus test/calibration sets into <fixtures>/trained/.
//
//   npx tsx scripts/train-fashion-mnist.ts           train when missing or when this script changed
//   npx tsx scripts/train-fashion-mnist.ts --force   retrain
//
// Deterministic: fixed seeds for initialisation and sample order, single-threaded WASM kernels.
import {createHash} from 'node:crypto'
import * as fs from 'node:fs'
import {createRequire} from 'node:module'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import * as tf from '@tensorflow/tfjs'
import {setWasmPaths} from '@tensorflow/tfjs-backend-wasm'
import {seededRandom} from '../src/data/random.js'
import {makeGraph, makeModel, makeNode, makeValueInfo} from '../src/onnx/build.js'
import {writeModel} from '../src/onnx/model.js'
import {DataType} from '../src/onnx/proto.js'
import {makeTensor} from '../src/onnx/tensor.js'
import {readIdx} from '../src/data/idx.js'
import {writeNpz} from '../src/data/npz-write.js'
import {createSession, loadOrt} from '../src/runtime/ort.js'
import {atomicWriteFile} from '../src/util/fs.js'
// @ts-expect-error plain JS script without types
import {FIXTURES_DIR, fetchFixtures} from './fetch-fixtures.js'

const SCRIPT = fileURLToPath(import.meta.url)
const OUT = path.join(FIXTURES_DIR as string, 'trained')
const DATA = path.join(FIXTURES_DIR as string, 'data', 'fashion-mnist')
const OUTPUTS = ['fashion_mlp.onnx', 'fashion_cnn.onnx', 'fashion_test.npz', 'fashion_calib.npz', 'meta.json']

const SEED = 20_241_128
const MLP = {trainSamples: 20_000, epochs: 2, batch: 128, lr: 2e-3}
const CNN = {trainSamples: 6_000, epochs: 2, batch: 64, lr: 3e-3}
const CALIB = 256

/** Hash of this script: the cache key of the outputs. */
export function scriptHash(): string {
  return createHash('sha256').update(fs.readFileSync(SCRIPT)).digest('hex')
}

function heNormal(shape: number[], fanIn: number, rand: () => number): tf.Variable {
  const n = shape.reduce((a, b) => a * b, 1)
  const values = new Float32Array(n)
  const std = Math.sqrt(2 / fanIn)
  for (let i = 0; i < n; i++) {
    // Box–Muller
    const u = Math.max(rand(), 1e-12)
    values[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand())
  }
  return tf.variable(tf.tensor(values, shape))
}

const zeros = (shape: number[]): tf.Variable => tf.variable(tf.zeros(shape))
const ones = (shape: number[]): tf.Variable => tf.variable(tf.ones(shape))

/**
 * 3×3 'same' convolution with a hand-written filter gradient: the WASM backend has no
 * Conv2DBackpropFilter kernel. The filter gradient is itself a convolution, of the input (channels
 * as batch) with the output gradient (batch as channels).
 */
const conv3x3 = tf.customGrad((x, w, save) => {
  ;(save as (t: tf.Tensor[]) => void)([x as tf.Tensor, w as tf.Tensor])
  const y = tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same')
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D]
      const dx = tf.conv2dTranspose(dy as tf.Tensor4D, ws, xs.shape, 1, 'same')
      const xt = tf.transpose(xs, [3, 1, 2, 0]) as tf.Tensor4D // [Ci,H,W,N]
      const dyt = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D // [H,W,N,Co]
      const dw = tf.transpose(tf.conv2d(xt, dyt, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]), [1, 2, 0, 3]) // [3,3,Ci,Co]
      return [dx, dw]
    },
  }
}) as (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D

interface Bn {
  gamma: tf.Variable
  beta: tf.Variable
  mean: Float32Array
  variance: Float32Array
}
const BN_EPS = 1e-3
const BN_MOMENTUM = 0.9

function makeBn(c: number): Bn {
  return {gamma: ones([c]), beta: zeros([c]), mean: new Float32Array(c), variance: new Float32Array(c).fill(1)}
}

/** Batch norm: batch statistics while training (recording running averages), running ones otherwise. */
function batchNorm(x: tf.Tensor4D, bn: Bn, training: boolean, updates: (() => void)[]): tf.Tensor4D {
  if (!training) {
    return tf.batchNorm4d(x, tf.tensor1d(bn.mean), tf.tensor1d(bn.variance), bn.beta as tf.Tensor1D, bn.gamma as tf.Tensor1D, BN_EPS)
  }
  const {mean, variance} = tf.moments(x, [0, 1, 2])
  const m = mean.dataSync().slice()
  const v = variance.dataSync().slice()
  const n = x.shape[0] * x.shape[1] * x.shape[2]
  updates.push(() => {
    for (let i = 0; i < m.length; i++) {
      bn.mean[i] = BN_MOMENTUM * bn.mean[i]! + (1 - BN_MOMENTUM) * m[i]!
      // Unbiased variance for the running estimate, as the usual frameworks do.
      bn.variance[i] = BN_MOMENTUM * bn.variance[i]! + (1 - BN_MOMENTUM) * v[i]! * (n / (n - 1))
    }
  })
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, BN_EPS))), bn.gamma), bn.beta) as tf.Tensor4D
}

interface Net {
  name: string
  vars: tf.Variable[]
  forward(x: tf.Tensor4D, training: boolean, updates: (() => void)[]): tf.Tensor2D
  toOnnx(): ReturnType<typeof makeModel>
}

function mlp(rand: () => number): Net {
  const sizes = [784, 256, 128, 10]
  const w = sizes.slice(1).map((n, i) => heNormal([sizes[i]!, n], sizes[i]!, rand))
  const b = sizes.slice(1).map((n) => zeros([n]))
  return {
    name: 'mlp',
    vars: [...w, ...b],
    forward(x) {
      let h: tf.Tensor2D = tf.reshape(x, [x.shape[0], 784])
      for (let i = 0; i < w.length; i++) {
        h = tf.add(tf.matMul(h, w[i]!), b[i]!)
        if (i < w.length - 1) h = tf.relu(h)
      }
      return h
    },
    toOnnx() {
      const nodes = [makeNode('Flatten', ['input'], ['flat'], {axis: 1}, {name: 'flatten'})]
      const inits = []
      let prev = 'flat'
      for (let i = 0; i < w.length; i++) {
        const out = i === w.length - 1 ? 'logits' : `fc${i + 1}`
        inits.push(floatInit(`fc${i + 1}.weight`, w[i]!), floatInit(`fc${i + 1}.bias`, b[i]!))
        nodes.push(makeNode('Gemm', [prev, `fc${i + 1}.weight`, `fc${i + 1}.bias`], [out], {}, {name: `fc${i + 1}`}))
        if (i < w.length - 1) {
          nodes.push(makeNode('Relu', [out], [`relu${i + 1}`], {}, {name: `relu${i + 1}`}))
          prev = `relu${i + 1}`
        }
      }
      return wrap('fashion_mlp', nodes, inits)
    },
  }
}

function cnn(rand: () => number): Net {
  const w1 = heNormal([3, 3, 1, 16], 9, rand)
  const bn1 = makeBn(16)
  const w2 = heNormal([3, 3, 16, 32], 9 * 16, rand)
  const bn2 = makeBn(32)
  const w3 = heNormal([3, 3, 32, 64], 9 * 32, rand)
  const b3 = zeros([64])
  const wd = heNormal([7 * 7 * 64, 10], 7 * 7 * 64, rand)
  const bd = zeros([10])
  return {
    name: 'cnn',
    vars: [w1, bn1.gamma, bn1.beta, w2, bn2.gamma, bn2.beta, w3, b3, wd, bd],
    forward(x, training, updates) {
      let h = tf.relu(batchNorm(conv3x3(x, w1 as tf.Tensor4D), bn1, training, updates))
      h = tf.maxPool(h, 2, 2, 'valid')
      h = tf.relu(batchNorm(conv3x3(h, w2 as tf.Tensor4D), bn2, training, updates))
      h = tf.maxPool(h, 2, 2, 'valid')
      h = tf.relu(tf.add(conv3x3(h, w3 as tf.Tensor4D), b3))
      return tf.add(tf.matMul(tf.reshape(h, [h.shape[0], 7 * 7 * 64]), wd), bd)
    },
    toOnnx() {
      const conv = (i: number, src: string, out: string, bias: boolean) =>
        makeNode('Conv', bias ? [src, `conv${i}.weight`, `conv${i}.bias`] : [src, `conv${i}.weight`], [out], {kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1]}, {name: `conv${i}`})
      const bn = (i: number, src: string, out: string) =>
        makeNode('BatchNormalization', [src, `bn${i}.scale`, `bn${i}.bias`, `bn${i}.mean`, `bn${i}.var`], [out], {epsilon: {float: BN_EPS}, momentum: {float: BN_MOMENTUM}}, {name: `bn${i}`})
      const pool = (i: number, src: string, out: string) => makeNode('MaxPool', [src], [out], {kernel_shape: [2, 2], strides: [2, 2]}, {name: `pool${i}`})
      const relu = (i: number, src: string, out: string) => makeNode('Relu', [src], [out], {}, {name: `relu${i}`})
      const nodes = [
        conv(1, 'input', 'c1', false), bn(1, 'c1', 'b1'), relu(1, 'b1', 'r1'), pool(1, 'r1', 'p1'),
        conv(2, 'p1', 'c2', false), bn(2, 'c2', 'b2'), relu(2, 'b2', 'r2'), pool(2, 'r2', 'p2'),
        conv(3, 'p2', 'c3', true), relu(3, 'c3', 'r3'),
        makeNode('Flatten', ['r3'], ['flat'], {axis: 1}, {name: 'flatten'}),
        makeNode('Gemm', ['flat', 'fc.weight', 'fc.bias'], ['logits'], {}, {name: 'fc'}),
      ]
      const bnInits = (i: number, b: Bn) => [
        floatInit(`bn${i}.scale`, b.gamma), floatInit(`bn${i}.bias`, b.beta),
        makeTensor(`bn${i}.mean`, DataType.FLOAT, [b.mean.length], b.mean), makeTensor(`bn${i}.var`, DataType.FLOAT, [b.variance.length], b.variance),
      ]
      // TF.js flattens NHWC as (h, w, c); ONNX flattens NCHW as (c, h, w): reorder the dense rows.
      const wdTf = wd.dataSync()
      const wdOnnx = new Float32Array(wdTf.length)
      for (let c = 0; c < 64; c++) for (let p = 0; p < 49; p++) for (let o = 0; o < 10; o++) wdOnnx[(c * 49 + p) * 10 + o] = wdTf[(p * 64 + c) * 10 + o]!
      const inits = [
        convInit('conv1.weight', w1), ...bnInits(1, bn1), convInit('conv2.weight', w2), ...bnInits(2, bn2),
        convInit('conv3.weight', w3), floatInit('conv3.bias', b3),
        makeTensor('fc.weight', DataType.FLOAT, [3136, 10], wdOnnx), floatInit('fc.bias', bd),
      ]
      return wrap('fashion_cnn', nodes, inits)
    },
  }
}

function floatInit(name: string, v: tf.Tensor) {
  return makeTensor(name, DataType.FLOAT, v.shape, Float32Array.from(v.dataSync()))
}

/** TF.js conv filters are [kh, kw, in, out]; ONNX wants [out, in, kh, kw]. */
function convInit(name: string, v: tf.Tensor) {
  const t = tf.transpose(v, [3, 2, 0, 1])
  const out = makeTensor(name, DataType.FLOAT, t.shape, Float32Array.from(t.dataSync()))
  t.dispose()
  return out
}

function wrap(name: string, nodes: ReturnType<typeof makeNode>[], initializer: ReturnType<typeof makeTensor>[]) {
  const graph = makeGraph({
    name,
    node: nodes,
    initializer,
    input: [makeValueInfo('input', DataType.FLOAT, ['N', 1, 28, 28])],
    output: [makeValueInfo('logits', DataType.FLOAT, ['N', 10])],
  })
  return makeModel(graph, {'': 17})
}

/** Pixels as float32 in [0, 1], one row per image. */
function toFloat(images: Uint8Array): Float32Array {
  const out = new Float32Array(images.length)
  for (let i = 0; i < images.length; i++) out[i] = images[i]! / 255
  return out
}

/** Train with Adam, one epoch per entry of `orders` (each a fixed sample order). */
function train(net: Net, x: Float32Array, y: Uint8Array, orders: number[][], cfg: typeof MLP, log: (s: string) => void): void {
  const optimizer = tf.train.adam(cfg.lr)
  for (const [epoch, order] of orders.entries()) {
    let lossSum = 0
    let steps = 0
    for (let start = 0; start + cfg.batch <= order.length; start += cfg.batch) {
      const idx = order.slice(start, start + cfg.batch)
      const xb = new Float32Array(cfg.batch * 784)
      const yb = new Int32Array(cfg.batch)
      idx.forEach((k, j) => {
        xb.set(x.subarray(k * 784, (k + 1) * 784), j * 784)
        yb[j] = y[k]!
      })
      const updates: (() => void)[] = []
      const loss = tf.tidy(() => {
        const xs = tf.tensor4d(xb, [cfg.batch, 28, 28, 1])
        const ys = tf.oneHot(tf.tensor1d(yb, 'int32'), 10)
        return optimizer.minimize(() => tf.losses.softmaxCrossEntropy(ys, net.forward(xs, true, updates)), true, net.vars)!
      })
      for (const u of updates) u()
      lossSum += loss.dataSync()[0]!
      loss.dispose()
      steps++
    }
    log(`${net.name} epoch ${epoch + 1}/${cfg.epochs}: loss ${(lossSum / steps).toFixed(4)}`)
  }
}

/** Predict logits with TF.js in inference mode (running batch-norm statistics). */
function predict(net: Net, x: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * 10)
  for (let s = 0; s < n; s += 500) {
    const m = Math.min(500, n - s)
    const logits = tf.tidy(() => net.forward(tf.tensor4d(x.subarray(s * 784, (s + m) * 784), [m, 28, 28, 1]), false, []))
    out.set(logits.dataSync(), s * 10)
    logits.dispose()
  }
  return out
}

function accuracy(logits: Float32Array, labels: Uint8Array, n: number): number {
  let ok = 0
  for (let i = 0; i < n; i++) {
    let best = 0
    for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + best]!) best = c
    if (best === labels[i]) ok++
  }
  return ok / n
}

async function onnxLogits(file: string, x: Float32Array, n: number): Promise<Float32Array> {
  const ort = await loadOrt()
  const session = await createSession(file)
  const out = new Float32Array(n * 10)
  for (let s = 0; s < n; s += 1000) {
    const m = Math.min(1000, n - s)
    const r = await session.run({input: new ort.Tensor('float32', x.subarray(s * 784, (s + m) * 784), [m, 1, 28, 28])})
    out.set(r.logits!.data as Float32Array, s * 10)
  }
  await session.release()
  return out
}

export function upToDate(): boolean {
  if (!OUTPUTS.every((f) => fs.existsSync(path.join(OUT, f)))) return false
  try {
    return JSON.parse(fs.readFileSync(path.join(OUT, 'meta.json'), 'utf8')).scriptHash === scriptHash()
  } catch {
    return false
  }
}

async function main(): Promise<void> {
  const log = (s: string) => console.error(`train-fashion-mnist: ${s}`)
  if (!process.argv.includes('--force') && upToDate()) {
    log(`up to date in ${OUT}`)
    return
  }
  ;(fetchFixtures as (o: {quiet: boolean}) => void)({quiet: true})
  const t0 = Date.now()
  const require = createRequire(import.meta.url)
  setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep)
  await tf.setBackend('wasm')
  await tf.ready()

  const trainImages = await readIdx(path.join(DATA, 'train-images-idx3-ubyte.gz'))
  const trainLabels = (await readIdx(path.join(DATA, 'train-labels-idx1-ubyte.gz'))).data as Uint8Array
  const testImages = await readIdx(path.join(DATA, 't10k-images-idx3-ubyte.gz'))
  const testLabels = (await readIdx(path.join(DATA, 't10k-labels-idx1-ubyte.gz'))).data as Uint8Array
  const xTrain = toFloat(trainImages.data as Uint8Array)
  const xTest = toFloat(testImages.data as Uint8Array)
  const nTest = testImages.shape[0]!

  // One fixed permutation of the training set; each model trains on a prefix of it.
  const rand = seededRandom(SEED)
  const perm = Array.from({length: trainImages.shape[0]!}, (_, i) => i)
  for (let i = perm.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[perm[i], perm[j]] = [perm[j]!, perm[i]!]
  }

  fs.mkdirSync(OUT, {recursive: true})
  const meta: Record<string, unknown> = {scriptHash: scriptHash(), seed: SEED, backend: 'tfjs-wasm', models: {}}
  for (const [net, cfg] of [[mlp(seededRandom(SEED + 1)), MLP], [cnn(seededRandom(SEED + 2)), CNN]] as const) {
    const t = Date.now()
    const subset = perm.slice(0, cfg.trainSamples)
    const epochOrders = Array.from({length: cfg.epochs}, (_, e) => {
      const r = seededRandom(SEED + 100 + e)
      const o = subset.slice()
      for (let i = o.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1))
        ;[o[i], o[j]] = [o[j]!, o[i]!]
      }
      return o
    })
    train(net, xTrain, trainLabels, epochOrders, cfg, log)
    const trainSeconds = (Date.now() - t) / 1000
    const file = path.join(OUT, `fashion_${net.name}.onnx`)
    await writeModel(net.toOnnx(), file)
    const tfLogits = predict(net, xTest, nTest)
    const ortLogits = await onnxLogits(file, xTest, nTest)
    let maxAbs = 0
    for (let i = 0; i < 64 * 10; i++) maxAbs = Math.max(maxAbs, Math.abs(tfLogits[i]! - ortLogits[i]!))
    if (maxAbs > 1e-3) throw new Error(`${net.name}: ONNX export disagrees with TF.js (max abs error ${maxAbs})`)
    const acc = accuracy(ortLogits, testLabels, nTest)
    log(`${net.name}: trained on ${cfg.trainSamples} images × ${cfg.epochs} epochs in ${trainSeconds.toFixed(1)} s; test accuracy ${acc.toFixed(4)} (onnxruntime, ${nTest} images); ONNX vs TF.js max abs error ${maxAbs.toExponential(2)}`)
    ;(meta.models as Record<string, unknown>)[net.name] = {
      file: path.basename(file),
      accuracy: acc,
      tfjsAccuracy: accuracy(tfLogits, testLabels, nTest),
      maxAbsErrorVsTfjs: maxAbs,
      trainSamples: cfg.trainSamples,
      epochs: cfg.epochs,
      batch: cfg.batch,
      learningRate: cfg.lr,
      trainSeconds,
    }
  }

  const labels64 = BigInt64Array.from(testLabels, (v) => BigInt(v))
  await writeNpz(path.join(OUT, 'fashion_test.npz'), {
    input: {dtype: '<f4', shape: [nTest, 1, 28, 28], data: xTest},
    labels: {dtype: '<i8', shape: [nTest], data: labels64},
  })
  // Calibration images come from past the training prefix of the permutation: unseen in training.
  const calib = new Float32Array(CALIB * 784)
  perm.slice(-CALIB).forEach((k, j) => calib.set(xTrain.subarray(k * 784, (k + 1) * 784), j * 784))
  await writeNpz(path.join(OUT, 'fashion_calib.npz'), {input: {dtype: '<f4', shape: [CALIB, 1, 28, 28], data: calib}})
  meta.totalSeconds = (Date.now() - t0) / 1000
  await atomicWriteFile(path.join(OUT, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`)
  log(`wrote ${OUTPUTS.join(', ')} to ${OUT} in ${meta.totalSeconds} s`)
}

if (process.argv[1] && path.resolve(process.argv[1]) === SCRIPT) {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
