// A graceful close: operations in flight finish (or time out against a frozen memcached), later
// ones are refused with ECLOSED and never sent.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MemcacheStoreError } from '../lib/index.ts'
import { MemcachedServer } from './harness/memcached.ts'
import { storeError, timed } from './harness/outcomes.ts'
import { createStore } from './harness/protocol.ts'
import { ownSession, plainSession, randomId, StoreFactory, sidOf } from './harness/stores.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)

before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await stores.closeAll()
  await server?.stop()
})

describe('graceful close', () => {
  it('20 saves in flight: close() lets them finish and store; later operations get ECLOSED, not sent', async () => {
    const store = stores.create()
    const reader = stores.create({ prefix: store.prefix })
    const sids = Array.from({ length: 20 }, () => randomId())
    const saves = sids.map((sid) => store.set(sid, ownSession(sid, { payload: 'x'.repeat(20_000) })))
    const closing = store.close()
    const late = Promise.allSettled([store.get(sids[0]), store.set(sids[0], ownSession(sids[0])), store.destroy(sids[0])])
    const results = await Promise.allSettled(saves)
    assert.deepEqual(
      results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
      [],
    )
    await closing
    for (const result of await late) {
      assert.equal(result.status, 'rejected')
      const err = storeError((result as PromiseRejectedResult).reason)
      assert.equal(err.code, 'ECLOSED', err.message)
      assert.equal(err.sent, false)
    }
    const stored = await Promise.all(sids.map((sid) => reader.get(sid)))
    assert.deepEqual(stored.map(sidOf), sids, 'every save was stored')
  })

  it('memcached frozen: close() resolves within about the timeout; the saves in flight fail with ETIMEDOUT', async () => {
    const frozen = await MemcachedServer.start()
    const timeout = 300
    const store = createStore({ servers: frozen.address, timeout, logger: false })
    try {
      await store.ready()
      frozen.freeze()
      const saves = Array.from({ length: 20 }, (_, i) => timed(store.set(`s${i}`, plainSession())))
      const closed = await timed(store.close())
      assert.equal(closed.error, undefined)
      assert.ok(closed.ms < timeout + 200, `close() took ${closed.ms.toFixed(0)} ms`)
      for (const save of await Promise.all(saves)) {
        const err = storeError(save.error)
        assert.equal(err.code, 'ETIMEDOUT', err.message)
        assert.ok(save.ms < timeout + 200)
      }
      await assert.rejects(store.get('s0'), (err: MemcacheStoreError) => err.code === 'ECLOSED' && err.sent === false)
    } finally {
      frozen.thaw()
      await frozen.stop()
    }
  })
})
