import type {ArtifactRecord, GateResult} from '../stages/types.js'

/** One stage's outcome in `report.json`. */
export interface StageReport {
  id: string
  uses: string
  status: 'ran' | 'cached' | 'failed' | 'skipped'
  seconds: number
  artifact?: {path: string; sha256: string; bytes: number; format: string}
  metrics: Record<string, unknown>
  /** Cache key of this stage's output. */
  key?: string
  error?: {message: string; code?: string; try?: string}
  /** Extra data a stage hands to the report writers (chart series...). */
  report?: Record<string, unknown>
}

/** `report.json`: the machine interface of a run (printed by `kiln run --json`). */
export interface RunReport {
  kiln: string
  pipeline: string
  /** Pipeline file path. */
  file: string
  runId: string
  runDir: string
  status: 'passed' | 'failed' | 'gate-failed'
  startedAt: string
  seconds: number
  input: ArtifactRecord
  stages: StageReport[]
  gates: GateResult[]
  runtime: Record<string, string>
}
