import {KilnError} from '../../../errors.js'
import type {GraphBuilder, Val} from '../builder.js'
import type {Attrs, TfNode} from './attrs.js'
import type {OpDef} from './op-list.js'

/** What one op converter sees: the TF node, its converted inputs and the graph being built. */
export interface OpContext {
  node: TfNode
  attrs: Attrs
  inputs: Val[]
  b: GraphBuilder
  def: OpDef
  /** Name to give the op's main output. */
  hint: string
}

/** Converts one TF op; returns its outputs in TF output order. */
export type OpConverter = (ctx: OpContext) => Val[]

export function unsupportedAttr(ctx: OpContext, what: string): KilnError {
  return new KilnError(`${ctx.node.op} node '${ctx.node.name}': ${what} is not supported by the ONNX converter`, {
    code: 'E_TFJS_UNSUPPORTED',
    tryMessage: 'Re-export the model without this feature, or pass --custom-op-domain to keep the node for a custom-op runtime.',
  })
}

/** Numpy-style broadcast of two shapes (-1 for unknown dims). */
export function broadcastShapes(a: number[] | undefined, b: number[] | undefined): number[] | undefined {
  if (!a || !b) return undefined
  const rank = Math.max(a.length, b.length)
  const out: number[] = []
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1
    const y = b[b.length - rank + i] ?? 1
    out.push(x === 1 ? y : y === 1 ? x : x === -1 ? y : x)
  }
  return out
}

/** Normalise a possibly negative axis. */
export function axisOf(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis
}
