import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { SessionData } from 'express-session'
import type { MemcacheStore, MemcacheStoreError, MemcacheStoreOptions } from '../lib/index.ts'
import { MemcachedServer, sleep, startMemcacheds } from './harness/memcached.ts'
import { dumpRewritingProxy } from './harness/peers.ts'
import { createStore } from './harness/protocol.ts'
import { RawClient } from './harness/raw.ts'
import { plainSession, randomId, StoreFactory, uniquePrefix } from './harness/stores.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)
const clients: RawClient[] = []

before(async () => {
  server = await MemcachedServer.start({ memoryMb: 128 })
})
after(async () => {
  await stores.closeAll()
  for (const client of clients) client.close()
  await server.stop()
})

/** A plain client: "another application" sharing the server. */
function rawClient(servers: string): RawClient {
  const client = new RawClient(servers)
  clients.push(client)
  return client
}

/** Keys another application keeps on the same server, including ones that look almost like sessions. */
async function writeForeignKeys(client: RawClient, prefix: string): Promise<string[]> {
  const keys = ['user:42', 'cache:page:/', prefix.slice(0, -1), `x${prefix}abc`, `${prefix.toUpperCase()}abc`, 'sess:', 'other:sess:1']
  for (const key of keys) await client.set(key, 'foreign', { expires: 0 })
  return keys
}

async function saveSessions(store: MemcacheStore, count: number, fields: (i: number) => Record<string, unknown> = (i) => ({ n: i })) {
  const ids = Array.from({ length: count }, () => randomId())
  await Promise.all(ids.map((sid, i) => store.set(sid, plainSession(fields(i)))))
  return ids
}

function callback<T>(run: (cb: (err: unknown, value?: T) => void) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    run((err, value) => (err ? reject(err) : resolve(value as T)))
  })
}

