import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { MemcacheStore, type MemcacheStoreOptions } from '../lib/index.ts'
import { DEFAULTS, resolveOptions } from '../lib/options.ts'

// The constructor validates every option up front: a TypeError that quotes the bad value.
const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
  ['options that are not an object', 42 as unknown as Record<string, unknown>, /options to be an object, got `42` \(number\)/],
  ['an unknown option', { ttl: 60, tll: 60 }, /Unknown option `tll`/],
  ['servers of the wrong type', { servers: 11211 }, /`servers`.*got `11211` \(number\)/],
  ['an empty servers list', { servers: [] }, /`servers`.*got `\[\]` \(array\)/],
  ['a server with a port out of range', { servers: 'cache:70000' }, /"cache:70000"/],
  ['a server with port 0', { servers: 'cache:0' }, /"cache:0"/],
  ['a server with port 0 in an object entry', { servers: [{ address: 'cache:0', weight: 1 }] }, /"cache:0"/],
  ['a server with spaces inside', { servers: 'ca che:11211' }, /"ca che:11211"/],
  ['a client that is not a memjs client', { client: {} }, /`client` to be a memjs Client, got `\{\}` \(object\)/],
  ['a prefix of the wrong type', { prefix: 7 }, /`prefix` to be a string, got `7` \(number\)/],
  ['a prefix with a space', { prefix: 'my app:' }, /`prefix`.*"my app:".*whitespace/],
  ['a prefix over 250 bytes', { prefix: 'p'.repeat(251) }, /`prefix`.*251 bytes/],
  ['a negative ttl', { ttl: -5 }, /`ttl` to be a non-negative number of seconds or a function returning one, got `-5` \(number\)/],
  ['a ttl string', { ttl: '1d' }, /`ttl`.*got `"1d"` \(string\)/],
  ['a ttl of NaN', { ttl: Number.NaN }, /`ttl`.*got `null` \(number\)/],
  ['a serializer without parse', { serializer: { stringify: JSON.stringify } }, /`serializer` to have `stringify` and `parse`/],
  ['disableTouch as a string', { disableTouch: 'yes' }, /`disableTouch` to be a boolean, got `"yes"` \(string\)/],
  ['failOpen as a number', { failOpen: 1 }, /`failOpen` to be a boolean, got `1` \(number\)/],
  ['merge as a string', { merge: 'no' }, /`merge` to be a boolean, got `"no"` \(string\)/],
  ['a zero timeout', { timeout: 0 }, /`timeout` to be a positive number of milliseconds, got `0` \(number\)/],
  ['an infinite timeout', { timeout: Number.POSITIVE_INFINITY }, /`timeout`/],
  ['a fractional maxItemSize', { maxItemSize: 1024.5 }, /`maxItemSize`.*got `1024.5` \(number\)/],
  ['a tiny maxItemSize', { maxItemSize: 10 }, /`maxItemSize`.*at least 1024/],
  ['the old memjs pass-through', { memjs: { failover: true } }, /Unknown option `memjs`: the store opens its own connections/],
  ["connect-redis's disableTTL", { disableTTL: true }, /Unknown option `disableTTL`: .*`ttl: 0`/],
  ["connect-redis's scanCount", { scanCount: 100 }, /Unknown option `scanCount`: .*`ids\(\)`/],
  ['a misspelt option', { failopen: true }, /Unknown option `failopen`\. Did you mean `failOpen`\?/],
  ['a protocol that does not exist', { protocol: 'ascii' }, /`protocol` to be "binary" or "meta", got `"ascii"`/],
  ['tls of the wrong type', { tls: 'yes' }, /`tls` to be true or an object/],
  ['a logger without warn', { logger: { log() {} } }, /`logger` to have a `warn` method/],
  ['client together with servers', { client: { servers: [] }, servers: 'a:1' }, /either `client` or/],
]

describe('option validation', () => {
  for (const [name, options, message] of invalid) {
    it(`rejects ${name}`, () => {
      assert.throws(
        () => new MemcacheStore(options as MemcacheStoreOptions),
        (err: Error) => {
          assert.ok(err instanceof TypeError, `${err.name}: ${err.message}`)
          assert.match(err.message, message)
          return true
        },
      )
    })
  }

  it('fills in every default, and never connects on construction', () => {
    const resolved = resolveOptions({})
    assert.equal(resolved.prefix, DEFAULTS.prefix)
    assert.equal(resolved.prefix, 'sess:')
    assert.equal(resolved.ttl, 86_400)
    assert.equal(resolved.serializer, JSON)
    assert.equal(resolved.disableTouch, false)
    assert.equal(resolved.failOpen, false)
    assert.equal(resolved.merge, true)
    assert.equal(resolved.timeout, 1000)
    assert.equal(resolved.maxItemSize, 1_048_576)
    assert.equal(resolved.logger, console)
    assert.equal(resolved.protocol, 'binary')
    assert.equal(resolved.tls, undefined)
    assert.deepEqual(resolveOptions({}, {}).servers, [{ host: 'localhost', port: 11211, weight: 1, credentials: undefined }])
    assert.equal(resolveOptions({}, {}).serversFrom, 'default')
    // memjs's own order: MEMCACHIER_SERVERS, MEMCACHE_SERVERS, localhost:11211.
    const fromEnv = resolveOptions(
      {},
      { MEMCACHIER_SERVERS: 'a:1', MEMCACHE_SERVERS: 'b:2', MEMCACHE_USERNAME: 'u', MEMCACHE_PASSWORD: 'p' },
    )
    assert.equal(fromEnv.serversFrom, 'MEMCACHIER_SERVERS')
    assert.deepEqual(fromEnv.credentials, { username: 'u', password: 'p' })
    new MemcacheStore({ servers: '127.0.0.1:1' })
  })

  it('keeps ttl 0 (no expiry) instead of replacing it with the default, and rounds fractions up', () => {
    assert.equal(resolveOptions({ ttl: 0 }).ttl, 0)
    assert.equal(resolveOptions({ ttl: 1.2 }).ttl, 2)
  })

  it('accepts servers as a string or an array, trimming spaces around entries', () => {
    const addresses = (servers: MemcacheStoreOptions['servers']) => resolveOptions({ servers }).servers.map((s) => `${s.host}:${s.port}`)
    assert.deepEqual(addresses('a:1, b:2'), ['a:1', 'b:2'])
    assert.deepEqual(addresses(['a:1', 'b']), ['a:1', 'b:11211'], 'a host without a port means 11211')
  })

  it('logger: false silences the store', () => {
    assert.equal(resolveOptions({ logger: false }).logger, undefined)
  })

  it('never quotes a secret in an error', () => {
    assert.throws(
      () => new MemcacheStore({ secret: ['good secret long enough', 42 as unknown as string] }),
      (err: Error) => !err.message.includes('good secret long enough'),
    )
  })
})

describe('the reach into memjs', () => {
  it('fails loudly, naming what is missing, when memjs no longer has the Server methods the store relies on', async () => {
    const { checkMemjsShape } = await import('../lib/memcached/memjs.ts')
    const memjs = (await import('memjs')).default
    checkMemjsShape(memjs.Server)
    class Changed {
      sock() {}
    }
    assert.throws(
      () => checkMemjsShape(Changed),
      /needs memjs 1\.3 \(~1\.3\.2\): the installed memjs Server lacks listSasl, saslAuth, writeSASL\. Install memjs@~1\.3\.2/,
    )
    const pinned = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).dependencies.memjs
    assert.equal(pinned, '~1.3.2', 'memjs is pinned to the 1.3 line')
  })
})
