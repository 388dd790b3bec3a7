import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

// The package as users get it: `npm pack` (whose prepack builds dist/), installed in a temporary
// project outside the repository, next to only express, express-session, their @types, @types/node
// and typescript. An ESM and a CommonJS project there type-check consumers with strict, nodenext
// and skipLibCheck false (so a declaration that needs a package the user lacks fails), and run the
// package and the README's CommonJS example.
//
// How the temporary project gets its packages (PACKAGE_SPEC_INSTALL):
// - "link" (the default): the tarball is unpacked into its node_modules, and each other package is
//   a symbolic link to the repository's node_modules: only the packages above plus the ones the packed
//   package.json declares as dependencies, so an undeclared dependency or a declaration importing an
//   absent package still fails. Offline, about a second, and the versions are the lockfile's, so the
//   test does not change with what the registry published today.
// - "npm": `npm install --prefer-offline` of the tarball and the same packages (the repository's
//   version ranges), as a user would: npm's own resolution, peer dependencies included. A few seconds
//   with a reachable registry; for a check before a release.

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const CONSUMER_PACKAGES = ['express', 'express-session', '@types/express', '@types/express-session', '@types/node', 'typescript']
const installMode = process.env.PACKAGE_SPEC_INSTALL ?? 'link'

/** Runs a command; a failure reports its output (tsc prints its errors on stdout). */
function run(cmd: string, args: string[], cwd = root, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return execFileSync(cmd, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string }
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${stdout ?? ''}${stderr ?? ''}`)
  }
}

const bin = (name: string) => join(root, 'node_modules', '.bin', name)

describe('the packed package', () => {
  let work: string
  let tarball: string
  let consumer: string

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'express-session-memcache-pack-'))
    run('npm', ['pack', '--silent', '--pack-destination', work])
    const packed = readdirSync(work).filter((name) => name.endsWith('.tgz'))
    assert.equal(packed.length, 1, `npm pack wrote ${packed.join(', ') || 'no tarball'}`)
    tarball = join(work, packed[0]!)

    consumer = join(work, 'consumer')
    mkdirSync(join(consumer, 'node_modules'), { recursive: true })
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true }))
    if (installMode === 'npm') {
      const specs = CONSUMER_PACKAGES.map((name) => `${name}@${pkg.devDependencies[name]}`)
      run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball, ...specs], consumer)
    } else {
      assert.equal(installMode, 'link', 'PACKAGE_SPEC_INSTALL is "link" or "npm"')
      const installed = join(consumer, 'node_modules', pkg.name)
      mkdirSync(installed)
      run('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'])
      const packedManifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'))
      const names = new Set([...CONSUMER_PACKAGES, ...Object.keys(packedManifest.dependencies ?? {})])
      for (const name of names) {
        mkdirSync(dirname(join(consumer, 'node_modules', name)), { recursive: true })
        symlinkSync(join(root, 'node_modules', name), join(consumer, 'node_modules', name), 'dir')
      }
    }
    // One ESM and one CommonJS project, sharing the node_modules above.
    for (const [dir, type, files] of [
      ['esm', 'module', { 'consumer.mts': 'spec/fixtures/consumer.mts', 'usage.ts': 'examples/usage.ts' }],
      ['cjs', 'commonjs', { 'consumer.cts': 'spec/fixtures/consumer.cts', 'usage.cjs': 'examples/usage.cjs' }],
    ] as const) {
      mkdirSync(join(consumer, dir))
      writeFileSync(join(consumer, dir, 'package.json'), JSON.stringify({ name: `consumer-${dir}`, private: true, type }))
      for (const [to, from] of Object.entries(files)) copyFileSync(join(root, from), join(consumer, dir, to))
    }
  })

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true })
  })

  it('holds the build, README, LICENSE and package.json, without source maps', () => {
    const files = run('tar', ['-tzf', tarball])
      .trim()
      .split('\n')
      .map((file) => file.replace(/^package\//, ''))
      .sort()
    assert.deepEqual(files, [
      'LICENSE',
      'README.md',
      'dist/index.cjs',
      'dist/index.d.cts',
      'dist/index.d.ts',
      'dist/index.js',
      'package.json',
    ])
  })

  const tsc = (dir: string, files: string[]) =>
    run(
      process.execPath,
      [
        join(consumer, 'node_modules', 'typescript', 'bin', 'tsc'),
        '--noEmit',
        '--strict',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--skipLibCheck',
        'false',
        ...files,
      ],
      join(consumer, dir),
    )

  it('type-checks in an ESM project: a consumer and examples/usage.ts (strict, nodenext, skipLibCheck false)', () => {
    tsc('esm', ['consumer.mts', 'usage.ts'])
  })

  it('type-checks in a CommonJS project (strict, nodenext, skipLibCheck false)', () => {
    tsc('cjs', ['consumer.cts'])
  })

  it('import gives the named exports in an ESM project', () => {
    const out = run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import { MemcacheStore, MemcacheStoreError, koaStore } from 'express-session-memcache'; import session from 'express-session'; console.log(typeof MemcacheStore, typeof MemcacheStoreError, new MemcacheStore({ servers: 'localhost:1' }) instanceof session.Store, Object.keys(koaStore(new MemcacheStore({ servers: 'localhost:1' }))).join())",
      ],
      join(consumer, 'esm'),
    )
    assert.equal(out.trim(), 'function function true get,set,destroy')
  })

  it('require() gives the named exports in a CommonJS project', () => {
    const out = run(
      process.execPath,
      [
        '-e',
        "const m = require('express-session-memcache'); console.log(typeof m.MemcacheStore, typeof m.MemcacheStoreError, new m.MemcacheStore({ servers: 'localhost:1' }) instanceof require('express-session').Store, Object.keys(m.koaStore(new m.MemcacheStore({ servers: 'localhost:1' }))).join())",
      ],
      join(consumer, 'cjs'),
    )
    assert.equal(out.trim(), 'function function true get,set,destroy')
  })

  it('runs examples/usage.cjs: a clear error without SESSION_SECRET, listening with one', async () => {
    const cwd = join(consumer, 'cjs')
    const { SESSION_SECRET: _, ...withoutSecret } = process.env
    assert.throws(() => run(process.execPath, ['usage.cjs'], cwd, withoutSecret), /Error: SESSION_SECRET is not set/)

    const app = spawn(process.execPath, ['usage.cjs'], { cwd, env: { ...withoutSecret, SESSION_SECRET: 'a test secret', PORT: '0' } })
    try {
      const output = await new Promise<string>((resolve, reject) => {
        let text = ''
        const timer = setTimeout(() => reject(new Error(`usage.cjs did not start within 10 s:\n${text}`)), 10_000)
        const collect = (chunk: Buffer) => {
          text += chunk
          if (text.includes('Listening on')) {
            clearTimeout(timer)
            resolve(text)
          }
        }
        app.stdout.on('data', collect)
        app.stderr.on('data', collect)
        app.on('exit', (code) => {
          clearTimeout(timer)
          reject(new Error(`usage.cjs exited with ${code}:\n${text}`))
        })
      })
      assert.match(output, /^Listening on http:\/\/localhost:\d+\/$/m)
    } finally {
      app.kill()
    }
  })

  it('passes publint and Are the Types Wrong (both offline, on the tarball)', () => {
    assert.match(run(bin('publint'), ['run', tarball, '--strict']), /All good!/)
    const attw = JSON.parse(run(bin('attw'), [tarball, '--format', 'json']))
    assert.deepEqual(attw.analysis.problems, [])
  })
})

// The build in the repository, by the package's own name (Node resolves it through `exports`);
// the `before` above has just built it through npm pack's prepack.
describe('the built package in the repository', () => {
  before(() => {
    if (!existsSync(join(root, 'dist', 'index.js'))) run('npm', ['run', 'build', '--silent'])
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
})

describe('package.json', () => {
  it('publishes only dist, with types for both formats and express-session as a peer', () => {
    assert.deepEqual(pkg.files, ['dist'])
    assert.ok(pkg.exports['.'].import.types && pkg.exports['.'].require.types)
    assert.ok(pkg.peerDependencies['express-session'])
  })

  it('builds before packing, and says where the project lives', () => {
    assert.match(pkg.scripts.prepack, /\bbuild\b/)
    assert.equal(pkg.sideEffects, false)
    assert.match(pkg.repository.url, /github\.com\/express-session-memcache\/express-session-memcache/)
    assert.ok(pkg.homepage && pkg.bugs.url)
    assert.equal(pkg.license, 'MIT')
  })
})