describe('all, ids, length, clear', () => {
  it('list only this store’s sessions, with promises, beside other applications and other prefixes', async () => {
    const store = stores.create()
    const neighbour = stores.create()
    const foreign = await writeForeignKeys(rawClient(server.address), store.prefix)
    const ids = await saveSessions(store, 25)
    const theirs = await saveSessions(neighbour, 5)

    assert.deepEqual((await store.ids()).sort(), [...ids].sort())
    assert.equal(await store.length(), 25)
    const all = await store.all()
    assert.deepEqual(Object.keys(all).sort(), [...ids].sort())
    for (const [i, sid] of ids.entries()) assert.equal(all[sid].n, i)
    assert.equal(await neighbour.length(), 5)

    await store.clear()
    assert.equal(await store.length(), 0)
    assert.deepEqual(await store.all(), {})
    for (const sid of ids) assert.equal(await server.inspect(store.prefix + sid), undefined)
    for (const sid of theirs) assert.ok(await server.inspect(neighbour.prefix + sid), 'the other prefix keeps its sessions')
    for (const key of foreign) assert.equal((await server.inspect(key))?.value.toString(), 'foreign', `${key} is untouched`)
  })

  it('work with express-session callbacks, as MemoryStore shapes them', async () => {
    const store = stores.create()
    const [sid] = await saveSessions(store, 1, () => ({ user: 'ada' }))
    const all = await callback<Record<string, SessionData>>((cb) => store.all(cb))
    assert.equal(all[sid].user, 'ada')
    assert.deepEqual(await callback<string[]>((cb) => store.ids(cb)), [sid])
    assert.equal(await callback<number>((cb) => store.length(cb)), 1)
    await callback<void>((cb) => store.clear(cb))
    assert.equal(await callback<number>((cb) => store.length(cb)), 0)
  })

  it('leave out sessions whose cookie expired while memcached still holds them', async () => {
    const store = stores.create()
    const [lasting] = await saveSessions(store, 1)
    const short = randomId()
    await store.set(short, plainSession({}, 1200))
    assert.equal(await store.length(), 2)
    await sleep(1300)
    assert.ok(await server.inspect(store.prefix + short), 'memcached still holds it (its expiry has a second of grace)')
    assert.deepEqual(await store.ids(), [lasting])
    assert.equal(await store.length(), 1)
    assert.deepEqual(Object.keys(await store.all()), [lasting])
  })

  it('leave out sessions memcached has expired', async () => {
    const store = stores.create()
    const [lasting] = await saveSessions(store, 1)
    // A readable session with a cookie that never expires, but a two-second memcached expiry.
    await rawClient(server.address).set(store.prefix + randomId(), JSON.stringify(plainSession({}, null)), { expires: 2 })
    assert.equal(await store.length(), 2)
    await sleep(3100)
    assert.deepEqual(await store.ids(), [lasting])
    assert.deepEqual(Object.keys(await store.all()), [lasting])
  })

  // memcached 1.6 stops dumping a key once it expires, so against it the store's own check of the
  // dumped expiry hardly shows. A proxy makes the dump list a key with an expiry in the past while
  // memcached still serves it (as a dump and a read may disagree: another server's dump, a clock that
  // moved between the two): what leaves it out is then the store's check, and nothing else.
  it('leave out a key the dump lists as expired, without reading it, even while a read would still find it', async () => {
    const writer = stores.create()
    const [expired, live] = [randomId(), randomId()]
    // An hour's cookie each: the listing counts such a key without reading it.
    await writer.set(expired, plainSession({ user: 'ada' }, 3_600_000))
    await writer.set(live, plainSession({ user: 'bob' }, 3_600_000))
    const dumped = `key=${encodeURIComponent(writer.prefix + expired)} exp=`
    const past = Math.floor(Date.now() / 1000) - 60
    const proxy = await dumpRewritingProxy(server.address, (line) =>
      line.startsWith(dumped) ? line.replace(/ exp=-?\d+ /, ` exp=${past} `) : line,
    )
    const store = createStore({ servers: proxy.address, prefix: writer.prefix, logger: false })
    try {
      assert.deepEqual(await store.ids(), [live])
      assert.equal(await store.length(), 1)
      assert.deepEqual(Object.keys(await store.all()), [live])
      assert.deepEqual([proxy.dumps, proxy.rewritten], [3, 3], 'each listing got the rewritten line')
      assert.equal(proxy.requestsMentioning(writer.prefix + expired), 0, 'the store never asked for it')
      assert.equal((await store.get(expired))?.user, 'ada', 'memcached still serves it, through the same proxy')
    } finally {
      await store.close()
      await proxy.close()
    }
  })

  it('with a ttl function (memcached expiry independent of the cookie), read each cookie to count', async () => {
    const store = stores.create({ ttl: () => 600 })
    const [lasting] = await saveSessions(store, 1)
    await store.set(randomId(), plainSession({}, 300))
    await sleep(400)
    assert.deepEqual(await store.ids(), [lasting])
    assert.equal(await store.length(), 1)
  })

  it('all leaves out unreadable values under the prefix; clear deletes them too', async () => {
    const store = stores.create()
    const [good] = await saveSessions(store, 1)
    const raw = rawClient(server.address)
    await raw.set(`${store.prefix}garbage`, 'not json', { expires: 0 })
    assert.deepEqual(Object.keys(await store.all()), [good])
    await store.clear()
    assert.equal(await server.inspect(`${store.prefix}garbage`), undefined)
  })

  it('lists IDs with characters memcached URL-encodes, and skips foreign keys that are not UTF-8', async () => {
    const store = stores.create({ prefix: 'ünï:%20/:' })
    const sid = 'café-%41+ü/ß?='
    await store.set(sid, plainSession({ user: 'ada' }))
    const stored = await rawText(
      server.port,
      Buffer.concat([Buffer.from('set '), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from(' 0 0 1\r\nx\r\n')]),
    )
    assert.match(stored, /^STORED/)
    assert.deepEqual(await store.ids(), [sid])
    assert.deepEqual(Object.keys(await store.all()), [sid])
  })

  it('refuses to list with an empty prefix, which would take every key for a session', async () => {
    const store = stores.create({ prefix: '' })
    await assert.rejects(store.clear(), (err: MemcacheStoreError) => err.code === 'ENOPREFIX' && /non-empty `prefix`/.test(err.message))
    await assert.rejects(store.length(), (err: MemcacheStoreError) => err.code === 'ENOPREFIX')
  })
})

