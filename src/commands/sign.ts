import {Args, Flags} from '@oclif/core'
import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {loadSigningKey} from '../delivery/keys.js'
import {signArtifact, signDirectory, type SignedFile} from '../delivery/sign.js'

export interface SignResult {
  dir: string
  bundle: string
  keyId: string
  files: SignedFile[]
}

export default class Sign extends KilnCommand {
  static override summary = 'Sign a model file or directory (in-toto manifest, Ed25519, DSSE).'
  static override description = 'A directory is signed in place (model.sig is written into it) unless --out is given. A file is copied into --out (default: <file>.signed/) beside its signature.'
  static override examples = ['<%= config.bin %> sign ./dist/model --key keys/signing.key', '<%= config.bin %> sign model.onnx.kenc --key keys/signing.key -o ./signed']

  static override args = {
    path: Args.string({description: 'Model file or directory to sign.', required: true}),
  }

  static override flags = {
    key: Flags.string({description: 'Ed25519 private key (signing.key).', required: true}),
    out: Flags.string({char: 'o', description: 'Directory to write the signed copy into.'}),
  }

  async run(): Promise<SignResult> {
    const {args, flags} = await this.parse(Sign)
    const input = path.resolve(args.path)
    const isDir = (await fsp.stat(input)).isDirectory()
    let dir: string
    let r
    if (isDir && !flags.out) {
      dir = input
      r = await signDirectory(dir, await loadSigningKey(path.resolve(flags.key)))
    } else {
      dir = path.resolve(flags.out ?? `${input}.signed`)
      r = await signArtifact(input, dir, path.resolve(flags.key))
    }
    this.say(`signed ${r.files.length} file(s) in ${dir} with key ${r.keyId} → ${r.bundle}`)
    return {dir, bundle: r.bundle, keyId: r.keyId, files: r.files}
  }
}
