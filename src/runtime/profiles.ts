import os from 'node:os'
import {UsageError} from '../errors.js'
import type {HardwareProfile} from '../stages/types.js'

/** Built-in hardware profiles. Custom profiles in the pipeline file sit beside (and may shadow) them. */
export const BUILTIN_PROFILES: Record<string, HardwareProfile> = {
  'cpu-1t': {name: 'cpu-1t', threads: 1, interOpThreads: 1, providers: ['cpu'], batch: [1]},
  'cpu-2t': {name: 'cpu-2t', threads: 2, interOpThreads: 1, providers: ['cpu'], batch: [1]},
  'cpu-all': {name: 'cpu-all', threads: Math.max(1, os.availableParallelism()), interOpThreads: 1, providers: ['cpu'], batch: [1]},
}

/** A profile by name, from the pipeline's own profiles or the built-ins; a clear error otherwise. */
export function resolveProfile(name: string, custom: Record<string, Partial<HardwareProfile>> = {}): HardwareProfile {
  const own = custom[name]
  if (own) return {...BUILTIN_PROFILES['cpu-2t']!, ...own, name}
  const builtin = BUILTIN_PROFILES[name]
  if (builtin) return builtin
  throw new UsageError(`unknown hardware profile '${name}'`, {
    code: 'E_PROFILE',
    tryMessage: `Known profiles: ${[...Object.keys(custom), ...Object.keys(BUILTIN_PROFILES)].join(', ')}; or declare it under profiles:`,
  })
}
