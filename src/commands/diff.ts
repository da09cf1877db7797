import {Args} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import type {RunDiff} from '../eval/diff.js'

export default class Diff extends KilnCommand {
  static override summary = 'Compare two runs stage by stage: sizes, metrics, latency and gates (Markdown).'
  static override examples = ['<%= config.bin %> diff .kiln/runs/2026-01-01T10-00-00-fashion .kiln/runs/2026-01-02T10-00-00-fashion', '<%= config.bin %> diff main/report.json pr/report.json --json']

  static override args = {
    runA: Args.string({description: 'Run directory (or its report.json): the reference.', required: true}),
    runB: Args.string({description: 'Run directory (or its report.json) to compare.', required: true}),
  }

  async run(): Promise<RunDiff & {markdown: string}> {
    const {args} = await this.parse(Diff)
    const {diffRuns, readRunReport, renderDiffMarkdown} = await import('../eval/diff.js')
    const [a, b] = await Promise.all([readRunReport(path.resolve(args.runA)), readRunReport(path.resolve(args.runB))])
    const diff = diffRuns(a, b)
    const markdown = renderDiffMarkdown(diff)
    if (!this.jsonEnabled()) this.log(markdown)
    return {...diff, markdown}
  }
}
