import {describe, expect, it} from 'vitest'
import {InferencePool, InlinePool} from '../../src/delivery/serve/pool.js'
import {MODELS} from '../helpers/fixtures.js'
import {blazefaceInput} from './inputs.js'

describe('inference pools at shutdown', () => {
  // The server stops waiting for a request whose client hung up; its run is still under way when the
  // pool closes. It must answer from a live session, not fail on one that was just released.
  it.each([
    ['in line (--pool 0)', () => new InlinePool({size: 0, threads: 1, maxQueue: 4})],
    ['in a worker (--pool 1)', () => new InferencePool({size: 1, threads: 1, maxQueue: 4})],
  ] as const)('%s: a run under way when the pool closes still answers; one still waiting is refused as shutting down', async (_, make) => {
    const pool = make()
    await pool.load('face', {path: MODELS.blazeface})
    const outputs = ['Identity:0', 'Identity_1:0', 'Identity_2:0', 'Identity_3:0']
    const input = async () => [{name: 'input:0', type: 'float32' as const, dims: [1, 128, 128, 3], data: await blazefaceInput(0)}]
    const [one, two] = [await input(), await input()]
    const first = pool.run('face', one, outputs)
    // In a worker the run is under way once the worker has taken it; in line, once it is dispatched.
    for (let i = 0; i < 100 && pool.running < 1; i++) await new Promise((r) => setTimeout(r, 5))
    expect(pool.running).toBe(1)
    const waiting = pool.size === 0 ? pool.run('face', two, outputs).then(() => 'answered', (e: Error) => e.message) : undefined
    const closed = pool.close()
    const result = await first
    expect(result.outputs.length).toBe(4)
    if (waiting) expect(await waiting).toMatch(/shutting down/)
    await closed
  })
})
