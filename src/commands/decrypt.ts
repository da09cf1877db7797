import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {decryptFile, ENCRYPTED_EXT, resolveDataKey} from '../delivery/encrypt.js'

export interface DecryptResult {
  input: string
  output: string
  bytes: number
}

export default class Decrypt extends KilnCommand {
  static override summary = 'Decrypt a kiln-encrypted file; a wrong key or any tampering fails and leaves no output.'
  static override examples = ['<%= config.bin %> decrypt model.onnx.kenc --key keys/data.key -o model.onnx']

  static override args = {
    file: Args.string({description: 'Encrypted file (.kenc).', required: true}),
  }

  static override flags = {
    key: Flags.string({description: 'data.key path, env:NAME (base64 key) or passphrase:env:NAME.', required: true}),
    out: Flags.string({char: 'o', description: `Output file (default: the input without ${ENCRYPTED_EXT}).`}),
  }

  async run(): Promise<DecryptResult> {
    const {args, flags} = await this.parse(Decrypt)
    const input = path.resolve(args.file)
    const output = path.resolve(flags.out ?? (input.endsWith(ENCRYPTED_EXT) ? input.slice(0, -ENCRYPTED_EXT.length) : `${input}.dec`))
    const r = await decryptFile(input, output, await resolveDataKey(flags.key))
    this.say(`decrypted ${input} → ${output} (${r.bytes} bytes)`)
    return {input, output, bytes: r.bytes}
  }
}
