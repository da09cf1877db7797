import {KilnError} from '../../errors.js'

/** One error naming every unsupported op or layer class with its count. */
export function unsupportedError(what: 'op' | 'layer class', counts: Map<string, number>): KilnError {
  const list = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
  const total = list.reduce((a, [, c]) => a + c, 0)
  return new KilnError(
    `the model uses ${list.length} unsupported ${what}${list.length === 1 ? '' : what === 'op' ? 's' : 'es'} (${total} ${total === 1 ? 'use' : 'uses'}): ${list.map(([k, c]) => `${k} ×${c}`).join(', ')}`,
    {
      code: what === 'op' ? 'E_TFJS_UNSUPPORTED_OPS' : 'E_TFJS_UNSUPPORTED_LAYERS',
      tryMessage:
        what === 'op'
          ? 'Pass --custom-op-domain DOMAIN (stage option `customOpDomain`) to keep these nodes for a runtime that implements them, or re-export the model without them.'
          : 'Replace these layers with supported ones before saving the model, or convert a graph-model export (tensorflowjs_converter --output_format=tfjs_graph_model) instead.',
    },
  )
}
