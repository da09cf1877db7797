import * as fs from 'node:fs'
import os from 'node:os'

export interface CpuInfo {
  x86: boolean
  /** int8 dot-product instructions (AVX512-VNNI or AVX-VNNI): u8s8 without saturation. */
  vnni: boolean
  summary: string
}

let cached: CpuInfo | undefined

/**
 * What the quantized format should target on this CPU. Without VNNI, x86 u8s8 kernels can saturate
 * their 16-bit intermediate sums, so weights keep 7 bits (reduce-range).
 */
export function detectCpu(): CpuInfo {
  if (cached) return cached
  const x86 = os.arch() === 'x64' || os.arch() === 'ia32'
  let flags = ''
  try {
    flags = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? ''
  } catch {
    flags = ''
  }
  const vnni = /\bavx512_vnni\b|\bavx_vnni\b/.test(flags)
  const model = os.cpus()[0]?.model ?? os.arch()
  cached = {x86, vnni: x86 ? vnni : true, summary: `${model}${x86 ? (vnni ? ' (VNNI)' : ' (no VNNI: reduce-range)') : ''}`}
  return cached
}
