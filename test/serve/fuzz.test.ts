import * as fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ensureTrainedModels} from '../helpers/fixtures.js'
import {fuzzCases} from './fuzz.js'
import {type ServeProcess, startServe} from './helpers.js'

let repo: string
let server: ServeProcess

beforeAll(async () => {
  repo = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-serve-fuzz-'))
  await fsp.copyFile(ensureTrainedModels().cnn, path.join(repo, 'fashion_cnn.onnx'))
  server = await startServe([repo, '--max-body', String(8 * 1024 * 1024)])
})

afterAll(async () => {
  await server?.stop()
  if (repo) await fsp.rm(repo, {recursive: true, force: true})
})

describe('kiln serve: malformed requests', () => {
  it('answers every malformed request with a 4xx and keeps serving', async () => {
    const cases = fuzzCases(server.url, 7, 3)
    const wrong: string[] = []
    for (const c of cases) {
      const status = await c.send()
      if (status < 400 || status >= 500) wrong.push(`${c.kind} (${c.describe}): ${status}`)
    }
    expect(wrong).toEqual([])
    expect(new Set(cases.map((c) => c.kind)).size).toBeGreaterThanOrEqual(15)
    expect((await fetch(`${server.url}/v2/health/live`)).status).toBe(200)
    const res = await fetch(`${server.url}/v2/models/fashion_cnn/infer`, {
      method: 'POST',
      body: JSON.stringify({inputs: [{name: 'input', datatype: 'FP32', shape: [1, 1, 28, 28], data: new Array(784).fill(0.5)}]}),
    })
    expect(res.status).toBe(200)
    expect((await res.json()).outputs[0]).toMatchObject({name: 'logits', datatype: 'FP32', shape: [1, 10]})
    expect(server.proc.exitCode).toBeNull()
  })
})
