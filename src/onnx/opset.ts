import {ModelError} from '../errors.js'
import {ScopeFacts} from './infer.js'
import {BREAKING, KNOWN_OPS, Refusal} from './opset-rules.js'
import type {RewriteContext} from './opset-rules.js'
import {OperatorSetIdProtoSchema, create} from './proto.js'
import type {GraphProto, ModelProto, NodeProto} from './proto.js'

/** Oldest default-domain opset kiln upgrades from: older ones used per-op broadcast and consumed_inputs semantics. */
export const MIN_SOURCE_OPSET = 7
/** Newest opset whose breaking changes kiln's upgrade rules cover. */
export const MAX_OPSET = 21
/** Newest IR version kiln writes. */
export const MAX_IR_VERSION = 10

/** The IR version that an opset's release introduced: the least a model of that opset may declare. */
export function minIrVersion(opset: number): number {
  if (opset <= 8) return 3
  if (opset === 9) return 4
  if (opset === 10) return 5
  if (opset === 11) return 6
  if (opset <= 14) return 7
  if (opset <= 18) return 8
  if (opset <= 20) return 9
  return 10
}

export interface OpsetUpgradeOptions {
  /** Default-domain opset to reach (default: keep the model's). Downgrades are refused. */
  opset?: number
  /** IR version to write (default: the model's, raised to what the opset needs). */
  irVersion?: number
}

export interface OpsetUpgradeResult {
  fromOpset: number
  toOpset: number
  fromIrVersion: number
  toIrVersion: number
  /** Nodes rewritten, by op type (as it was before the rewrite). */
  rewritten: Record<string, number>
  nodesBefore: number
  nodesAfter: number
}

const isDefaultDomain = (d: string) => d === '' || d === 'ai.onnx'

/**
 * Upgrade a model's default-domain opset in place, rewriting every node whose op changed meaning on
 * the way, in the main graph and every subgraph. Nothing is guessed: if any node cannot be carried
 * over, a ModelError lists all of them and the model is left untouched. Other domains are kept as
 * they are.
 */
