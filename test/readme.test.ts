import {execa} from 'execa'
import * as fs from 'node:fs'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {ROOT} from './helpers/cli.js'

describe('README', () => {
  it("documents every stage's parameters exactly as the schema accepts them", async () => {
    const r = await execa(process.execPath, [path.join(ROOT, 'scripts/readme-reference.js'), '--check'], {reject: false})
    expect(r.stderr).toBe('')
    expect(r.exitCode).toBe(0)
  })

  it('gives the two commands and the exit codes', () => {
    const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
    expect(text).toContain('npm ci && npm run quickstart')
    expect(text).toContain('npm test')
    for (const code of ['| 0 |', '| 1 |', '| 2 |', '| 3 |']) expect(text).toContain(code)
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
    expect(pkg.scripts.quickstart).toContain('examples/quickstart')
  })
})
