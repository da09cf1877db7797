#!/usr/bin/env node
/**
 * Write schemas/pipeline.schema.json (JSON Schema draft 2020-12) from the zod schema in
 * dist/pipeline/schema.js, with each built-in stage's `with` schema selected by `uses`, so editors
 * complete and check stage parameters too. Runs after `tsc` in `npm run build`.
 */
import {mkdir, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {z} from 'zod'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.join(root, 'schemas', 'pipeline.schema.json')
const {PipelineSchema} = await import(path.join(root, 'dist/pipeline/schema.js'))
const {builtinKinds, loadStage} = await import(path.join(root, 'dist/stages/registry.js'))

// `io: 'input'` describes the file as written: fields with defaults are optional.
const options = {target: 'draft-2020-12', io: 'input', unrepresentable: 'any'}
const schema = z.toJSONSchema(PipelineSchema, options)
schema.title = 'kiln pipeline file'

const stageItem = schema.properties.stages.items
const kinds = builtinKinds()
const branches = []
let failed = 0
for (const kind of kinds) {
  let stage
  try {
    stage = await loadStage(kind, root)
  } catch (error) {
    // A stage module that fails to load must not block the build of everything else; say so loudly.
    failed++
    process.stderr.write(`export-schema: warning: built-in stage '${kind}' did not load (${error.message}); its parameters are left out\n`)
    continue
  }
  const withSchema = z.toJSONSchema(stage.schema, options)
  delete withSchema.$schema
  if (stage.description && !withSchema.description) withSchema.description = stage.description
  branches.push({if: {properties: {uses: {const: kind}}, required: ['uses']}, then: {properties: {with: withSchema}}})
}
stageItem.properties.uses = {
  description: stageItem.properties.uses.description,
  anyOf: [
    {type: 'string', enum: kinds, description: 'A built-in stage kind.'},
    {type: 'string', pattern: '^(\\./|\\.\\./|/|file:)|\\.(m?js|ts)$', description: 'A custom stage module (default export: a stage), relative to the pipeline file.'},
  ],
}
if (branches.length > 0) stageItem.allOf = branches

await mkdir(path.dirname(out), {recursive: true})
const temp = `${out}.${process.pid}.tmp`
await writeFile(temp, `${JSON.stringify(schema, null, 2)}\n`)
await rename(temp, out)
process.stderr.write(`export-schema: wrote ${path.relative(root, out)} (${branches.length} stage kind(s)${failed ? `, ${failed} skipped` : ''})\n`)
