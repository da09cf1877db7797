import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {writeNpz} from '../../src/data/npz-write.js'
import {kiln} from '../helpers/cli.js'
import {HUMAN, isFace, lfwInput, tempDir} from './helpers.js'

describe('a converted TF.js model flows through quantize and evaluate', () => {
  it('blazeface-front.json → convert → quantize fp16 → evaluate on LFW crops', async () => {
    const dir = await tempDir('kiln-tfjs-pipeline-')
    const picks = [0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 105]
    const input = new Float32Array(picks.length * 128 * 128 * 3)
    picks.forEach((p, k) => input.set(lfwInput(p), k * 128 * 128 * 3))
    await writeNpz(path.join(dir, 'lfw.npz'), {
      input: {dtype: '<f4', shape: [picks.length, 128, 128, 3], data: input},
      labels: {dtype: '<i8', shape: [picks.length], data: BigInt64Array.from(picks, (p) => (isFace(p) ? 1n : 0n))},
    })
    await fsp.copyFile(HUMAN('blazeface-front'), path.join(dir, 'model.json'))
    await fsp.copyFile(HUMAN('blazeface-front').replace(/\.json$/, '.bin'), path.join(dir, 'blazeface-front.bin'))
    const pipeline = [
      'version: 1',
      'name: blazeface-tfjs',
      'model: ./model.json',
      'datasets:',
      '  lfw: { path: ./lfw.npz, labels: labels }',
      'stages:',
      '  - uses: convert',
      '    with: { verify: { dataset: lfw, samples: 2 } }',
      '  - uses: quantize',
      '    with: { mode: fp16 }',
      '  - uses: evaluate',
      '    with:',
      '      dataset: lfw',
      '      baseline: convert',
      '      task: binary',
      '      output: [Identity, Identity_1]',
      '      reduce: max',
      '      activation: sigmoid',
      '      metrics: [accuracy]',
      '      gates: { accuracy: { min: 0.9 } }',
    ].join('\n')
    await fsp.writeFile(path.join(dir, 'kiln.yaml'), `${pipeline}\n`)
    const r = await kiln(['run', path.join(dir, 'kiln.yaml'), '--out', path.join(dir, 'run'), '--json'], {cwd: dir})
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0)
    const stages = r.json.stages as {id: string; status: string; metrics: Record<string, any>}[]
    expect(stages.map((s) => [s.id, s.status])).toEqual([
      ['convert', 'ran'],
      ['quantize', 'ran'],
      ['evaluate', 'ran'],
    ])
    expect(stages[0]!.metrics.verify.passed).toBe(true)
    expect(stages[0]!.metrics.verify.inputSource).toBe('dataset lfw')
    expect(r.json.gates.length).toBeGreaterThan(0)
    expect(r.json.gates.every((g: {passed: boolean}) => g.passed)).toBe(true)
    expect(stages[2]!.metrics.accuracy).toBeGreaterThanOrEqual(0.9)
  })
})
