import {KilnError} from '../../../errors.js'
import {DataType} from '../../../onnx/proto.js'
import {GraphBuilder, TF_DTYPES, TO_NCHW} from '../builder.js'
import type {Val} from '../builder.js'
import type {ConvertedGraph, InterfaceTensor} from '../graph/convert.js'
import type {Weight} from '../manifest.js'
import {unsupportedError} from '../unsupported.js'
import type {LayerConfig, LayerContext} from './context.js'
import {LAYER_LIST, NESTED_MODEL_CLASSES} from './layer-list.js'

export interface LayersConvertOptions {
  nchw: boolean
  opset: number
  customOpDomain?: string
}

interface ModelConfig {
  name: string
  layers: LayerConfig[]
  input_layers: [string, number, number][]
  output_layers: [string, number, number][]
}

function badTopology(what: string): KilnError {
  return new KilnError(`layers model topology is malformed: ${what}`, {code: 'E_TFJS_MANIFEST', tryMessage: 'Re-save the model with model.save() or tensorflowjs_converter.'})
}

/** A Sequential model as the functional graph it stands for. */
function sequentialAsFunctional(layer: {config: any; name?: string}): ModelConfig {
  const layers: LayerConfig[] = (Array.isArray(layer.config) ? layer.config : layer.config?.layers) ?? []
  if (!layers.length) throw badTopology('a Sequential model with no layers')
  const name: string = layer.config?.name ?? layer.name ?? 'sequential'
  const out: LayerConfig[] = []
  let prev: string
  let first = 0
  if (layers[0]!.class_name === 'InputLayer') {
    prev = layers[0]!.config.name
    out.push({...layers[0]!, name: prev, inbound_nodes: []})
    first = 1
  } else {
    const shape = layers[0]!.config.batch_input_shape ?? (layers[0]!.config.input_shape ? [null, ...layers[0]!.config.input_shape] : undefined)
    if (!shape) throw badTopology(`Sequential model '${name}' does not declare its input shape`)
    prev = `${layers[0]!.config.name}_input`
    out.push({class_name: 'InputLayer', name: prev, config: {name: prev, batch_input_shape: shape, dtype: layers[0]!.config.dtype ?? 'float32'}, inbound_nodes: []})
  }
  for (const l of layers.slice(first)) {
    out.push({...l, name: l.config.name, inbound_nodes: [[[prev, 0, 0, {}]]]})
    prev = l.config.name
  }
  return {name, layers: out, input_layers: [[out[0]!.name!, 0, 0]], output_layers: [[prev, 0, 0]]}
}

function asFunctional(layer: {class_name: string; config: any; name?: string}): ModelConfig {
  if (layer.class_name === 'Sequential') return sequentialAsFunctional(layer)
  const c = layer.config
  if (!c || !Array.isArray(c.layers) || !Array.isArray(c.input_layers) || !Array.isArray(c.output_layers)) throw badTopology(`model '${layer.name ?? c?.name}' has no layers/input_layers/output_layers`)
  return {name: c.name, layers: c.layers.map((l: LayerConfig) => ({...l, name: l.name ?? l.config.name})), input_layers: c.input_layers, output_layers: c.output_layers}
}

function collectUnsupported(model: ModelConfig, counts: Map<string, number>): void {
  for (const l of model.layers) {
    if (NESTED_MODEL_CLASSES.has(l.class_name)) collectUnsupported(asFunctional(l), counts)
    else if (!LAYER_LIST[l.class_name]) counts.set(l.class_name, (counts.get(l.class_name) ?? 0) + 1)
  }
}

/** Convert a TF.js / Keras layers model (Sequential or functional, nested models included). */
export function convertLayersModel(topology: any, weights: Map<string, Weight>, options: LayersConvertOptions): ConvertedGraph {
  const root = topology.model_config ?? topology
  if (!root?.class_name) throw badTopology('no model_config.class_name')
  const model = asFunctional(root)
  const unknown = new Map<string, number>()
  collectUnsupported(model, unknown)
  if (unknown.size && !options.customOpDomain) throw unsupportedError('layer class', unknown)

  const b = new GraphBuilder(options.opset)
  const inputs: InterfaceTensor[] = []
  const outputNames = model.output_layers.map(([n]) => n)
  const inputNames = model.input_layers.map(([n]) => n)
  for (const n of [...inputNames, ...outputNames]) b.reserve(n)

  const findWeight = (scope: string[], layer: string, key: string): Weight | undefined => {
    const exact = weights.get(`${layer}/${key}`)
    if (exact) return exact
    for (const [name, w] of weights) if (name.endsWith(`/${layer}/${key}`) || name.startsWith(`${scope.join('/')}/${layer}/`) && name.endsWith(`/${key}`)) return w
    return undefined
  }

  const feedInputs = new Map<string, Val>()
  for (const l of model.layers.filter((x) => x.class_name === 'InputLayer')) {
    const shape: number[] = (l.config.batch_input_shape ?? l.config.batchInputShape ?? []).map((d: number | null) => (d === null ? -1 : d))
    const dtype = TF_DTYPES[l.config.dtype ?? 'float32'] ?? DataType.FLOAT
    const nchw = options.nchw && shape.length === 4
    const name = l.name!
    b.addInput(name, dtype, (nchw ? TO_NCHW.map((p) => shape[p]!) : shape).map((d, i) => (d < 0 ? (i === 0 ? 'batch' : -1) : d)))
    inputs.push({name, source: name, dtype, shape, intHigh: embeddingRange(model, name)})
    feedInputs.set(name, {name, dtype, shape, nchw})
  }

  const outs = runModel(b, model, [], inputNames.map((n) => feedInputs.get(n)!), findWeight, true, options.customOpDomain)
  const outputs: InterfaceTensor[] = []
  outs.forEach((v, i) => {
    const name = outputNames[i]!
    b.addOutput(name, v, v.dtype, options.nchw)
    outputs.push({name, source: name, dtype: v.dtype, shape: v.shape ?? []})
  })
  return {builder: b, inputs, outputs}
}