describe('on two servers', () => {
  let pair: MemcachedServer[]
  before(async () => {
    pair = await startMemcacheds(2)
  })
  after(async () => {
    for (const each of pair) await each.stop()
  })

  it('lists and clears the sessions of every server, and nothing else', async () => {
    const servers = pair.map((each) => each.address).join(',')
    const store = createStore({ servers, prefix: 'pair:', logger: false })
    try {
      const foreign = await writeForeignKeys(rawClient(servers), store.prefix)
      for (const each of pair) await rawClient(each.address).set('pair-neighbour', 'foreign', { expires: 0 })
      const ids = await saveSessions(store, 40)
      for (const each of pair) {
        const held = await Promise.all(ids.map((sid) => each.inspect(store.prefix + sid)))
        assert.ok(held.some(Boolean), `${each.address} holds some of the sessions`)
      }
      assert.deepEqual((await store.ids()).sort(), [...ids].sort())
      assert.equal(await store.length(), 40)
      assert.equal(Object.keys(await store.all()).length, 40)
      await store.clear()
      assert.equal(await store.length(), 0)
      for (const each of pair) assert.ok(await each.inspect('pair-neighbour'))
      const remaining = await Promise.all(foreign.map((key) => rawClient(servers).get(key)))
      assert.ok(remaining.every(({ value }) => value?.toString() === 'foreign'))
    } finally {
      await store.close()
    }
  })

  // A copy left on a server that does not own its key (the server list changed, or another client
  // placed keys differently) cannot be read or deleted through the store: it is no session of it.
  it('leave out a copy of a session kept on the server that does not own its key', async () => {
    const prefix = uniquePrefix()
    const store = createStore({ servers: pair.map((each) => each.address).join(','), prefix, logger: false })
    const sid = 'stray0'
    // An hour's cookie: far from expiry, so the listing counts it without reading it.
    const sess = plainSession({ user: 'ada' }, 3_600_000)
    try {
      await store.set(sid, sess)
      const holders = await Promise.all(pair.map((each) => each.inspect(prefix + sid)))
      assert.equal(holders.filter(Boolean).length, 1, 'the session lives on one server')
      const elsewhere = pair[holders[0] ? 1 : 0]
      const copier = createStore({ servers: elsewhere.address, prefix, logger: false })
      try {
        await copier.set(sid, sess)
      } finally {
        await copier.close()
      }
      await store.destroy(sid)
      assert.ok(await elsewhere.inspect(prefix + sid), 'the copy is still on the server that does not own its key')
      assert.equal(await store.get(sid), null, 'get cannot reach it')
      const live = randomId()
      await store.set(live, plainSession())
      assert.deepEqual(await store.ids(), [live])
      assert.equal(await store.length(), 1)
      assert.deepEqual(Object.keys(await store.all()), [live])
    } finally {
      await store.close()
    }
  })

  it('fails, naming the server, when one of them is down', async () => {
    const store = createStore({ servers: pair.map((each) => each.address).join(','), prefix: 'pair:', logger: false })
    try {
      await pair[1].kill()
      await assert.rejects(
        store.length(),
        (err: MemcacheStoreError) => err.server === pair[1].address && err.message.includes(pair[1].address),
      )
    } finally {
      await store.close()
      await pair[1].restart()
    }
  })
})

