#!/usr/bin/env tsx
// Write the LFW face/non-face evaluation set for BlazeFace (front, 128×128 NHWC) as an NPZ that
// kiln reads without any mapping: `input:0` float32 [200,128,128,3] in [-1,1], `labels` int64.
//
//   npx tsx examples/blazeface-lfw/build-dataset.ts [OUT.npz] [--per-class N]
import path from 'node:path'
import {writeLfwNpz} from '../../src/data/lfw.js'
// @ts-expect-error plain JS script without types
import {FIXTURES_DIR, fetchFixtures} from '../../scripts/fetch-fixtures.js'

;(fetchFixtures as (o: {quiet: boolean}) => void)({quiet: true})
const args = process.argv.slice(2)
const i = args.indexOf('--per-class')
const perClass = i >= 0 ? Number(args[i + 1]) : undefined
const out = path.resolve(args.find((a, k) => !a.startsWith('--') && args[k - 1] !== '--per-class') ?? path.join(path.dirname(new URL(import.meta.url).pathname), 'data', 'lfw.npz'))
await writeLfwNpz(path.join(FIXTURES_DIR as string, 'data', 'lfw_subset.npy'), out, {perClass})
console.error(`wrote ${out}`)
