import {Args, Flags} from '@oclif/core'
import path from 'node:path'
import {KilnCommand} from '../cli/base-command.js'
import {encryptFile, ENCRYPTED_EXT, resolveDataKey} from '../delivery/encrypt.js'

export interface EncryptResult {
  input: string
  output: string
  bytes: number
  plaintextBytes: number
  sha256: string
  keyId: string
}

export default class Encrypt extends KilnCommand {
  static override summary = 'Encrypt a model file (streaming chunked AES-256-GCM).'
  static override examples = [
    '<%= config.bin %> encrypt model.onnx --key keys/data.key -o model.onnx.kenc',
    'KILN_PASS=... <%= config.bin %> encrypt model.onnx --key passphrase:env:KILN_PASS',
  ]

  static override args = {
    file: Args.string({description: 'File to encrypt.', required: true}),
  }

  static override flags = {
    key: Flags.string({description: 'data.key path, env:NAME (base64 key) or passphrase:env:NAME.', required: true}),
    out: Flags.string({char: 'o', description: `Output file (default: <file>${ENCRYPTED_EXT}).`}),
    'chunk-size': Flags.integer({description: 'Plaintext bytes per authenticated chunk.', min: 1024, max: 1 << 26}),
  }

  async run(): Promise<EncryptResult> {
    const {args, flags} = await this.parse(Encrypt)
    const input = path.resolve(args.file)
    const output = path.resolve(flags.out ?? `${input}${ENCRYPTED_EXT}`)
    const r = await encryptFile(input, output, await resolveDataKey(flags.key), {chunkSize: flags['chunk-size']})
    this.say(`encrypted ${input} → ${output} (${r.bytes} bytes, key id ${r.keyId})`)
    return {input, output, ...r}
  }
}
