import os from 'node:os'
import {ExitCode, KilnError, UsageError} from '../errors.js'
import type {HardwareProfile} from '../stages/types.js'
import type {Ort} from './ort.js'
import {createSession, loadOrt} from './ort.js'

/** Defaults a profile gets for what it leaves out. */
export const PROFILE_DEFAULTS = {warmup: 10, iterations: 100} as const

/** The cores this process may use. */
function coreCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
}

/** Built-in profiles: pinned thread counts, so results compare across machines of one kind. */
export function builtinProfiles(): Record<string, HardwareProfile> {
  const all = coreCount()
  const cpu = (name: string, threads: number): HardwareProfile => ({
    name,
    threads,
    interOpThreads: 1,
    providers: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    batch: [1],
    warmup: PROFILE_DEFAULTS.warmup,
    iterations: PROFILE_DEFAULTS.iterations,
  })
  return {'cpu-1t': cpu('cpu-1t', 1), 'cpu-2t': cpu('cpu-2t', 2), 'cpu-all': cpu('cpu-all', all)}
}

/**
 * Whether sessions under this profile keep every core of this machine busy while they run (CPU
 * provider, at least as many intra-op threads as cores; 0 means all). Work on other threads
 * then competes with inference rather than overlapping it.
 */
export function usesAllCores(profile: HardwareProfile): boolean {
  return profile.providers.every((p) => p === 'cpu') && (profile.threads === 0 || profile.threads >= coreCount())
}

/** A custom profile as written in the pipeline file (no name; everything optional but what the schema defaults). */
export type ProfileInput = Partial<Omit<HardwareProfile, 'name'>>

/**
 * Built-in profiles merged with the pipeline's own. A custom profile with a built-in's name
 * replaces it; fields it leaves out take the `cpu-2t` values.
 */
export function resolveProfiles(custom: Record<string, ProfileInput> = {}): Record<string, HardwareProfile> {
  const out = builtinProfiles()
  const base = out['cpu-2t']!
  for (const [name, p] of Object.entries(custom)) {
    const merged: HardwareProfile = {...base, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)), name}
    // A profile that sets a duration measures for that long, not for the default iteration count.
    if (p.durationMs !== undefined && p.iterations === undefined) delete merged.iterations
    out[name] = merged
  }
  return out
}

/** One profile by name, or a usage error listing the known ones. */
export function getProfile(name: string, custom: Record<string, ProfileInput> = {}): HardwareProfile {
  const all = resolveProfiles(custom)
  const p = all[name]
  if (!p) {
    throw new UsageError(`unknown hardware profile '${name}'`, {
      code: 'E_PROFILE_UNKNOWN',
      tryMessage: `Known profiles: ${Object.keys(all).join(', ')}; or declare it under 'profiles:' in the pipeline file.`,
    })
  }
  return p
}

/** Execution providers this onnxruntime build offers (`bundled: false` ones need their libraries installed). */
export async function availableProviders(): Promise<{name: string; bundled: boolean}[]> {
  const ort = await loadOrt()
  const list = (ort as unknown as {listSupportedBackends?: () => {name: string; bundled: boolean}[]}).listSupportedBackends
  return list ? list() : [{name: 'cpu', bundled: true}]
}

/** Fail with a clear error when a profile names a provider this onnxruntime does not have. */
export async function checkProviders(profile: HardwareProfile): Promise<void> {
  const available = await availableProviders()
  const names = available.map((a) => a.name)
  const missing = profile.providers.filter((p) => !names.includes(p))
  if (missing.length) {
    throw new KilnError(`profile '${profile.name}' names execution provider${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which this onnxruntime does not have`, {
      code: 'E_PROVIDER_UNAVAILABLE',
      exitCode: ExitCode.invalid,
      tryMessage: `Available providers: ${available.map((a) => (a.bundled ? a.name : `${a.name} (needs its libraries installed)`)).join(', ')}.`,
    })
  }
}

/**
 * Create a session for a profile: providers are checked first, and a provider that is listed but
 * fails to start (libraries missing) gets the same clear error.
 */
export async function createProfileSession(model: string | Uint8Array, profile: HardwareProfile): Promise<Ort.InferenceSession> {
  await checkProviders(profile)
  try {
    return await createSession(model, profile)
  } catch (error) {
    const message = (error as Error).message
    const nonCpu = profile.providers.filter((p) => p !== 'cpu')
    if (nonCpu.length && /provider|EP|cuda|tensorrt|webgpu|dml|coreml/i.test(message)) {
      const available = await availableProviders()
      throw new KilnError(`profile '${profile.name}': execution provider ${nonCpu.join(', ')} failed to start: ${message}`, {
        code: 'E_PROVIDER_UNAVAILABLE',
        exitCode: ExitCode.invalid,
        tryMessage: `Install the provider's libraries, or use one that works here: ${available.filter((a) => a.bundled).map((a) => a.name).join(', ')}.`,
      })
    }
    throw new KilnError(`cannot load model${typeof model === 'string' ? ` ${model}` : ''} in onnxruntime: ${message}`, {code: 'E_MODEL_LOAD', tryMessage: 'Run `kiln inspect MODEL` to check the model.'})
  }
}
