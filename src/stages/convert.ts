import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {z} from 'zod'
import {ModelError, UsageError} from '../errors.js'
import {readModel, writeModel} from '../onnx/model.js'
import {MAX_IR_VERSION, MAX_OPSET, MIN_SOURCE_OPSET, upgradeModel} from '../onnx/opset.js'
import type {OpsetUpgradeResult} from '../onnx/opset.js'
import {defineStage} from './types.js'
import type {ArtifactRecord, StageContext} from './types.js'

const schema = z
  .object({
    to: z.literal('onnx').default('onnx').describe('Output format. ONNX is kiln\'s working format.'),
    opset: z.number().int().min(MIN_SOURCE_OPSET).max(MAX_OPSET).optional().describe('Default-domain opset to reach; omitted keeps the model\'s (TF.js: the converter\'s default).'),
    irVersion: z.number().int().min(3).max(MAX_IR_VERSION).optional().describe('IR version to write; omitted keeps the model\'s, raised to what the opset needs.'),
    layout: z.enum(['nhwc', 'nchw']).optional().describe('TF.js input only: expose the interface as NHWC (default, as the model has it) or NCHW.'),
    verify: z.union([z.boolean(), z.object({tolerance: z.number().positive().optional(), samples: z.number().int().positive().optional(), dataset: z.string().min(1).optional()}).strict()]).optional().describe('TF.js input only: compare the ONNX model with TF.js itself after conversion.'),
    customOpDomain: z.string().min(1).optional().describe('TF.js input only: emit unsupported ops in this custom-op domain instead of failing.'),
  })
  .strict()

type ConvertParams = z.output<typeof schema>

/** A TF.js model is a `model.json` (layers or graph), or a directory holding one. */
async function tfjsModelJson(input: string): Promise<string | undefined> {
  if (input.endsWith('.json')) return input
  const stat = await fsp.stat(input).catch(() => undefined)
  if (stat?.isDirectory()) {
    const candidate = path.join(input, 'model.json')
    if (await fsp.stat(candidate).catch(() => undefined)) return candidate
  }
  return undefined
}

async function fileBytes(file: string, extra?: string): Promise<number> {
  const sizes = await Promise.all([file, extra].filter(Boolean).map((f) => fsp.stat(f!).then((s) => s.size)))
  return sizes.reduce((a, b) => a + b, 0)
}

/** Opens the written model in onnxruntime, so a broken conversion fails here and not in a later stage. */
async function assertLoads(file: string): Promise<void> {
  const {createSession} = await import('../runtime/ort.js')
  try {
    const session = await createSession(file)
    await session.release()
  } catch (error) {
    throw new ModelError(`the converted model does not load in onnxruntime: ${(error as Error).message}`, {
      code: 'E_CONVERT_INVALID',
      cause: error,
      tryMessage: 'Try another target opset (`opset:`); report the model if the input loads in onnxruntime.',
    })
  }
}

async function convertOnnx(ctx: StageContext, input: ArtifactRecord, params: ConvertParams) {
  const tfjsOnly = (['layout', 'verify', 'customOpDomain'] as const).filter((k) => params[k] !== undefined)
  if (tfjsOnly.length > 0) {
    throw new UsageError(`convert: ${tfjsOnly.join(', ')} only apply to TF.js input, and the input is ONNX`, {
      code: 'E_CONVERT_OPTION',
      tryMessage: `Remove ${tfjsOnly.join(', ')} from the convert stage's \`with\`.`,
    })
  }
  ctx.progress('reading model')
  const model = await readModel(input.path)
  ctx.progress('upgrading opset')
  const result: OpsetUpgradeResult = upgradeModel(model, {opset: params.opset, irVersion: params.irVersion})
  const out = path.join(ctx.outDir, 'model.onnx')
  ctx.progress('writing model')
  const written = await writeModel(model, out)
  ctx.progress('checking it loads')
  await assertLoads(out)
  const rewrites = Object.entries(result.rewritten)
  ctx.log.info(
    `opset ${result.fromOpset} → ${result.toOpset}, IR ${result.fromIrVersion} → ${result.toIrVersion}` +
      (rewrites.length ? `; rewrote ${rewrites.map(([op, n]) => `${n} ${op}`).join(', ')}` : '; no op needed a rewrite'),
  )
  return {
    artifact: {path: out, format: 'onnx'},
    metrics: {
      from: 'onnx',
      to: 'onnx',
      fromOpset: result.fromOpset,
      toOpset: result.toOpset,
      fromIrVersion: result.fromIrVersion,
      toIrVersion: result.toIrVersion,
      opsRewritten: result.rewritten,
      nodesBefore: result.nodesBefore,
      nodesAfter: result.nodesAfter,
      inputBytes: input.bytes,
      outputBytes: await fileBytes(out, written.externalFile),
      externalData: Boolean(written.externalFile),
    },
  }
}

async function convertFromTfjs(ctx: StageContext, input: ArtifactRecord, modelJson: string, params: ConvertParams) {
  const {convertTfjs} = await import('../convert/tfjs/index.js')
  const out = path.join(ctx.outDir, 'model.onnx')
  ctx.progress('converting TF.js model')
  const result = await convertTfjs(modelJson, out, {
    layout: params.layout,
    opset: params.opset,
    verify: typeof params.verify === 'object' && params.verify.dataset ? {...params.verify, dataset: ctx.dataset(params.verify.dataset)} : params.verify,
    customOpDomain: params.customOpDomain,
    signal: ctx.signal,
    log: (m) => ctx.log.info(m),
  })
  const metrics: Record<string, unknown> = {from: 'tfjs', to: 'onnx', ...result.metrics}
  if (params.irVersion !== undefined) {
    const model = await readModel(out)
    const r = upgradeModel(model, {irVersion: params.irVersion})
    await writeModel(model, out)
    Object.assign(metrics, {fromIrVersion: r.fromIrVersion, toIrVersion: r.toIrVersion})
  }
  await assertLoads(out)
  metrics.inputBytes = input.bytes
  metrics.outputBytes = await fileBytes(out, (await fsp.stat(`${out}.data`).catch(() => undefined)) ? `${out}.data` : undefined)
  return {artifact: {path: out, format: 'onnx'}, metrics}
}

export default defineStage({
  kind: 'convert',
  version: '1',
  description: 'Convert a model to ONNX: TF.js → ONNX, or ONNX opset/IR upgrade with exact op rewrites.',
  schema,
  datasets: (p) => (typeof p.verify === 'object' && p.verify.dataset ? [p.verify.dataset] : []),
  async run(ctx, input, params) {
    const modelJson = await tfjsModelJson(input.path)
    return modelJson ? convertFromTfjs(ctx, input, modelJson, params) : convertOnnx(ctx, input, params)
  },
})