describe('servers that cannot be listed', () => {
  async function expectFailure(started: MemcachedServer, pattern: RegExp, code: string, options: MemcacheStoreOptions = {}) {
    const store = createStore({ servers: started.address, logger: false, timeout: 500, ...options })
    try {
      for (const operation of [() => store.all(), () => store.ids(), () => store.length(), () => store.clear()]) {
        const begun = performance.now()
        await assert.rejects(operation(), (err: MemcacheStoreError) => {
          assert.ok(err instanceof Error)
          assert.equal(err.code, code)
          assert.ok(err.message.includes(started.address), err.message)
          assert.match(err.message, pattern)
          return true
        })
        assert.ok(performance.now() - begun < 10_000, 'settles in bounded time')
      }
    } finally {
      await store.close()
      await started.stop()
    }
  }

  it('a SASL server (-S), which speaks only the binary protocol: an Error says so, while sessions work', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sasl-'))
    writeFileSync(join(dir, 'memcached.conf'), `mech_list: plain\nsasldb_path: ${join(dir, 'sasldb')}\n`)
    execFileSync('saslpasswd2', ['-p', '-a', 'memcached', '-c', '-f', join(dir, 'sasldb'), 'alice'], { input: 'pw' })
    const sasl = await MemcachedServer.start({ args: ['-S'], env: { SASL_CONF_PATH: dir }, sasl: true })
    // SASL exists only in the binary protocol: this store speaks it whatever protocol the suite runs.
    const store = createStore({ servers: sasl.address, logger: false, username: 'alice', password: 'pw', protocol: 'binary' })
    try {
      await store.set('abc', plainSession({ user: 'ada' }))
      assert.ok(await store.get('abc'), 'the binary protocol works with SASL')
    } finally {
      await store.close()
    }
    await expectFailure(sasl, /only the binary protocol \(started with -S/, 'ECONNCLOSED', { username: 'alice', password: 'pw' })
    rmSync(dir, { recursive: true, force: true })
  })

  it('a binary-only server (-B binary, as -S makes it) closes the text connection: an Error says so', async () => {
    await expectFailure(await MemcachedServer.start({ args: ['-B', 'binary'], sasl: true }), /only the binary protocol/, 'ECONNCLOSED')
  })

  it('a server with the LRU crawler disabled', async () => {
    await expectFailure(await MemcachedServer.start({ args: ['-o', 'no_lru_crawler'] }), /crawler is disabled/, 'ENOTSUPPORTED')
  })

  it('a server with dumping disabled (-X)', async () => {
    await expectFailure(await MemcachedServer.start({ args: ['-X'] }), /dumping keys is disabled/, 'ENOTSUPPORTED')
  })

  it('a frozen server: no answer within the timeout', async () => {
    const frozen = await MemcachedServer.start()
    frozen.freeze()
    await expectFailure(frozen, /no answer .* within 500 ms/, 'ETIMEDOUT')
  })

  it('close() ends a dump in progress at once', async () => {
    const frozen = await MemcachedServer.start()
    const store = createStore({ servers: frozen.address, logger: false, timeout: 5000 })
    try {
      frozen.freeze()
      const listing = store.length()
      await sleep(50)
      const begun = performance.now()
      await store.close()
      await assert.rejects(listing, (err: MemcacheStoreError) => err.code === 'ECLOSED' && err.message.includes(frozen.address))
      assert.ok(performance.now() - begun < 1000)
    } finally {
      await frozen.stop()
    }
  })

  it('a crawl already running: retried while BUSY, then an Error naming the server', async () => {
    // A crawler that sleeps a second between batches keeps the first dump running for seconds.
    const busy = await MemcachedServer.start({ args: ['-o', 'lru_crawler_sleep=1000000'] })
    await fill(busy.port, 3000)
    const hog = net.connect(busy.port, '127.0.0.1', () => hog.write('lru_crawler metadump hash\r\n'))
    hog.on('error', () => {})
    try {
      await sleep(100)
      await expectFailure(busy, /already running .* still busy after \d+ ms of retries/, 'EBUSY')
    } finally {
      hog.destroy()
    }
  })

  it('concurrent listings by two stores both succeed (BUSY is retried)', async () => {
    const a = stores.create({ timeout: 5000 })
    const b = stores.create({ timeout: 5000, prefix: a.prefix })
    await fill(server.port, 20_000)
    const ids = await saveSessions(a, 10)
    const counts = await Promise.all([a.length(), b.length(), a.length(), b.ids().then((list) => list.length)])
    assert.deepEqual(counts, [ids.length, ids.length, ids.length, ids.length])
  })
})

/** Many small keys of another application, written in one pipelined burst. */
function fill(port: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      const lines: string[] = []
      for (let i = 0; i < count; i++) lines.push(`set filler:${i} 0 0 5 noreply\r\nfill!\r\n`)
      socket.write(`${lines.join('')}version\r\n`)
    })
    socket.on('data', (chunk) => {
      if (chunk.toString().includes('VERSION')) {
        socket.destroy()
        resolve()
      }
    })
    socket.once('error', reject)
  })
}

/** One text-protocol command (as raw bytes) and its first reply line. */
function rawText(port: number, request: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    socket.on('data', (chunk) => {
      socket.destroy()
      resolve(chunk.toString())
    })
    socket.once('error', reject)
  })
}
