import path from 'node:path'
import type * as TfNs from '@tensorflow/tfjs'
import {beforeAll, describe, expect, it} from 'vitest'
import {convertTfjs} from '../../src/convert/tfjs/index.js'
import type {VerifyReport} from '../../src/convert/tfjs/index.js'
import {readModel} from '../../src/onnx/model.js'
import {loadTfjs} from '../../src/runtime/tfjs.js'
import {IMAGES, randomizeWeights, saveLayersModel, tempDir} from './helpers.js'

let tf: typeof TfNs

function randomize(model: TfNs.LayersModel, seed: number): void {
  randomizeWeights(tf, model, seed)
}

async function convertAndVerify(model: TfNs.LayersModel, name: string, layout: 'nhwc' | 'nchw' = 'nhwc'): Promise<{metrics: Record<string, unknown>; file: string}> {
  const dir = await tempDir()
  const json = await saveLayersModel(tf, model, path.join(dir, name))
  const file = path.join(dir, `${name}.onnx`)
  const {metrics} = await convertTfjs(json, file, {layout, verify: {images: IMAGES, samples: 2}})
  const v = metrics.verify as VerifyReport
  expect(v.passed, JSON.stringify(v.outputs)).toBe(true)
  return {metrics, file}
}

beforeAll(async () => {
  tf = (await loadTfjs()).tf
})

