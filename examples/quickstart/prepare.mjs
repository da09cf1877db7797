#!/usr/bin/env node
// Prepare the quickstart: fetch the real BlazeFace model and the LFW face/non-face crops (checksum-verified,
// cached outside the repository), split LFW into a calibration set and a disjoint test set, and create keys.
// Needs a built kiln (`npm run build`).
import * as fs from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {FIXTURES_DIR, fetchFixtures} from '../../scripts/fetch-fixtures.js'
import {lfwFaceArrays} from '../../dist/data/lfw.js'
import {writeNpz} from '../../dist/data/npz-write.js'
import {generateKeys} from '../../dist/delivery/keys.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const models = path.join(here, 'models')
fetchFixtures({quiet: true})
fs.mkdirSync(models, {recursive: true})
fs.copyFileSync(path.join(FIXTURES_DIR, 'onnx/blazeface_front_128.onnx'), path.join(models, 'blazeface.onnx'))

// 100 faces then 100 non-faces: the first 16 of each calibrate, the other 84 of each test.
const all = await lfwFaceArrays(path.join(FIXTURES_DIR, 'data/lfw_subset.npy'))
const input = all['input:0']
const labels = all.labels
const per = input.shape.slice(1).reduce((a, b) => a * b, 1)
const pick = (rows) => ({
  'input:0': {dtype: input.dtype, shape: [rows.length, ...input.shape.slice(1)], data: Float32Array.from(rows.flatMap((r) => Array.from(input.data.subarray(r * per, (r + 1) * per))))},
  labels: {dtype: labels.dtype, shape: [rows.length], data: BigInt64Array.from(rows.map((r) => labels.data[r]))},
})
const range = (a, b) => Array.from({length: b - a}, (_, i) => a + i)
await writeNpz(path.join(models, 'lfw-calib.npz'), pick([...range(0, 16), ...range(100, 116)]))
await writeNpz(path.join(models, 'lfw-test.npz'), pick([...range(16, 100), ...range(116, 200)]))

if (!fs.existsSync(path.join(here, 'keys', 'signing.key'))) await generateKeys(path.join(here, 'keys'))
console.error(`quickstart: model, data and keys ready in ${path.relative(process.cwd(), here) || '.'}`)
