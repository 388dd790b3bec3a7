// store.genid: IDs reserved in memcached before they are handed out (the seed's collision-checking
// generate_sid, done ahead of time), against real memcached and, for two pools, two processes.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import request from 'supertest'
import type { MemcacheStore } from '../lib/index.ts'
import { RESERVATION_TTL_SECONDS } from '../lib/reservations.ts'
import { testApp } from './harness/app.ts'
import { freePort, sleep } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { newSession, plainSession, uniquePrefix, useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

/** Waits until the store's pool holds at least `count` reserved IDs. */
async function pooled(store: MemcacheStore, count: number): Promise<void> {
  const deadline = Date.now() + 5000
  while (store.diagnostics().genid.pooled < count) {
    if (Date.now() > deadline) throw new Error(`the pool holds ${store.diagnostics().genid.pooled} IDs, not ${count}`)
    await sleep(10)
  }
}

/** The keys memcached holds under a prefix. */
async function keysUnder(prefix: string): Promise<string[]> {
  const dump = await file.server.command('lru_crawler metadump hash')
  return dump
    .split('\n')
    .filter((line) => line.startsWith('key='))
    .map((line) => decodeURIComponent(line.slice(4, line.indexOf(' '))))
    .filter((key) => key.startsWith(prefix))
}

describe('store.genid', () => {
  it('two processes drawing from 50 IDs, 10 of them taken: 20 distinct IDs, none taken, the taken ones skipped', async () => {
    const prefix = uniquePrefix()
    const space = Array.from({ length: 50 }, (_, i) => `tiny-${i}`)
    const taken = space.slice(0, 10)
    const seeder = stores.create({ prefix })
    await Promise.all(taken.map((sid) => seeder.set(sid, plainSession({ owner: 'someone else' }))))
    const fixture = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'genid-pool.ts')
    const run = async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
        env: { ...process.env, MEMCACHE_SERVERS: file.server.address, PREFIX: prefix, SPACE: space.join(','), TAKE: '10' },
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      let out = ''
      child.stdout.on('data', (chunk) => {
        out += chunk
      })
      const [code] = await once(child, 'exit')
      assert.equal(code, 0, out)
      return JSON.parse(out) as { ids: string[]; genid: { pooled: number; skipped: number; fallbacks: number } }
    }
    const [one, two] = await Promise.all([run(), run()])
    const all = [...one.ids, ...two.ids]
    assert.equal(all.length, 20)
    assert.equal(new Set(all).size, 20, `distinct: ${all.join(' ')}`)
    for (const sid of all) assert.ok(!taken.includes(sid), `${sid} was taken`)
    assert.equal(one.genid.fallbacks + two.genid.fallbacks, 0, 'every ID was a reserved one')
    assert.ok(one.genid.skipped + two.genid.skipped > 0, 'taken candidates were met and skipped')
    // The sessions that were there are untouched.
    for (const sid of taken) assert.deepEqual(((await seeder.get(sid)) as { owner?: string } | null)?.owner, 'someone else')
  })

  it('an Express app with genid: store.genid: count, log in, count, log out, with no ECOLLISION', async () => {
    const store = stores.create()
    const app = testApp(store, { genid: store.genid })
    await pooled(store, 8)
    const agent = request.agent(app)
    for (let i = 1; i <= 3; i++) assert.equal((await agent.get('/count').expect(200)).body.views, i)
    const first = (await agent.get('/read').expect(200)).body.id
    const login = await agent.post('/login').send({ user: 'ada' }).expect(200)
    assert.notEqual(login.body.id, first, 'regenerated')
    assert.equal((await agent.get('/count').expect(200)).body.views, 1)
    assert.equal((await agent.get('/read').expect(200)).body.user, 'ada')
    await agent.post('/logout').expect(200)
    assert.deepEqual(app.errors, [])
    assert.equal(store.diagnostics().genid.fallbacks, 0, 'both IDs came from the pool')
    assert.equal(await store.get(first), null, 'the pre-login session is gone')
  })

  it('the first save of a reserved ID writes over its placeholder; a placeholder overwritten by another writer is a collision', async () => {
    const store = stores.create()
    const genid = store.genid
    await pooled(store, 2)
    const sid = genid()
    await store.set(sid, newSession(store, sid, { first: true }))
    assert.equal(((await store.get(sid)) as { first?: boolean } | null)?.first, true)

    const stolen = genid()
    await stores.create({ prefix: store.prefix }).set(stolen, plainSession({ intruder: true }))
    await assert.rejects(
      store.set(stolen, newSession(store, stolen, { mine: true })),
      (err: Error & { code?: string }) => err.code === 'ECOLLISION',
    )
    assert.equal(await store.get(stolen), null, 'neither holder can read the other')
  })

  it('placeholders are invisible to get, ids, all and length, and deleted on close', async () => {
    const store = stores.create()
    void store.genid
    await pooled(store, 16)
    const placeholders = await keysUnder(store.prefix)
    assert.ok(placeholders.length >= 16, `${placeholders.length} placeholders in memcached`)
    for (const key of placeholders.slice(0, 5)) assert.equal(await store.get(key.slice(store.prefix.length)), null)
    assert.deepEqual(await store.ids(), [])
    assert.equal(await store.length(), 0)
    assert.deepEqual(await store.all(), {})
    await store.set('real', plainSession({ real: true }))
    assert.deepEqual(await store.ids(), ['real'])
    await store.close()
    assert.deepEqual(await keysUnder(store.prefix), [`${store.prefix}real`], 'unused placeholders were deleted')
  })

  // The test above runs with logger: false. A placeholder is not a damaged session: were it decoded
  // like one, every read of a reserved ID before its first save would log "is not a session".
  it('a reserved ID read before its first save is no session, and the store logs nothing about it', async () => {
    const lines: string[] = []
    const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
    const genid = store.genid
    await pooled(store, 2)
    const sid = genid()
    assert.ok((await keysUnder(store.prefix)).includes(store.prefix + sid), 'memcached holds its placeholder')
    assert.equal(await store.get(sid), null)
    assert.deepEqual(await store.ids(), [])
    assert.deepEqual(await store.all(), {})
    assert.deepEqual(lines, [], 'a placeholder is not reported as an unreadable session')
    await store.set(sid, newSession(store, sid, { first: true }))
    assert.equal(((await store.get(sid)) as { first?: boolean } | null)?.first, true, 'its first save still claims it')
    assert.deepEqual(lines, [])
  })

  it('a reserved ID read (get-and-touch) before its first save stays a reservation: never extended, listed or counted', async () => {
    const store = stores.create()
    const genid = store.genid
    await store.set('live', plainSession({ live: true }, 3_600_000))
    assert.ok(await store.get('live'), 'reads now extend by the lifetime seen')
    await pooled(store, 2)
    const sid = genid()
    assert.equal(await store.get(sid), null)
    await eventually('the placeholder is back to its reservation’s lifetime', async () => {
      const item = await file.server.inspect(store.prefix + sid)
      return item !== undefined && item.ttl <= RESERVATION_TTL_SECONDS
    })
    assert.deepEqual(await store.ids(), ['live'])
    assert.equal(await store.length(), 1)
    assert.deepEqual(Object.keys(await store.all()), ['live'])
  })

  it('a reserved ID touched before its first save: nothing is sent, its placeholder keeps the reservation’s lifetime, and the first save still claims it', async () => {
    const store = stores.create()
    const genid = store.genid
    await pooled(store, 2)
    const sid = genid()
    const touches = async () => Number(/STAT cmd_touch (\d+)/.exec(await file.server.command('stats'))?.[1])
    const before = await touches()
    await store.touch(sid, plainSession({}, 3_600_000))
    assert.equal(await touches(), before, 'memcached was sent no touch')
    const item = await file.server.inspect(store.prefix + sid)
    assert.ok(item !== undefined && item.ttl <= RESERVATION_TTL_SECONDS, `the placeholder's TTL is ${item?.ttl} s`)
    assert.deepEqual(await store.ids(), [])
    await store.set(sid, newSession(store, sid, { first: true }))
    assert.equal(((await store.get(sid)) as { first?: boolean } | null)?.first, true)
    assert.equal(store.diagnostics().collisions, 0)
  })

  it('IDs handed out and never saved (saveUninitialized: false) are forgotten once their placeholder expires', async () => {
    const store = stores.create()
    const genid = store.genid
    await pooled(store, 4)
    for (let i = 0; i < 3; i++) genid()
    assert.equal(store.diagnostics().genid.awaitingSave, 3)
    // The placeholders' lifetime passes: the store's clock is moved on for the next hand-out only.
    const realNow = performance.now.bind(performance)
    const later = realNow() + RESERVATION_TTL_SECONDS * 1000
    performance.now = () => later
    try {
      genid()
    } finally {
      performance.now = realNow
    }
    assert.ok(store.diagnostics().genid.awaitingSave <= 1, JSON.stringify(store.diagnostics().genid))
  })

  it('close() while the pool is filling: reservations in flight settle, leave no placeholder, log nothing', async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const lines: string[] = []
      const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
      await store.ready() // the connection is open: the ADDs are sent at once
      void store.genid // refilling starts: 16 ADDs in flight
      await store.close()
      assert.deepEqual(lines, [], 'closing is not a failure to report')
      assert.deepEqual(await keysUnder(store.prefix), [], 'no placeholder is left behind')
    }
  })

  it('an empty pool (cold start, memcached down) falls back to a fresh random ID and counts it', async () => {
    const down = createStore({ servers: `127.0.0.1:${await freePort()}`, logger: false, timeout: 300 })
    try {
      const genid = down.genid
      const ids = Array.from({ length: 5 }, () => genid())
      for (const sid of ids) assert.match(sid, /^[A-Za-z0-9_-]{32}$/, 'express-session-style: 24 random bytes in base64url')
      assert.equal(new Set(ids).size, 5)
      assert.equal(down.diagnostics().genid.fallbacks, 5)
      await sleep(100)
      assert.equal(down.diagnostics().genid.pooled, 0)
    } finally {
      await down.close()
    }
  })

  it('a steady rate of new sessions never drains the pool', async () => {
    const store = stores.create()
    const genid = store.genid
    await pooled(store, 16)
    for (let tick = 0; tick < 40; tick++) {
      for (let i = 0; i < 10; i++) genid()
      await sleep(25)
    }
    assert.equal(store.diagnostics().genid.fallbacks, 0, `400 IDs at ~400/s: ${JSON.stringify(store.diagnostics().genid)}`)
  })

  it('generateId: IDs that cannot be keys are refused with a clear error', () => {
    const store = stores.create({ generateId: () => 'has space' })
    assert.throws(() => store.genid(), /`generateId` returned an ID that cannot be a memcached key: its key contains whitespace/)
    assert.throws(() => createStore({ generateId: 'abc' as never }), /`generateId` to be a function/)
  })
})
