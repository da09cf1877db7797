import {Command, Flags} from '@oclif/core'
import {ExitCode, isKilnError, PipelineFileError} from '../errors.js'
import {redact, redactDeep} from '../util/redact.js'

/**
 * Every kiln command extends this: `--json` prints the command's typed result (or `{error}`) on
 * stdout, human output and progress go to stderr, and kiln's exit codes survive `--json` (oclif 4
 * would otherwise turn every error into exit 1).
 */
export abstract class KilnCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    verbose: Flags.boolean({description: 'Print debug logs (never secrets).', helpGroup: 'GLOBAL'}),
  }

  /** Human output: to stderr under --json so stdout stays machine-readable, else stdout. */
  protected say(message: string): void {
    if (this.jsonEnabled()) process.stderr.write(`${redact(message)}\n`)
    else this.log(redact(message))
  }

  protected override toSuccessJson(result: unknown): unknown {
    return redactDeep(result)
  }

  protected override async catch(err: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    const exitCode = isKilnError(err) ? err.exitCode : (err.oclif?.exit ?? ExitCode.stageFailed)
    process.exitCode = exitCode
    const message = redact(err.message)
    const tryMessage = isKilnError(err) && err.tryMessage ? redact(err.tryMessage) : undefined
    if (this.jsonEnabled()) {
      const error: Record<string, unknown> = {message, exitCode, code: isKilnError(err) ? err.code : err.name}
      if (tryMessage) error.try = tryMessage
      if (err instanceof PipelineFileError) error.issues = err.issues
      this.logJson({error})
      return undefined
    }
    if (!isKilnError(err) && !err.oclif) {
      // Not a user fault: show the stack so it can be reported.
      process.stderr.write(`${redact(err.stack ?? message)}\n`)
      return undefined
    }
    if (err.oclif && !isKilnError(err)) return super.catch(err)
    process.stderr.write(`Error: ${message}\n${tryMessage ? `Try: ${tryMessage}\n` : ''}`)
    return undefined
  }
}
