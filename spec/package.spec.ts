import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

// The built package, as users get it: `npm run build`, then require/import by name (Node resolves a
// package's own name through its `exports`), and the declarations compiled by tsc for ESM and CJS.
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

describe('the built package', () => {
  before(() => {
    run('npm', ['run', 'build', '--silent'])
  })

  it('require() gives the named exports', () => {
    const out = run(process.execPath, [
      '-e',
      "const m = require('express-session-memcache'); console.log(typeof m.MemcacheStore, typeof m.MemcacheStoreError, new m.MemcacheStore({ servers: 'localhost:1' }) instanceof require('express-session').Store)",
    ])
    assert.equal(out.trim(), 'function function true')
  })

  it('import gives the named exports', () => {
    const out = run(process.execPath, [
      '--input-type=module',
      '-e',
      "import { MemcacheStore } from 'express-session-memcache'; import session from 'express-session'; console.log(typeof MemcacheStore, new MemcacheStore({ servers: 'localhost:1' }) instanceof session.Store)",
    ])
    assert.equal(out.trim(), 'function true')
  })

  it('ships declarations that type-check from ESM and CommonJS consumers', () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
    for (const file of ['spec/fixtures/consumer.mts', 'spec/fixtures/consumer.cts']) {
      run(process.execPath, [
        tsc,
        '--noEmit',
        '--strict',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--skipLibCheck',
        '--types',
        'node',
        file,
      ])
    }
  })

  it('exports only dist, with types for both formats', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    assert.deepEqual(pkg.files, ['dist'])
    assert.ok(pkg.exports['.'].import.types && pkg.exports['.'].require.types)
    assert.ok(pkg.peerDependencies['express-session'])
  })
})
