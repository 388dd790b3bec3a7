// Listing stays within its bounds: nested prefixes never list, read or clear each other, and a key
// dump that never ends or stalls fails within its deadline, naming the server.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MemcacheStore } from '../lib/index.ts'
import { MemcachedServer } from './harness/memcached.ts'
import { storeError, timed } from './harness/outcomes.ts'
import { tricklingServer } from './harness/peers.ts'
import { createStore } from './harness/protocol.ts'
import { ownSession, randomId, StoreFactory, sidOf, uniquePrefix } from './harness/stores.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)

before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await stores.closeAll()
  await server?.stop()
})

describe('nested prefixes', () => {
  async function populate(store: MemcacheStore, count: number): Promise<string[]> {
    const sids = Array.from({ length: count }, () => randomId())
    await Promise.all(sids.map((sid) => store.set(sid, ownSession(sid, { prefix: store.prefix }))))
    return sids
  }

  async function assertListsExactly(store: MemcacheStore, sids: string[]): Promise<void> {
    const expected = [...sids].sort()
    assert.deepEqual((await store.ids()).sort(), expected, `ids() of ${store.prefix}`)
    assert.equal(await store.length(), sids.length, `length() of ${store.prefix}`)
    const all = await store.all()
    assert.deepEqual(Object.keys(all).sort(), expected, `all() of ${store.prefix}`)
    for (const [sid, sess] of Object.entries(all)) assert.equal(sidOf(sess), sid)
  }

  it('app: and app:admin: on one memcached never list, read or clear each other', async () => {
    const base = `${uniquePrefix()}app:`
    const app = stores.create({ prefix: base })
    const admin = stores.create({ prefix: `${base}admin:` })
    let appSids = await populate(app, 6)
    let adminSids = await populate(admin, 4)
    await assertListsExactly(app, appSids)
    await assertListsExactly(admin, adminSids)

    await app.clear()
    await assertListsExactly(app, [])
    await assertListsExactly(admin, adminSids)
    for (const sid of adminSids) assert.equal(sidOf(await admin.get(sid)), sid, "app's clear() left admin's sessions")

    appSids = await populate(app, 5)
    await admin.clear()
    await assertListsExactly(admin, [])
    await assertListsExactly(app, appSids)
    for (const sid of appSids) assert.equal(sidOf(await app.get(sid)), sid, "admin's clear() left app's sessions")
    adminSids = await populate(admin, 2)
    await assertListsExactly(admin, adminSids)
    await assertListsExactly(app, appSids)
  })
})

describe('listing is bounded', () => {
  const TIMEOUT = 300

  it('a key dump that never ends: ids(), length(), all() and clear() each fail within 10 × timeout, naming the server', async () => {
    const trickler = await tricklingServer({ intervalMs: 100 })
    const listers = Array.from({ length: 4 }, () =>
      createStore({ servers: trickler.address, prefix: 'trickle:', timeout: TIMEOUT, logger: false }),
    )
    try {
      const [ids, length, all, clear] = await Promise.all([
        timed(listers[0].ids()),
        timed(listers[1].length()),
        timed(listers[2].all()),
        timed(listers[3].clear()),
      ])
      for (const [name, outcome] of Object.entries({ ids, length, all, clear })) {
        const err = storeError(outcome.error)
        assert.equal(err.code, 'ETIMEDOUT', `${name}: ${err.message}`)
        assert.equal(err.server, trickler.address)
        assert.ok(err.message.includes(trickler.address), err.message)
        assert.match(err.message, /did not end within 3000 ms/)
        assert.ok(outcome.ms >= 10 * TIMEOUT - 50 && outcome.ms < 10 * TIMEOUT + 1000, `${name} settled in ${outcome.ms.toFixed(0)} ms`)
      }
      assert.ok(trickler.linesSent >= 4 * 20, `the dumps kept trickling (${trickler.linesSent} lines)`)
    } finally {
      await Promise.all(listers.map((store) => store.close()))
      await trickler.close()
    }
  })

  it('a key dump that stalls after its first line: ETIMEDOUT after the idle timeout', async () => {
    const trickler = await tricklingServer({ stallAfterFirstLine: true })
    const store = createStore({ servers: trickler.address, timeout: TIMEOUT, logger: false })
    try {
      for (const operation of ['ids', 'length', 'all', 'clear'] as const) {
        const { ms, error } = await timed<unknown>(store[operation]())
        const err = storeError(error)
        assert.equal(err.code, 'ETIMEDOUT', err.message)
        assert.equal(err.server, trickler.address)
        assert.match(err.message, /stalled: nothing received for 300 ms/)
        assert.ok(ms < TIMEOUT + 500, `${operation} settled in ${ms.toFixed(0)} ms`)
      }
    } finally {
      await store.close()
      await trickler.close()
    }
  })
})
