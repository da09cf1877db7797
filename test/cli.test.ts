import {describe, expect, it} from 'vitest'
import {kiln} from './helpers/cli.js'

describe('the kiln CLI', () => {
  it('prints help listing the commands, and its version', async () => {
    const help = await kiln(['--help'])
    expect(help.exitCode).toBe(0)
    for (const cmd of ['run', 'validate', 'init', 'inspect', 'quantize', 'prune', 'convert', 'eval', 'bench', 'diff', 'sign', 'verify', 'encrypt', 'decrypt', 'publish', 'serve', 'keys']) {
      expect(help.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'))
    }
    const version = await kiln(['--version'])
    expect(version.exitCode).toBe(0)
    expect(version.stdout).toMatch(/^kiln\/\d+\.\d+\.\d+/)
  })

  it('suggests the command meant by a typo', async () => {
    const r = await kiln(['valdate'])
    expect(r.exitCode).toBe(2)
    expect(r.stderr).toMatch(/Did you mean 'kiln validate'\?/)
  })

  it('keeps exit code 2 for usage errors, with and without --json', async () => {
    const plain = await kiln(['run', '--no-such-flag'])
    expect(plain.exitCode).toBe(2)
    const missing = await kiln(['validate', 'does-not-exist.yaml', '--json'])
    expect(missing.exitCode).toBe(2)
    expect(missing.json.error.message).toMatch(/does-not-exist\.yaml/)
  })

  it('refuses options nothing would read', async () => {
    const s3 = await kiln(['serve', '.', '--s3-endpoint', 'http://127.0.0.1:1', '--port', '0', '--json'])
    expect(s3.exitCode).toBe(2)
    expect(s3.json.error.message).toMatch(/--s3-endpoint applies to an s3:\/\/ repository/)
    const publish = await kiln(['publish', 'package.json', '--to', './nowhere', '--s3-region', 'eu-west-1', '--oip-model', 'm', '--json'])
    expect(publish.exitCode).toBe(2)
    expect(publish.json.error.message).toMatch(/--s3-region applies to an s3:\/\/ target, and none of --to is one/)
  })
})
