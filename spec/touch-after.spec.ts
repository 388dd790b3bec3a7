import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { MemcacheStore } from '../lib/index.ts'
import { RecentTouches } from '../lib/recent-touches.ts'
import { sleep } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { plainSession, randomId, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file

const TEN_SECONDS = 10_000
const ONE_HOUR = 3_600_000

/** Stores a session that expires in 10 s, then touches it twice with a cookie of an hour: the TTL memcached ends up with. */
async function ttlAfterTwoTouches(store: MemcacheStore, sid: string, between: () => Promise<void> = async () => {}): Promise<number> {
  await store.set(sid, plainSession({}, TEN_SECONDS))
  await store.touch(sid, plainSession({}, TEN_SECONDS))
  await between()
  await store.touch(sid, plainSession({}, ONE_HOUR))
  const item = await file.server.inspect(store.prefix + sid)
  assert.ok(item, 'the session is still stored')
  return item.ttl
}

describe('touchAfter', () => {
  it('skips a touch of a session this store touched less than touchAfter seconds ago', async () => {
    const store = stores.create({ touchAfter: 60 })
    const ttl = await ttlAfterTwoTouches(store, randomId())
    assert.ok(ttl <= 11, `the second touch was skipped (TTL ${ttl} s)`)
  })

  it('touches every time without touchAfter (the default)', async () => {
    const store = stores.create()
    const ttl = await ttlAfterTwoTouches(store, randomId())
    assert.ok(ttl > 3000, `the second touch went through (TTL ${ttl} s)`)
  })

  it('touches again once touchAfter has passed', async () => {
    const store = stores.create({ touchAfter: 0.3 })
    const ttl = await ttlAfterTwoTouches(store, randomId(), () => sleep(400))
    assert.ok(ttl > 3000, `the touch after the window went through (TTL ${ttl} s)`)
  })

  it('remembers only what this store touched: another store (another process) still touches', async () => {
    const first = stores.create({ touchAfter: 60 })
    const second = createStore({ servers: file.server.address, prefix: first.prefix, logger: false, touchAfter: 60 })
    try {
      const sid = randomId()
      await first.set(sid, plainSession({}, TEN_SECONDS))
      await first.touch(sid, plainSession({}, TEN_SECONDS))
      await second.touch(sid, plainSession({}, ONE_HOUR))
      const item = await file.server.inspect(first.prefix + sid)
      assert.ok(item && item.ttl > 3000, `the other store's touch went through (TTL ${item?.ttl} s)`)
    } finally {
      await second.close()
    }
  })

  it('does not remember a touch of a missing session, nor one destroyed since', async () => {
    const store = stores.create({ touchAfter: 60 })
    const sid = randomId()
    await store.touch(sid, plainSession({}, TEN_SECONDS))
    await store.set(sid, plainSession({}, TEN_SECONDS))
    await store.touch(sid, plainSession({}, ONE_HOUR))
    assert.ok(((await file.server.inspect(store.prefix + sid))?.ttl ?? 0) > 3000, 'a touch that found nothing was not remembered')
    await store.destroy(sid)
    await store.set(sid, plainSession({}, TEN_SECONDS))
    await store.touch(sid, plainSession({}, ONE_HOUR))
    assert.ok(((await file.server.inspect(store.prefix + sid))?.ttl ?? 0) > 3000, 'destroy forgot the earlier touch')
  })

  it('passes a skipped touch to the callback like any other', async () => {
    const store = stores.create({ touchAfter: 60 })
    const sid = randomId()
    await store.set(sid, plainSession())
    await store.touch(sid, plainSession())
    const err = await new Promise((resolve) => store.touch(sid, plainSession(), (e) => resolve(e)))
    assert.equal(err, null)
  })

  it('rejects a touchAfter that is not a non-negative number of seconds, quoting it', () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, '60', true]) {
      assert.throws(
        () => createStore({ touchAfter: bad as number }),
        (err: Error) => {
          assert.ok(err instanceof TypeError)
          assert.match(err.message, /`touchAfter`/)
          assert.match(err.message, /got `/)
          return true
        },
      )
    }
  })
})

describe('RecentTouches', () => {
  it('keeps at most two generations of keys, however many sessions are touched', () => {
    const recent = new RecentTouches(60_000, 100, 0)
    for (let i = 0; i < 10_000; i++) recent.record(`k${i}`, i / 1000)
    assert.ok(recent.size <= 200, `remembered ${recent.size} keys`)
    assert.ok(recent.isRecent('k9999', 10))
    assert.ok(!recent.isRecent('k0', 10), 'the oldest keys were dropped')
  })

  it('forgets keys older than the window, and drops whole generations as time passes', () => {
    const recent = new RecentTouches(1000, 100, 0)
    recent.record('a', 0)
    assert.ok(recent.isRecent('a', 999))
    assert.ok(!recent.isRecent('a', 1000))
    recent.record('b', 1500)
    recent.record('c', 2600)
    assert.ok(!recent.isRecent('a', 2600))
    assert.equal(recent.size, 2, 'the generation holding `a` was dropped')
  })
})
