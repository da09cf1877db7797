import path from 'node:path'
import {pathToFileURL} from 'node:url'
import {KilnError, UsageError} from '../errors.js'
import type {Stage} from './types.js'

/**
 * Built-in stage kinds, loaded lazily so `kiln --help` and `kiln validate` never pull in
 * onnxruntime or TF.js. Adding a kind is one entry here plus its module.
 */
const BUILTIN: Record<string, () => Promise<{default: Stage<any>}>> = {
  cluster: () => import('./cluster.js'),
  convert: () => import('./convert.js'),
  lowrank: () => import('./lowrank.js'),
  prune: () => import('./prune.js'),
  encrypt: () => import('./encrypt.js'),
  evaluate: () => import('./evaluate.js'),
  publish: () => import('./publish.js'),
  quantize: () => import('./quantize.js'),
  sign: () => import('./sign.js'),
}

export function registerBuiltin(kind: string, load: () => Promise<{default: Stage<any>}>): void {
  BUILTIN[kind] = load
}

export function builtinKinds(): string[] {
  return Object.keys(BUILTIN).sort()
}

export function isCustomStageRef(uses: string): boolean {
  return uses.startsWith('./') || uses.startsWith('../') || uses.startsWith('/') || uses.startsWith('file:') || /\.(m?js|ts)$/.test(uses)
}

function assertStage(value: unknown, where: string): Stage<any> {
  const s = value as Partial<Stage>
  const missing = (['kind', 'version', 'schema', 'run'] as const).filter((k) => s?.[k] === undefined)
  if (!s || typeof s !== 'object' || missing.length > 0) {
    throw new UsageError(`${where} does not export a stage${missing.length && s && typeof s === 'object' ? ` (missing ${missing.join(', ')})` : ''}`, {
      code: 'E_STAGE_MODULE',
      tryMessage: 'Export default an object {kind, version, description, schema (zod), run(ctx, input, params)}; see README "Custom stages".',
    })
  }
  if (typeof s.run !== 'function' || typeof (s.schema as {safeParse?: unknown}).safeParse !== 'function') {
    throw new UsageError(`${where}: 'run' must be a function and 'schema' a zod schema`, {code: 'E_STAGE_MODULE'})
  }
  return s as Stage<any>
}

const customCache = new Map<string, Promise<Stage<any>>>()

/** Resolve `uses:` to a stage: a built-in kind, or a module path relative to `baseDir`. */
export async function loadStage(uses: string, baseDir: string): Promise<Stage<any>> {
  const builtin = BUILTIN[uses]
  if (builtin) return assertStage((await builtin()).default, `built-in stage '${uses}'`)
  if (!isCustomStageRef(uses)) {
    throw new UsageError(`unknown stage kind '${uses}'`, {code: 'E_STAGE_UNKNOWN', tryMessage: `Built-in kinds: ${builtinKinds().join(', ')}; or a module path like ./my-stage.js`})
  }
  const file = uses.startsWith('file:') ? new URL(uses).pathname : path.resolve(baseDir, uses)
  let pending = customCache.get(file)
  if (!pending) {
    pending = import(pathToFileURL(file).href).then(
      (mod: {default?: unknown}) => assertStage(mod.default ?? mod, `custom stage module ${uses}`),
      (error: Error) => {
        throw new KilnError(`cannot load custom stage module ${uses}: ${error.message}`, {
          code: 'E_STAGE_MODULE',
          exitCode: 2,
          cause: error,
          tryMessage: 'Check the path (relative to the pipeline file) and that the module loads with `node`.',
        })
      },
    )
    customCache.set(file, pending)
  }
  return pending
}
