import * as fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {readModel, writeModel} from '../../src/onnx/model.js'
import {DigestMemo} from '../../src/pipeline/cache.js'
import {inputArtifactFiles} from '../../src/pipeline/inputs.js'
import {MODELS} from '../helpers/fixtures.js'

describe('pipeline input files', () => {
  it('lists an ONNX model with its external data, and remembers the list with the digest until the file changes', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-inputs-'))
    const model = path.join(dir, 'model.onnx')
    await writeModel(await readModel(MODELS.blazeface), model, {externalData: 'always'})
    const data = fs.readdirSync(dir).filter((f) => f !== 'model.onnx').map((f) => path.join(dir, f))
    expect(data.length).toBeGreaterThan(0)

    const memo = new DigestMemo(path.join(dir, 'digests.json'))
    await memo.load()
    expect(await inputArtifactFiles(model, memo)).toEqual([model, ...data.sort()])

    // The same file: the remembered list, not a second parse. A changed file: parsed again.
    let parses = 0
    const count = async () => (parses++, ['x.data'])
    await memo.derived(model, 'probe', count)
    await memo.derived(model, 'probe', count)
    expect(parses).toBe(1)
    await memo.save()
    const again = new DigestMemo(path.join(dir, 'digests.json'))
    await again.load()
    expect(await again.derived(model, 'probe', count)).toEqual(['x.data'])
    expect(parses).toBe(1)

    await writeModel(await readModel(MODELS.blazeface), model, {externalData: 'never'})
    expect(await inputArtifactFiles(model, again)).toEqual([model])
    await again.derived(model, 'probe', count)
    expect(parses).toBe(2)
    fs.rmSync(dir, {recursive: true, force: true})
  })
})
