import {Args, Flags} from '@oclif/core'
import {KilnCommand} from '../cli/base-command.js'
import {AbortedError} from '../errors.js'
import {loadPipeline} from '../pipeline/loader.js'
import {progressExecutor} from '../pipeline/progress.js'
import type {RunReport} from '../pipeline/report-types.js'
import {exitCodeFor, runPipeline} from '../pipeline/runner.js'

export default class Run extends KilnCommand {
  static override summary = 'Run a pipeline: convert, compress, evaluate, sign, encrypt and publish a model.'
  static override description = `Stages whose inputs, parameters, datasets and runtime are unchanged come from the cache
(.kiln/cache beside the pipeline file, recorded in kiln.lock). Reports land in the run directory:
report.json, report.md, report.html and junit.xml.

Exit codes: 0 success, 1 a stage failed, 2 invalid pipeline or usage, 3 a quality gate failed.`

  static override examples = [
    '<%= config.bin %> run',
    '<%= config.bin %> run kiln.yaml --json > report.json',
    '<%= config.bin %> run kiln.yaml --from quantize',
    '<%= config.bin %> run kiln.yaml --only evaluate --out build/run',
  ]

  static override args = {
    file: Args.string({description: 'Pipeline file (default: kiln.yaml or .kilnrc* found from the current directory upward).'}),
  }

  static override flags = {
    out: Flags.string({description: 'Run directory (default .kiln/runs/<time>-<name>/ beside the pipeline file).'}),
    force: Flags.boolean({description: 'Ignore cached results and run every stage.'}),
    from: Flags.string({description: 'Run this stage and every stage after it; earlier stages come from the cache.'}),
    only: Flags.string({description: 'Run only this stage, with its input from the cache.', exclusive: ['from']}),
  }

  async run(): Promise<RunReport> {
    const {args, flags} = await this.parse(Run)
    const pipeline = await loadPipeline(args.file)
    const json = this.jsonEnabled()
    const write = (line: string): void => {
      process.stderr.write(`${line}\n`)
    }
    const controller = new AbortController()
    let interrupts = 0
    const onSigint = (): void => {
      interrupts++
      if (interrupts > 1) process.exit(130)
      write('Interrupted: stopping the current stage (Ctrl-C again to quit at once)...')
      controller.abort()
    }
    process.on('SIGINT', onSigint)
    process.on('SIGTERM', onSigint)
    try {
      const report = await runPipeline(pipeline, {
        out: flags.out,
        force: flags.force,
        from: flags.from,
        only: flags.only,
        signal: controller.signal,
        executor: await progressExecutor({json, write}),
        log: {info: write, warn: (m) => write(`warning: ${m}`), debug: (m) => flags.verbose && write(m)},
        kilnVersion: this.config.version,
      })
      process.exitCode = exitCodeFor(report)
      this.summarize(report)
      return report
    } catch (error) {
      if (error instanceof AbortedError) {
        const report = (error as AbortedError & {report?: RunReport}).report
        if (report) write(`Run cancelled; partial report in ${report.runDir}`)
      }
      throw error
    } finally {
      process.off('SIGINT', onSigint)
      process.off('SIGTERM', onSigint)
    }
  }

  private summarize(report: RunReport): void {
    const lines = report.stages.map((s) => `  ${s.status.padEnd(7)} ${s.id}${s.error ? `: ${s.error.message.split('\n')[0]}` : ''}`)
    for (const g of report.gates.filter((x) => !x.passed)) lines.push(`  gate    ${g.stage}.${g.name}: ${g.message ?? `${g.value} vs limit ${g.limit}`}`)
    const failed = report.stages.find((s) => s.status === 'failed')
    const tail = failed?.error?.try ? [`Try: ${failed.error.try}`] : []
    const text = [`${report.pipeline}: ${report.status} in ${report.seconds.toFixed(1)} s`, ...lines, `Reports: ${report.runDir}`, ...tail].join('\n')
    // Under --json the summary goes to stderr; stdout holds only the report.
    process.stderr.write(`${text}\n`)
  }
}
