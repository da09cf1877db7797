import {KilnError} from '../../../errors.js'
import type {GraphBuilder, Val} from '../builder.js'
import type {Weight} from '../manifest.js'

/** One Keras layer's config, as saved in model.json. */
export interface LayerConfig {
  class_name: string
  name?: string
  config: Record<string, any>
  inbound_nodes?: any[]
}

export interface LayerContext {
  b: GraphBuilder
  layer: LayerConfig
  cfg: Record<string, any>
  name: string
  inputs: Val[]
  /** The layer's weight `key` (kernel, bias, gamma...), or undefined when the manifest lacks it. */
  weight: (key: string) => Weight | undefined
  /** Like `weight` but a missing weight is an error. */
  need: (key: string) => Weight
  hint: string
}

export type LayerConverter = (ctx: LayerContext) => Val[]

export function layerError(ctx: LayerContext, what: string): KilnError {
  return new KilnError(`${ctx.layer.class_name} layer '${ctx.name}': ${what} is not supported by the ONNX converter`, {
    code: 'E_TFJS_UNSUPPORTED',
    tryMessage: 'Change the layer configuration before saving the model, or convert a graph-model export instead.',
  })
}

/** Keras 2-tuple arguments come as a number or a list. */
export function pair(v: number | number[] | undefined, fallback: number): [number, number] {
  if (v === undefined || v === null) return [fallback, fallback]
  return typeof v === 'number' ? [v, v] : [v[0]!, v[1] ?? v[0]!]
}