/** Largest valid index for an input that feeds an Embedding directly, so samples stay in range. */
function embeddingRange(model: ModelConfig, input: string): number | undefined {
  const e = model.layers.find((l) => l.class_name === 'Embedding' && JSON.stringify(l.inbound_nodes ?? []).includes(`"${input}"`))
  return e ? e.config.input_dim : undefined
}

type WeightFinder = (scope: string[], layer: string, key: string) => Weight | undefined

/** Run one (possibly nested) functional model's layers on `inputs`; returns its outputs. */
function runModel(b: GraphBuilder, model: ModelConfig, scope: string[], inputs: Val[], findWeight: WeightFinder, top: boolean, domain?: string): Val[] {
  const values = new Map<string, Val>()
  const key = (layer: string, node: number, tensor: number): string => `${layer}#${node}#${tensor}`
  // A nested model's node 0 is its own construction, so its calls count from 1 in TF.js-written
  // topologies; Python Keras writes them from 0. Stored from 1, looked up either way.
  const nested = new Set(model.layers.filter((l) => NESTED_MODEL_CLASSES.has(l.class_name)).map((l) => l.name!))
  const lookup = (layer: string, node: number, tensor: number): Val | undefined =>
    values.get(key(layer, node, tensor)) ?? (nested.has(layer) ? values.get(key(layer, node + 1, tensor)) : undefined)
  model.input_layers.forEach(([n], i) => values.set(key(n, 0, 0), inputs[i]!))
  const pending = model.layers.filter((l) => l.class_name !== 'InputLayer')
  const callCount = new Map<string, number>()
  let progress = true
  while (pending.length && progress) {
    progress = false
    for (let i = 0; i < pending.length; i++) {
      const l = pending[i]!
      const calls: any[] = l.inbound_nodes ?? []
      const done = callCount.get(l.name!) ?? 0
      if (done >= calls.length) {
        pending.splice(i--, 1)
        continue
      }
      const call = normaliseCall(calls[done])
      const ins = call.map(([n, node, t]) => lookup(n, node, t))
      if (ins.some((v) => !v)) continue
      const outs = runLayer(b, l, scope, ins as Val[], findWeight, top && model.output_layers.some(([n]) => n === l.name), domain)
      outs.forEach((v, t) => values.set(key(l.name!, nested.has(l.name!) ? done + 1 : done, t), v))
      callCount.set(l.name!, done + 1)
      progress = true
    }
  }
  return model.output_layers.map(([n, node, t]) => {
    const v = lookup(n, node, t)
    if (!v) throw badTopology(`output '${n}' of model '${model.name}' cannot be reached from its inputs`)
    return v
  })
}

/** Keras 2 writes a call as [[name, node, tensor, kwargs], ...]; Keras 3 style as {args: ...}. */
function normaliseCall(call: any): [string, number, number][] {
  if (Array.isArray(call)) return call.map((c: any[]) => [c[0], c[1] ?? 0, c[2] ?? 0])
  throw badTopology('an inbound node in an unknown format')
}

function runLayer(b: GraphBuilder, layer: LayerConfig, scope: string[], inputs: Val[], findWeight: WeightFinder, isOutput: boolean, domain?: string): Val[] {
  const name = layer.name ?? layer.config.name
  if (NESTED_MODEL_CLASSES.has(layer.class_name)) {
    const inner = asFunctional(layer)
    return runModel(b, inner, [...scope, name], inputs, findWeight, false, domain)
  }
  const convert = LAYER_LIST[layer.class_name]
  if (!convert) {
    // Kept for a runtime that implements the layer; its config travels as a JSON attribute.
    b.customOps.set(layer.class_name, (b.customOps.get(layer.class_name) ?? 0) + 1)
    return [b.op(layer.class_name, inputs.map((v) => b.logicalName(v)), {config: JSON.stringify(layer.config)}, {hint: isOutput ? `${name}_out` : name, dtype: inputs[0]?.dtype ?? DataType.FLOAT}, domain)]
  }
  const ctx: LayerContext = {
    b,
    layer,
    cfg: layer.config,
    name,
    inputs,
    hint: isOutput ? `${name}_out` : name,
    weight: (k) => findWeight(scope, name, k),
    need: (k) => {
      const w = findWeight(scope, name, k)
      if (!w) throw new KilnError(`${layer.class_name} layer '${name}' has no weight '${k}' in the manifest`, {code: 'E_TFJS_MANIFEST', tryMessage: 'The model.json and its weight shards do not match; re-save the model.'})
      return w
    },
  }
  return convert(ctx)
}
