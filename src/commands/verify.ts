import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {readKeyFile} from '../delivery/keys.js'
import {verifyDirectory, type SignedFile} from '../delivery/sign.js'

export interface VerifyResult {
  dir: string
  verified: true
  files: SignedFile[]
}

export default class Verify extends KilnCommand {
  static override summary = 'Verify a signed directory: the signature and every file digest.'
  static override description = 'Exits 0 only when the signature matches the public key and every file matches the signed manifest; a changed, missing or extra file fails naming it.'
  static override examples = ['<%= config.bin %> verify ./downloaded/v1 --pub keys/signing.pub']

  static override args = {
    dir: Args.string({description: 'Signed directory (holds model.sig).', required: true}),
  }

  static override flags = {
    pub: Flags.string({description: 'Ed25519 public key (signing.pub).', required: true}),
  }

  async run(): Promise<VerifyResult> {
    const {args, flags} = await this.parse(Verify)
    const dir = path.resolve(args.dir)
    const r = await verifyDirectory(dir, await readKeyFile(path.resolve(flags.pub), 'public key'))
    this.say(`OK: signature and ${r.files.length} file digest(s) verified in ${dir}`)
    return {dir, verified: true, files: r.files}
  }
}
