import {toConfiguredId} from '@oclif/core'
import type {Hook} from '@oclif/core'
import {closest} from '../pipeline/suggest.js'

/**
 * A mistyped command in CI or a script (no TTY): @oclif/plugin-not-found only offers its suggestion
 * at an interactive prompt (and exits 127), so say it here and exit 2 like every other usage error.
 */
const hook: Hook<'command_not_found'> = async function (opts) {
  if (process.stdin.isTTY) return
  const best = closest(opts.id, opts.config.commandIDs)
  const hint = best ? ` Did you mean '${opts.config.bin} ${toConfiguredId(best, opts.config)}'?` : ''
  // An unknown command is a usage error: exit 2, as everywhere in kiln.
  this.error(`'${toConfiguredId(opts.id, opts.config)}' is not a ${opts.config.bin} command.${hint} Run '${opts.config.bin} help' for the list.`, {exit: 2})
}

export default hook