describe('Keras layers convert and match TF.js', () => {
  it('convolution, normalization, activation, pooling, merge and reshape layers', async () => {
    const L = tf.layers
    const x = tf.input({shape: [16, 16, 3], name: 'image'})
    let h = L.zeroPadding2d({padding: 1}).apply(x) as TfNs.SymbolicTensor
    h = L.conv2d({filters: 8, kernelSize: 3, activation: 'relu'}).apply(h) as TfNs.SymbolicTensor
    h = L.batchNormalization().apply(h) as TfNs.SymbolicTensor
    h = L.leakyReLU({alpha: 0.1}).apply(h) as TfNs.SymbolicTensor
    h = L.depthwiseConv2d({kernelSize: 3, strides: 2, padding: 'same', depthMultiplier: 2}).apply(h) as TfNs.SymbolicTensor
    h = L.reLU({maxValue: 6}).apply(h) as TfNs.SymbolicTensor
    h = L.separableConv2d({filters: 8, kernelSize: 3, padding: 'same', activation: 'elu'}).apply(h) as TfNs.SymbolicTensor
    const up1 = L.conv2dTranspose({filters: 4, kernelSize: 3, strides: 2, padding: 'same'}).apply(h) as TfNs.SymbolicTensor
    const up2 = L.conv2d({filters: 4, kernelSize: 1}).apply(L.upSampling2d({size: [2, 2]}).apply(h)) as TfNs.SymbolicTensor
    const sum = L.add().apply([up1, up2]) as TfNs.SymbolicTensor
    const prod = L.multiply().apply([sum, up1]) as TfNs.SymbolicTensor
    let c = L.concatenate().apply([prod, up2]) as TfNs.SymbolicTensor
    c = L.elu().apply(L.maxPooling2d({poolSize: 2}).apply(c)) as TfNs.SymbolicTensor
    c = L.averagePooling2d({poolSize: 2, padding: 'same'}).apply(c) as TfNs.SymbolicTensor
    c = L.prelu().apply(c) as TfNs.SymbolicTensor
    const gap = L.dense({units: 5}).apply(L.globalAveragePooling2d({}).apply(c)) as TfNs.SymbolicTensor
    const gmp = L.activation({activation: 'tanh'}).apply(L.dense({units: 5}).apply(L.globalMaxPooling2d({}).apply(c))) as TfNs.SymbolicTensor
    let flat = L.reshape({targetShape: [16, 8]}).apply(c) as TfNs.SymbolicTensor
    flat = L.flatten().apply(L.dropout({rate: 0.5}).apply(flat)) as TfNs.SymbolicTensor
    const probs = L.softmax().apply(L.thresholdedReLU({theta: 0.1}).apply(L.dense({units: 5}).apply(flat))) as TfNs.SymbolicTensor
    const head = L.dense({units: 4, activation: 'softmax', name: 'probs'}).apply(L.concatenate().apply([gap, gmp, probs])) as TfNs.SymbolicTensor
    const model = tf.model({inputs: x, outputs: [head, up1]})
    randomize(model, 1)
    const {metrics, file} = await convertAndVerify(model, 'cnn')
    const onnx = await readModel(file)
    expect(onnx.graph!.input.map((i) => i.name)).toEqual(['image'])
    expect(onnx.graph!.output.map((o) => o.name)).toEqual(model.outputNames)
    const ops = metrics.opCounts as Record<string, number>
    for (const op of ['Conv', 'ConvTranspose', 'BatchNormalization', 'Resize', 'PRelu', 'MaxPool', 'AveragePool', 'Pad', 'Softmax']) expect(ops[op], op).toBeGreaterThan(0)
    // The same model with a channels-first interface still matches.
    const nchw = await convertAndVerify(model, 'cnn_nchw', 'nchw')
    expect(nchw.metrics.transposes as number).toBeLessThanOrEqual(metrics.transposes as number)
  })

  it('Embedding, LSTM and GRU (both recurrent activations)', async () => {
    const L = tf.layers
    const model = tf.sequential({
      layers: [
        L.embedding({inputDim: 20, outputDim: 6, inputLength: 7}),
        L.lstm({units: 5, returnSequences: true}),
        L.gru({units: 4, returnSequences: true, recurrentActivation: 'sigmoid'}),
        L.lstm({units: 3, recurrentActivation: 'sigmoid'}),
        L.dense({units: 2}),
      ],
    })
    randomize(model, 7)
    const {metrics} = await convertAndVerify(model, 'rnn')
    const ops = metrics.opCounts as Record<string, number>
    expect(ops.LSTM).toBe(2)
    expect(ops.GRU).toBe(1)
    expect(ops.Gather).toBe(1)
    // A single GRU with Keras' default hard-sigmoid gate, reading a float sequence.
    const gru = tf.sequential({layers: [L.gru({units: 4, inputShape: [5, 3]}), L.dense({units: 2, activation: 'sigmoid'})]})
    randomize(gru, 11)
    await convertAndVerify(gru, 'gru')
  })

  it('batch norm on 2-D and 3-D tensors, Average, Maximum, Minimum, Permute, RepeatVector, Cropping2D, 1-D global pooling', async () => {
    const L = tf.layers
    const seq = tf.input({shape: [5, 3], name: 'seq'})
    const img = tf.input({shape: [8, 8, 2], name: 'img'})
    const a = L.batchNormalization().apply(L.dense({units: 4}).apply(seq)) as TfNs.SymbolicTensor
    const b = L.dense({units: 4, activation: 'sigmoid'}).apply(L.permute({dims: [2, 1]}).apply(L.permute({dims: [2, 1]}).apply(seq))) as TfNs.SymbolicTensor
    const merged = [L.multiply().apply([a, b]), L.average().apply([a, b]), L.maximum().apply([a, b]), L.minimum().apply([a, b])] as TfNs.SymbolicTensor[]
    const pooled = L.globalAveragePooling1d().apply(L.concatenate().apply(merged)) as TfNs.SymbolicTensor
    const v = L.batchNormalization().apply(L.dense({units: 6}).apply(pooled)) as TfNs.SymbolicTensor
    const rep = L.globalMaxPooling1d().apply(L.repeatVector({n: 3}).apply(v)) as TfNs.SymbolicTensor
    const cropped = L.flatten().apply(L.cropping2D({cropping: [[1, 2], [2, 1]]}).apply(L.conv2d({filters: 3, kernelSize: 1}).apply(img))) as TfNs.SymbolicTensor
    const out = L.dense({units: 2, name: 'out'}).apply(L.concatenate().apply([rep, cropped])) as TfNs.SymbolicTensor
    const model = tf.model({inputs: [seq, img], outputs: out})
    randomize(model, 13)
    const {metrics} = await convertAndVerify(model, 'misc')
    expect((metrics.inputs as {name: string}[]).map((i) => i.name)).toEqual(['seq', 'img'])
  })

  it('nested Sequential and functional models', async () => {
    const L = tf.layers
    const innerSeq = tf.sequential({name: 'feature', layers: [L.conv2d({inputShape: [12, 12, 3], filters: 4, kernelSize: 3, padding: 'same', activation: 'relu'}), L.batchNormalization()]})
    const ix = tf.input({shape: [12, 12, 4]})
    const innerFn = tf.model({name: 'block', inputs: ix, outputs: L.add().apply([ix, L.conv2d({filters: 4, kernelSize: 1}).apply(ix) as TfNs.SymbolicTensor]) as TfNs.SymbolicTensor})
    const x = tf.input({shape: [12, 12, 3], name: 'pixels'})
    const f = innerFn.apply(innerSeq.apply(x)) as TfNs.SymbolicTensor
    const y = L.dense({units: 3, name: 'scores'}).apply(L.globalAveragePooling2d({}).apply(f)) as TfNs.SymbolicTensor
    const model = tf.model({inputs: x, outputs: y})
    randomize(model, 3)
    for (const inner of [innerSeq, innerFn]) randomize(inner, 5)
    const {metrics} = await convertAndVerify(model, 'nested')
    expect(metrics.inputs).toEqual([{name: 'pixels', shape: [-1, 12, 12, 3]}])
    expect((metrics.outputs as {name: string}[])[0]!.name).toBe('scores')
  })
})
