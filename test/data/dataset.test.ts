import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import type {Batch, InputMeta} from '../../src/data/dataset.js'
import {readBatches} from '../../src/data/dataset.js'
import {readIdx} from '../../src/data/idx.js'
import {readNpz} from '../../src/data/npy.js'
import {writeNpz} from '../../src/data/npz-write.js'
import type {DatasetSpec} from '../../src/stages/types.js'
import {ensureTrainedModels, fixture} from '../helpers/fixtures.js'

const FASHION: InputMeta[] = [{name: 'input', type: 'float32', dims: ['N', 1, 28, 28]}]
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-data-'))

async function all(spec: Partial<DatasetSpec> & {path: string}, batchSize: number, inputs?: InputMeta[]): Promise<Batch[]> {
  const out: Batch[] = []
  for await (const b of readBatches({name: 'd', ...spec}, {batchSize, inputs})) out.push(b)
  return out
}

describe('readBatches', () => {
  let trained: ReturnType<typeof ensureTrainedModels>
  beforeAll(() => {
    trained = ensureTrainedModels()
  }, 300_000)

  it('reads an NPZ named after the model input, in batches, with labels', async () => {
    const batches = await all({path: trained.test, limit: 300}, 128, FASHION)
    expect(batches.map((b) => b.size)).toEqual([128, 128, 44])
    expect(batches[0]!.inputs.input!.dims).toEqual([128, 1, 28, 28])
    const whole = await readNpz(trained.test)
    expect(Array.from((batches[1]!.inputs.input!.data as Float32Array).subarray(0, 784))).toEqual(Array.from((whole.get('input')!.data as Float32Array).subarray(128 * 784, 129 * 784)))
    expect(Array.from(batches[2]!.labels!)).toEqual(Array.from((whole.get('labels')!.data as BigInt64Array).subarray(256, 300), Number))
  })

  it('reads the same rows in line and with recycled batch memory, each batch intact until the batch after next is asked for', async () => {
    const whole = (await readNpz(trained.test)).get('input')!.data as Float32Array
    for (const how of [{reuse: true}, {reuse: true, inline: true}, {inline: true}, {reuse: true, shuffle: true}]) {
      const spec: DatasetSpec = {name: 'd', path: trained.test, limit: 1000, ...(how.shuffle ? {shuffle: true, seed: 3} : {})}
      const order = how.shuffle ? (await all({...spec, limit: 1000}, 1000, FASHION))[0]!.labels! : undefined
      const held: {batch: Batch; copy: Float32Array; start: number}[] = []
      let start = 0
      for await (const b of readBatches(spec, {batchSize: 100, inputs: FASHION, ...how})) {
        const data = b.inputs.input!.data as Float32Array
        // The batch before the previous one may have been recycled; the previous one must be intact.
        const prev = held.at(-1)
        if (prev) expect(Array.from(prev.batch.inputs.input!.data as Float32Array)).toEqual(Array.from(prev.copy))
        held.push({batch: b, copy: data.slice(), start})
        if (!how.shuffle) expect(Array.from(data.subarray(0, 784))).toEqual(Array.from(whole.subarray(start * 784, (start + 1) * 784)))
        else expect(Array.from(b.labels!)).toEqual(Array.from(order!.subarray(start, start + 100)))
        start += b.size
      }
      expect(start).toBe(1000)
    }
  })

  it('shuffles reproducibly with a seed, and a different seed gives another order', async () => {
    const labels = async (seed: number) => (await all({path: trained.test, shuffle: true, seed, limit: 64}, 64, FASHION))[0]!.labels!
    const a = await labels(1)
    expect(Array.from(await labels(1))).toEqual(Array.from(a))
    expect(Array.from(await labels(2))).not.toEqual(Array.from(a))
  })

  it('streams gzip IDX with its labels file, and scales/reshapes to the model input', async () => {
    const images = fixture('data/fashion-mnist/t10k-images-idx3-ubyte.gz')
    const batches = await all({path: images, limit: 100, preprocess: {scale: 1 / 255, dtype: 'float32'}}, 50, FASHION)
    expect(batches.map((b) => b.inputs.input!.dims)).toEqual([[50, 1, 28, 28], [50, 1, 28, 28]])
    const ref = await readIdx(images)
    const labels = await readIdx(fixture('data/fashion-mnist/t10k-labels-idx1-ubyte.gz'))
    expect(batches[1]!.inputs.input!.data[300]).toBeCloseTo((ref.data[50 * 784 + 300] as number) / 255, 6)
    expect(Array.from(batches[1]!.labels!)).toEqual(Array.from(labels.data.subarray(50, 100) as Uint8Array))
  })

  it('streams a headerless gzip CSV, taking a column range as the input and the last column as labels', async () => {
    const batches = await all(
      {path: fixture('data/sklearn/digits.csv.gz'), inputs: {x: '0:63'}, labels: '64', preprocess: {dtype: 'float32', scale: 1 / 16}},
      500,
      [{name: 'x', type: 'float32', dims: ['N', 1, 8, 8]}],
    )
    expect(batches.reduce((n, b) => n + b.size, 0)).toBe(1797)
    expect(batches[0]!.inputs.x!.dims).toEqual([500, 1, 8, 8])
    expect(Math.max(...batches[0]!.inputs.x!.data as Float32Array)).toBeLessThanOrEqual(1)
    expect(new Set(batches.flatMap((b) => Array.from(b.labels!)))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
  })

  it('feeds every non-label CSV column to a single-input model when no mapping is given', async () => {
    const [b] = await all({path: fixture('data/sklearn/digits.csv.gz'), labels: '64', limit: 10, preprocess: {dtype: 'float32'}}, 10, [{name: 'x', type: 'float32', dims: ['N', 64]}])
    expect(b!.inputs.x!.dims).toEqual([10, 64])
    expect(Array.from((b!.inputs.x!.data as Float32Array).subarray(0, 8))).toEqual([0, 0, 5, 13, 9, 1, 0, 0])
    expect(b!.labels![0]).toBe(0)
  })

  it('reads rows of a plain .npy on demand, resizing grey crops for an NHWC model', async () => {
    const batches = await all({path: fixture('data/lfw_subset.npy'), shuffle: true, seed: 3, limit: 6, preprocess: {resize: 32, dtype: 'float32', scale: 2, mean: 1}}, 4, [{name: 'img', type: 'float32', dims: [1, 32, 32]}])
    expect(batches.map((b) => b.inputs.img!.dims)).toEqual([[4, 32, 32], [2, 32, 32]])
    const data = batches[0]!.inputs.img!.data as Float32Array
    expect(Math.min(...data)).toBeGreaterThanOrEqual(-1)
    expect(Math.max(...data)).toBeLessThanOrEqual(1)
  })

  it('reads plain (uncompressed) IDX by random access', async () => {
    const {gunzipSync} = await import('node:zlib')
    const dir = path.join(tmp, 'idx')
    fs.mkdirSync(dir, {recursive: true})
    for (const f of ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) fs.writeFileSync(path.join(dir, f), gunzipSync(fs.readFileSync(fixture(`data/fashion-mnist/${f}.gz`))))
    const shuffled = await all({path: path.join(dir, 't10k-images-idx3-ubyte'), shuffle: true, seed: 9, limit: 20, preprocess: {dtype: 'float32'}}, 20, FASHION)
    const ref = await readIdx(fixture('data/fashion-mnist/t10k-labels-idx1-ubyte.gz'))
    expect(shuffled[0]!.size).toBe(20)
    // Shuffled labels are a sample of the real ones, not the first 20 in order.
    expect(Array.from(shuffled[0]!.labels!)).not.toEqual(Array.from(ref.data.subarray(0, 20) as Uint8Array))
    const sorted = await all({path: path.join(dir, 't10k-images-idx3-ubyte'), limit: 20, preprocess: {dtype: 'float32'}}, 20, FASHION)
    expect(Array.from(sorted[0]!.labels!)).toEqual(Array.from(ref.data.subarray(0, 20) as Uint8Array))
  })

  it('streams a compressed (deflated) NPZ without inflating it whole', async () => {
    const {deflateRawSync} = await import('node:zlib')
    const {encodeNpy} = await import('../../src/data/npy.js')
    const {crc32} = await import('../../src/data/npz-write.js')
    const whole = await readNpz(trained.test)
    const n = 600
    const entries = {
      input: encodeNpy({dtype: '<f4', shape: [n, 1, 28, 28], data: (whole.get('input')!.data as Float32Array).slice(0, n * 784)}),
      labels: encodeNpy({dtype: '<i8', shape: [n], data: (whole.get('labels')!.data as BigInt64Array).slice(0, n)}),
    }
    // A zip with deflated entries, as np.savez_compressed writes it.
    const parts: Buffer[] = []
    const central: Buffer[] = []
    let offset = 0
    for (const [name, data] of Object.entries(entries)) {
      const fname = Buffer.from(`${name}.npy`)
      const comp = deflateRawSync(data)
      const local = Buffer.alloc(30)
      local.writeUInt32LE(0x04034b50, 0)
      local.writeUInt16LE(20, 4)
      local.writeUInt16LE(8, 8)
      local.writeUInt32LE(crc32(data), 14)
      local.writeUInt32LE(comp.length, 18)
      local.writeUInt32LE(data.length, 22)
      local.writeUInt16LE(fname.length, 26)
      const cd = Buffer.alloc(46)
      cd.writeUInt32LE(0x02014b50, 0)
      cd.writeUInt16LE(8, 10)
      cd.writeUInt32LE(crc32(data), 16)
      cd.writeUInt32LE(comp.length, 20)
      cd.writeUInt32LE(data.length, 24)
      cd.writeUInt16LE(fname.length, 28)
      cd.writeUInt32LE(offset, 42)
      parts.push(local, fname, comp)
      central.push(cd, fname)
      offset += 30 + fname.length + comp.length
    }
    const cdBytes = Buffer.concat(central)
    const end = Buffer.alloc(22)
    end.writeUInt32LE(0x06054b50, 0)
    end.writeUInt16LE(2, 8)
    end.writeUInt16LE(2, 10)
    end.writeUInt32LE(cdBytes.length, 12)
    end.writeUInt32LE(offset, 16)
    const file = path.join(tmp, 'compressed.npz')
    fs.writeFileSync(file, Buffer.concat([...parts, cdBytes, end]))
    const batches = await all({path: file, limit: 500}, 200, FASHION)
    expect(batches.map((b) => b.size)).toEqual([200, 200, 100])
    expect(Array.from((batches[2]!.inputs.input!.data as Float32Array).subarray(0, 784))).toEqual(Array.from((whole.get('input')!.data as Float32Array).subarray(400 * 784, 401 * 784)))
    expect(Array.from(batches[1]!.labels!)).toEqual(Array.from((whole.get('labels')!.data as BigInt64Array).subarray(200, 400), Number))
  })

  it('reads JSONL rows of nested arrays', async () => {
    const file = path.join(tmp, 'rows.jsonl')
    const digits = JSON.parse(fs.readFileSync(fixture('data/mnist/3.json'), 'utf8')) as {data: number[]} | {data: number[]}[]
    const first = Array.isArray(digits) ? digits[0]!.data : digits.data.slice(0, 784)
    fs.writeFileSync(file, [0, 1, 2].map((i) => JSON.stringify({pixels: [first.slice(0, 392), first.slice(392, 784)], label: i})).join('\n'))
    const [b] = await all({path: file, inputs: {input: 'pixels'}, preprocess: {dtype: 'float32'}}, 8, FASHION)
    expect(b!.size).toBe(3)
    expect(b!.inputs.input!.dims).toEqual([3, 1, 28, 28])
    expect(Array.from(b!.labels!)).toEqual([0, 1, 2])
    expect(b!.inputs.input!.data[400]).toBeCloseTo(first[400]!, 5)
  })

  it('decodes an image folder (one class per folder) with resize, layout, mean/std', async () => {
    const dir = path.join(tmp, 'images')
    for (const [cls, files] of [['cats', ['chelsea.png']], ['things', ['coffee.png', 'astronaut.png']]] as const) {
      fs.mkdirSync(path.join(dir, cls), {recursive: true})
      for (const f of files) fs.copyFileSync(fixture(`data/images/${f}`), path.join(dir, cls, f))
    }
    const meta: InputMeta[] = [{name: 'img', type: 'float32', dims: [1, 3, 32, 48]}]
    const [b] = await all({path: dir, preprocess: {scale: 1 / 255, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}, 4, meta)
    expect(b!.inputs.img!.dims).toEqual([3, 3, 32, 48])
    expect(Array.from(b!.labels!)).toEqual([0, 1, 1])
    const data = b!.inputs.img!.data as Float32Array
    expect(Math.min(...data)).toBeGreaterThanOrEqual(-1)
    expect(Math.max(...data)).toBeLessThanOrEqual(1)
  })

  it('names the file of an unreadable image', async () => {
    const dir = path.join(tmp, 'broken')
    fs.mkdirSync(path.join(dir, 'a'), {recursive: true})
    fs.writeFileSync(path.join(dir, 'a', 'bad.png'), 'not a png')
    await expect(all({path: dir, preprocess: {dtype: 'float32'}}, 4, [{name: 'x', type: 'float32', dims: [1, 3, 8, 8]}])).rejects.toThrow(/bad\.png/)
  })

  it('feeds inputs with no batch axis of their own (a scalar, a recurrent state) one sample a batch, shaped like the whole input', async () => {
    // Silero's inputs: audio [batch, samples], state [2, batch, 128] and a scalar sample rate.
    const SILERO: InputMeta[] = [
      {name: 'input', type: 'float32', dims: ['', '']},
      {name: 'state', type: 'float32', dims: [2, '', 128]},
      {name: 'sr', type: 'int64', dims: []},
    ]
    const n = 3
    const file = path.join(tmp, 'stateful.npz')
    await writeNpz(file, {
      input: {dtype: '<f4', shape: [n, 512], data: Float32Array.from({length: n * 512}, (_, i) => i)},
      state: {dtype: '<f4', shape: [n, 2, 1, 128], data: Float32Array.from({length: n * 256}, (_, i) => -i)},
      sr: {dtype: '<i8', shape: [n], data: BigInt64Array.of(16000n, 8000n, 16000n)},
    })
    const batches = await all({path: file}, 16, SILERO)
    expect(batches.map((b) => b.size)).toEqual([1, 1, 1])
    expect(batches[0]!.whole).toEqual(['state', 'sr'])
    expect(batches.map((b) => [b.inputs.input!.dims, b.inputs.state!.dims, b.inputs.sr!.dims])).toEqual(Array(3).fill([[1, 512], [2, 1, 128], []]))
    expect(Array.from(batches[1]!.inputs.sr!.data as BigInt64Array)).toEqual([8000n])
    expect((batches[2]!.inputs.state!.data as Float32Array)[0]).toBe(-512)
    expect((batches[2]!.inputs.input!.data as Float32Array)[0]).toBe(1024)
  })

  it('explains a shape mismatch, naming the input and both shapes', async () => {
    const file = path.join(tmp, 'wrong.npz')
    await writeNpz(file, {input: {dtype: '<f4', shape: [4, 3, 10, 10], data: new Float32Array(1200)}})
    await expect(all({path: file}, 2, FASHION)).rejects.toThrow(/input 'input' has sample shape \[3,10,10\], the model expects \[1,28,28\]/)
  })

  it('explains a dtype mismatch and how to fix it', async () => {
    const file = path.join(tmp, 'f64.npz')
    await writeNpz(file, {input: {dtype: '<f8', shape: [2, 1, 28, 28], data: new Float64Array(2 * 784)}})
    await expect(all({path: file}, 2, FASHION)).rejects.toThrow(/is float64, the model expects float32/)
    const [b] = await all({path: file, preprocess: {dtype: 'float32'}}, 2, FASHION)
    expect(b!.inputs.input!.type).toBe('float32')
  })
})
