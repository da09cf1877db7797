import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {parse} from 'yaml'
import {z} from 'zod'
import {PipelineSchema} from '../../src/pipeline/schema.js'
import {closest, didYouMean, editDistance} from '../../src/pipeline/suggest.js'
import {builtinKinds, loadStage} from '../../src/stages/registry.js'
import {ROOT} from '../helpers/cli.js'

const options = {target: 'draft-2020-12', io: 'input', unrepresentable: 'any'} as const

type Json = Record<string, any>

async function committedSchema(): Promise<Json> {
  return JSON.parse(await readFile(path.join(ROOT, 'schemas', 'pipeline.schema.json'), 'utf8')) as Json
}

/** Every object schema reachable in a JSON Schema, with its path. */
function objects(node: unknown, at = '#', out: [string, Json][] = []): [string, Json][] {
  if (Array.isArray(node)) node.forEach((n, i) => objects(n, `${at}/${i}`, out))
  else if (node && typeof node === 'object') {
    const o = node as Json
    if (o.type === 'object' && o.properties) out.push([at, o])
    for (const [k, v] of Object.entries(o)) objects(v, `${at}/${k}`, out)
  }
  return out
}

describe('the pipeline JSON Schema', () => {
  it('is the zod schema exported as draft 2020-12, with stage kinds and their parameters selected by `uses`', async () => {
    const json = await committedSchema()
    expect(json.$schema).toBe('https://json-schema.org/draft/2020-12/schema')
    const fresh = z.toJSONSchema(PipelineSchema, options) as Json
    // Everything but the stage entry is exactly the zod schema.
    for (const key of ['version', 'name', 'model', 'target', 'profiles', 'datasets']) expect(json.properties[key]).toEqual(fresh.properties[key])
    expect(json.required).toEqual(fresh.required)
    const item = json.properties.stages.items
    expect(item.properties.with).toEqual(fresh.properties.stages.items.properties.with)
    const kinds = builtinKinds()
    expect(item.properties.uses.anyOf[0].enum).toEqual(kinds)
    const branches = new Map<string, Json>((item.allOf ?? []).map((b: Json) => [b.if.properties.uses.const, b.then.properties.with]))
    expect([...branches.keys()]).toEqual(kinds)
    for (const kind of kinds) {
      const stage = await loadStage(kind, ROOT)
      const {$schema: _drop, ...expected} = z.toJSONSchema(stage.schema, options) as Json
      expect(branches.get(kind), kind).toMatchObject(expected)
    }
  })

  it('rejects unknown keys everywhere and describes every field for editors', async () => {
    const json = await committedSchema()
    const pipelineObjects = objects({...json, properties: {...json.properties, stages: {...json.properties.stages, items: {...json.properties.stages.items, allOf: undefined}}}})
    expect(pipelineObjects.length).toBeGreaterThanOrEqual(5)
    for (const [at, o] of pipelineObjects) {
      expect(o.additionalProperties, at).toBe(false)
      for (const [key, prop] of Object.entries(o.properties as Json)) expect((prop as Json).description, `${at}/properties/${key}`).toBeTruthy()
    }
  })

  it('validates the shape in DESIGN.md', () => {
    const design = `version: 1
name: fashion-cnn
model: ./models/fashion_cnn.onnx
target: cpu-2t
profiles:
  edge-1t: { threads: 1, providers: [cpu], batch: [1] }
datasets:
  calib: { path: ./data/calib.npz, inputs: { input: images }, limit: 256 }
  test:  { path: ./data/test.npz, inputs: { input: images }, labels: labels }
stages:
  - uses: convert
    with: { to: onnx, opset: 17 }
  - uses: encrypt
    with: { key: env:KILN_MODEL_KEY }
  - uses: publish
    with: { to: [ "s3://models/fashion-cnn/{run.id}/", "oip+http://127.0.0.1:8000" ] }
`
    const r = PipelineSchema.safeParse(parse(design))
    expect(r.success, JSON.stringify(r.error?.issues)).toBe(true)
    expect(r.data?.profiles['edge-1t']).toEqual({threads: 1, providers: ['cpu'], batch: [1]})
  })
})

describe('did-you-mean', () => {
  it('measures edits, counting an adjacent swap as one', () => {
    expect(editDistance('sparsity', 'sparsity')).toBe(0)
    expect(editDistance('sparsty', 'sparsity')).toBe(1)
    expect(editDistance('spasrity', 'sparsity')).toBe(1)
    expect(editDistance('Quantize', 'quantise')).toBe(1)
    expect(editDistance('', 'abc')).toBe(3)
  })

  it('suggests only plausible typos', () => {
    expect(closest('quantise', ['convert', 'quantize', 'prune'])).toBe('quantize')
    expect(closest('calib', ['calibration', 'test'])).toBe('calibration')
    expect(closest('e', ['a', 'b'])).toBeUndefined()
    expect(closest('benchmark', ['to'])).toBeUndefined()
    expect(didYouMean('metrix', ['metrics', 'dataset'])).toBe('did you mean `metrics`?')
    expect(didYouMean('zzz', ['a1', 'b1'])).toBe('expected one of: `a1`, `b1`')
  })
})