export function upgradeModel(model: ModelProto, options: OpsetUpgradeOptions = {}): OpsetUpgradeResult {
  const defaults = model.opsetImport.filter((o) => isDefaultDomain(o.domain))
  const fromOpset = Math.max(0, ...defaults.map((o) => Number(o.version)))
  const toOpset = options.opset ?? fromOpset
  const fromIr = Number(model.irVersion)
  const convertHint = 'Upgrade the model with its exporter, or keep its current opset (omit `opset`).'
  if (!Number.isInteger(toOpset) || toOpset < fromOpset) {
    throw new ModelError(`cannot convert opset ${fromOpset} down to ${toOpset}: downgrades are not supported`, {
      code: 'E_OPSET_DOWNGRADE',
      tryMessage: `Ask for opset ${fromOpset} or later, or re-export the model at the opset you need.`,
    })
  }
  if (toOpset > MAX_OPSET) {
    throw new ModelError(`opset ${toOpset} is newer than kiln's upgrade rules cover (up to ${MAX_OPSET})`, {code: 'E_OPSET_UNSUPPORTED', tryMessage: `Ask for opset ${MAX_OPSET} or earlier.`})
  }
  if (toOpset > fromOpset && fromOpset < MIN_SOURCE_OPSET) {
    throw new ModelError(`cannot upgrade from opset ${fromOpset}: kiln upgrades from opset ${MIN_SOURCE_OPSET} onwards`, {code: 'E_OPSET_UNSUPPORTED', tryMessage: convertHint})
  }
  const minIr = minIrVersion(toOpset)
  const toIr = options.irVersion ?? Math.max(fromIr, minIr)
  if (toIr < minIr || toIr < fromIr || toIr > MAX_IR_VERSION) {
    const why = toIr < fromIr ? `the model is already IR ${fromIr} (downgrades are not supported)` : toIr < minIr ? `opset ${toOpset} needs IR ${minIr} or later` : `kiln writes IR up to ${MAX_IR_VERSION}`
    throw new ModelError(`cannot write IR version ${toIr}: ${why}`, {code: 'E_IR_VERSION', tryMessage: `Use an IR version between ${Math.max(fromIr, minIr)} and ${MAX_IR_VERSION}, or omit irVersion.`})
  }
  if (toOpset > fromOpset && model.functions.some((f) => f.node.some((n) => isDefaultDomain(n.domain)))) {
    throw new ModelError('cannot upgrade a model with local functions over the default domain', {code: 'E_OPSET_UNSUPPORTED', tryMessage: convertHint})
  }

  const names = collectNames(model)
  const unique = (base: string) => {
    const clean = base.replace(/[^A-Za-z0-9_./:-]/g, '_') || 't'
    let name = clean
    for (let i = 1; names.has(name); i++) name = `${clean}_${i}`
    names.add(name)
    return name
  }
  const plan = new Map<GraphProto, NodeProto[]>()
  const rewritten: Record<string, number> = {}
  const refusals = new Map<string, number>()
  let nodesBefore = 0
  let nodesAfter = 0

  const visit = (graph: GraphProto, parent?: ScopeFacts) => {
    const facts = new ScopeFacts(graph, parent)
    const ctx: RewriteContext = {facts, unique}
    const list: NodeProto[] = []
    let changed = false
    for (const node of graph.node) {
      nodesBefore++
      for (const attr of node.attribute) {
        if (attr.g) visit(attr.g, facts)
        for (const g of attr.graphs) visit(g, facts)
      }
      if (!isDefaultDomain(node.domain) || toOpset === fromOpset) {
        list.push(node)
        continue
      }
      try {
        const out = upgradeNode(node, fromOpset, toOpset, ctx)
        if (out.length !== 1 || out[0] !== node) {
          changed = true
          rewritten[node.opType] = (rewritten[node.opType] ?? 0) + 1
        }
        list.push(...out)
      } catch (error) {
        if (!(error instanceof Refusal)) throw error
        const key = `${node.opType}: ${error.message}`
        refusals.set(key, (refusals.get(key) ?? 0) + 1)
        list.push(node)
      }
    }
    nodesAfter += list.length
    if (changed) plan.set(graph, list)
  }
  if (model.graph) visit(model.graph)

  if (refusals.size > 0) {
    const lines = [...refusals].map(([k, n]) => `  ${k}${n > 1 ? ` (${n} nodes)` : ''}`)
    throw new ModelError(`cannot upgrade opset ${fromOpset} → ${toOpset}; these ops have no safe rewrite:\n${lines.join('\n')}`, {
      code: 'E_OPSET_UNSUPPORTED',
      tryMessage: convertHint,
    })
  }
  for (const [graph, list] of plan) graph.node = list
  model.opsetImport = [
    create(OperatorSetIdProtoSchema, {domain: '', version: BigInt(toOpset)}),
    ...model.opsetImport.filter((o) => !isDefaultDomain(o.domain)),
  ]
  model.irVersion = BigInt(toIr)
  return {fromOpset, toOpset, fromIrVersion: fromIr, toIrVersion: toIr, rewritten, nodesBefore, nodesAfter}
}

/** Apply each breaking change between `from` (exclusive) and `to` (inclusive), following new nodes through later ones. */
function upgradeNode(node: NodeProto, from: number, to: number, ctx: RewriteContext): NodeProto[] {
  if (!KNOWN_OPS.has(node.opType)) throw new Refusal(`no upgrade rule for this op from opset ${from}`)
  const steps = Object.entries(BREAKING[node.opType] ?? {})
    .map(([v, adapter]) => [Number(v), adapter] as const)
    .filter(([v]) => v > from && v <= to)
    .sort((a, b) => a[0] - b[0])
  if (steps.length === 0) return [node]
  const [version, adapter] = steps[0]!
  return adapter(node, ctx).flatMap((n) => (n.opType === 'Constant' && n !== node ? [n] : upgradeNode(n, version, to, ctx)))
}

function collectNames(model: ModelProto): Set<string> {
  const names = new Set<string>()
  const visit = (graph: GraphProto) => {
    for (const v of [...graph.input, ...graph.output, ...graph.valueInfo]) names.add(v.name)
    for (const t of graph.initializer) names.add(t.name)
    for (const node of graph.node) {
      for (const n of [...node.input, ...node.output]) if (n) names.add(n)
      if (node.name) names.add(node.name)
      for (const attr of node.attribute) {
        if (attr.g) visit(attr.g)
        for (const g of attr.graphs) visit(g)
      }
    }
  }
  if (model.graph) visit(model.graph)
  return names
}
