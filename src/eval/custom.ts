import path from 'node:path'
import {pathToFileURL} from 'node:url'
import {KilnError, UsageError} from '../errors.js'
import type {Accumulator, MetricInput} from './metrics.js'

/**
 * A custom metric module (`metrics: [./my-metric.js]`), default-exported, in the same style as
 * custom stages: a name, and pure functions over a state the module owns.
 *
 * ```js
 * export default {
 *   name: 'meanMaxScore',
 *   init: () => ({sum: 0, n: 0}),
 *   update: (s, {outputs, baseline, labels, size}) => { ...; return s },
 *   result: (s) => s.sum / s.n,           // a number, or {name: number, ...}
 * }
 * ```
 */
export interface CustomMetric<S = unknown> {
  name: string
  description?: string
  init(): S
  /** Called once per batch; return the new state (or mutate and return the same). */
  update(state: S, batch: MetricInput): S | void
  result(state: S): number | Record<string, number>
}

/** Helper for metric modules: keeps the state type tied together. */
export function defineMetric<S>(metric: CustomMetric<S>): CustomMetric<S> {
  return metric
}

export const isCustomMetricRef = (m: string): boolean => m.startsWith('./') || m.startsWith('../') || m.startsWith('/') || /\.(m?js|ts)$/.test(m)

/** Load a custom metric module relative to `baseDir` and wrap it as an accumulator. */
export async function loadCustomMetric(ref: string, baseDir: string): Promise<Accumulator> {
  const file = path.resolve(baseDir, ref)
  let mod: {default?: unknown}
  try {
    mod = (await import(pathToFileURL(file).href)) as {default?: unknown}
  } catch (error) {
    throw new KilnError(`cannot load custom metric module ${ref}: ${(error as Error).message}`, {
      code: 'E_METRIC_MODULE',
      exitCode: 2,
      cause: error,
      tryMessage: 'Check the path (relative to the pipeline file) and that the module loads with `node`.',
    })
  }
  const m = (mod.default ?? mod) as Partial<CustomMetric>
  const missing = (['name', 'init', 'update', 'result'] as const).filter((k) => m?.[k] === undefined)
  if (missing.length || typeof m.update !== 'function' || typeof m.result !== 'function' || typeof m.init !== 'function') {
    throw new UsageError(`${ref} does not export a metric${missing.length ? ` (missing ${missing.join(', ')})` : ''}`, {
      code: 'E_METRIC_MODULE',
      tryMessage: 'Export default {name, init(), update(state, batch), result(state)}.',
    })
  }
  let state = m.init!()
  return {
    names: [m.name!],
    update(b) {
      const next = m.update!(state, b)
      if (next !== undefined) state = next
    },
    result() {
      const r = m.result!(state)
      if (typeof r === 'number') return {[m.name!]: r}
      if (r && typeof r === 'object') return Object.fromEntries(Object.entries(r).map(([k, v]) => [`${m.name}.${k}`, Number(v)]))
      throw new KilnError(`custom metric ${m.name} returned ${typeof r}, expected a number or an object of numbers`, {code: 'E_METRIC_MODULE'})
    },
  }
}
