import type {RunTask, TaskExecutor} from './runner.js'
import {plainExecutor} from './runner.js'

/**
 * Pick how progress is shown: listr2's live renderer on an interactive terminal, plain line logs on
 * stderr under CI, without a TTY, or with --json (stdout then carries only the JSON report).
 */
export async function progressExecutor(options: {json: boolean; write: (line: string) => void}): Promise<TaskExecutor> {
  const interactive = Boolean(process.stderr.isTTY) && !process.env.CI && !options.json
  if (!interactive) return plainExecutor(options.write)
  const {Listr} = await import('listr2')
  return async (tasks: RunTask[]) => {
    const list = new Listr(
      tasks.map((t) => ({
        title: t.title,
        task: async (_ctx: unknown, task: {output: string; title: string}) => {
          await t.run(
            (m) => {
              task.output = m
            },
            (title) => {
              task.title = title
            },
          )
        },
      })),
      {
        concurrent: false,
        exitOnError: true,
        rendererOptions: {collapseSubtasks: false},
        fallbackRendererCondition: () => !process.stderr.isTTY,
      },
    )
    await list.run()
  }
}
