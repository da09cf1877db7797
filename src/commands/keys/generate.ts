import {Flags} from '@oclif/core'
import {KilnCommand} from '../../cli/base-command.js'
import {generateKeys, type GeneratedKeys} from '../../delivery/keys.js'

export default class KeysGenerate extends KilnCommand {
  static override summary = 'Create a signing key pair and a data-encryption key.'
  static override description = 'Writes signing.key (Ed25519, PKCS#8 PEM, mode 0600), signing.pub (SPKI PEM) and data.key (32 random bytes as base64, mode 0600). Existing keys are never overwritten.'
  static override examples = ['<%= config.bin %> keys generate --out ./keys']

  static override flags = {
    out: Flags.string({char: 'o', description: 'Directory to write the keys into.', required: true}),
  }

  async run(): Promise<GeneratedKeys> {
    const {flags} = await this.parse(KeysGenerate)
    const keys = await generateKeys(flags.out)
    this.say(`signing key ${keys.signingKey} (public: ${keys.signingPub}, id ${keys.signingKeyId})`)
    this.say(`data key    ${keys.dataKey} (id ${keys.dataKeyId})`)
    this.say('Keep signing.key and data.key secret; share signing.pub with whoever verifies.')
    return keys
  }
}
