import assert from 'node:assert/strict'
import { tracingChannel } from 'node:diagnostics_channel'
import { describe, it } from 'node:test'
import { inspect } from 'node:util'
import memjs from 'memjs'
import { ERROR_CODES, type MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { ORIGIN_FIELD } from '../lib/origins.ts'
import { commandsDuring } from './harness/commands.ts'
import { freePort, MemcachedServer, sleep } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { RawClient } from './harness/raw.ts'
import { assertIdle, loadSession, newSession, plainSession, randomId, readSession, useMemcached } from './harness/stores.ts'
import { eventually, SettleBudget } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

function keyOf(store: MemcacheStore, sid: string): string {
  return store.prefix + sid
}

describe('get, set, destroy', () => {
  it('round-trips a session with promises', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ user: 'ada', cart: [1, 2] }))
    const sess = await readSession(store, sid)
    assert.deepEqual(sess?.user, 'ada')
    assert.deepEqual(sess?.cart, [1, 2])
    await store.destroy(sid)
    assert.equal(await store.get(sid), null)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined)
  })

  it('round-trips a session with express-session callbacks', async () => {
    const store = stores.create()
    const sid = randomId()
    await new Promise<void>((resolve, reject) => store.set(sid, plainSession({ n: 1 }), (err) => (err ? reject(err) : resolve())))
    const sess = await new Promise((resolve, reject) => store.get(sid, (err, value) => (err ? reject(err) : resolve(value))))
    assert.equal((sess as Record<string, unknown>).n, 1)
    await new Promise<void>((resolve, reject) => store.destroy(sid, (err) => (err ? reject(err) : resolve())))
    assert.equal(await store.get(sid), null)
  })

  it('passes errors to the callback and resolves the returned promise instead of rejecting it', async () => {
    const store = stores.create()
    const received = await new Promise((resolve) => {
      const returned = store.set('has space', plainSession(), (err) => resolve(err))
      returned.then(
        () => {},
        () => assert.fail('the promise must not reject when a callback is given'),
      )
    })
    assert.ok(received instanceof MemcacheStoreError)
  })

  it('keeps what it remembers for the next save out of sight: keys, JSON, spreads, inspect', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ user: 'ada' }))
    const sess = await readSession(store, sid)
    assert.ok(sess)
    assert.deepEqual(Object.keys(sess).sort(), ['cookie', 'user'])
    // Reflect.ownKeys lists symbols too: a copy must not carry the hidden one.
    assert.deepEqual(
      Reflect.ownKeys({ ...sess })
        .map(String)
        .sort(),
      ['cookie', 'user'],
    )
    assert.deepEqual(Reflect.ownKeys(Object.assign({}, sess)).map(String).sort(), ['cookie', 'user'])
    assert.deepEqual(JSON.parse(JSON.stringify(sess)), { cookie: sess.cookie, user: 'ada' })
    assert.ok(!inspect(sess).includes(store.prefix), inspect(sess))
    // Only a for...in copy (@fastify/session's) gets the origin, as a field that serializes to nothing.
    const copied: Record<string, unknown> = {}
    for (const name in sess) copied[name] = sess[name]
    assert.deepEqual(Object.keys(copied).sort(), ['cookie', ORIGIN_FIELD, 'user'])
    assert.equal(JSON.stringify(copied[ORIGIN_FIELD]), undefined)
    assert.equal(inspect(copied[ORIGIN_FIELD]), '[origin]')
    // express-session's req.session shows nothing of it, even to for...in.
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    const names: string[] = []
    for (const name in loaded) if (typeof (loaded as unknown as Record<string, unknown>)[name] !== 'function') names.push(name)
    assert.deepEqual(names.sort(), ['cookie', 'user'])
    assert.ok(!(ORIGIN_FIELD in loaded))
  })

  it('a field stored or saved under the origin’s name is never taken for an origin, nor written', async () => {
    const store = stores.create()
    const sid = randomId()
    const key = keyOf(store, sid)
    // Stored by something else, shaped like an origin of this very session.
    const forged = { key, cas: '1', text: '{"cookie":{},"role":"admin"}', storedExpiry: 0, storedMaxAge: null, extendedUntil: 0 }
    const value = JSON.stringify({ ...plainSession({ role: 'user' }), [ORIGIN_FIELD]: forged })
    assert.match(await file.server.command(`set ${key} 0 60 ${Buffer.byteLength(value)}\r\n${value}`), /^STORED/)
    const sess = await store.get(sid)
    assert.ok(sess)
    const carried: Record<string, unknown> = {}
    for (const name in sess) carried[name] = sess[name]
    assert.notDeepEqual(carried[ORIGIN_FIELD], forged)
    assert.equal(JSON.stringify(carried[ORIGIN_FIELD]), undefined, 'the stored value was replaced by the real origin')
    // Plain data under the name, as an application or a copy of stored data could give it: an upsert,
    // not a save of a loaded session, and the field is not written.
    const writes: unknown[] = []
    const noop = () => {}
    const handlers = {
      start: noop,
      end: noop,
      asyncStart: noop,
      error: noop,
      asyncEnd: (trace: { write?: unknown }) => writes.push(trace.write),
    }
    const channel = tracingChannel('express-session-memcache:operation')
    channel.subscribe(handlers as never)
    try {
      await store.set(sid, { ...plainSession({ role: 'guest' }), [ORIGIN_FIELD]: forged } as never)
    } finally {
      channel.unsubscribe(handlers as never)
    }
    assert.deepEqual(writes, ['upserted'])
    const text = (await file.server.inspect(key))?.value.toString() ?? ''
    assert.ok(!text.includes(ORIGIN_FIELD), text)
    assert.equal(JSON.parse(text).role, 'guest')
  })

  it('a logger that throws is swallowed: a get of an unreadable value still answers, with no session', { timeout: 5000 }, async () => {
    const store = stores.create({
      logger: {
        warn() {
          throw new Error('the logger broke')
        },
      },
    })
    const sid = randomId()
    const client = new RawClient(file.server.address)
    await client.set(keyOf(store, sid), 'not json', { expires: 60 })
    client.close()
    const received = await new Promise((resolve) => store.get(sid, (err, value) => resolve(err ?? value)))
    assert.equal(received, null)
  })

  it('yields null for a session that was never stored, and destroying it is not an error', async () => {
    const store = stores.create()
    assert.equal(await store.get(randomId()), null)
    await store.destroy(randomId())
  })

  it('stores under prefix + sid, and two prefixes never see each other', async () => {
    const a = stores.create({ prefix: 'appA:' })
    const b = stores.create({ prefix: 'appB:' })
    const sid = randomId()
    await a.set(sid, plainSession({ app: 'a' }))
    assert.ok(await file.server.inspect(`appA:${sid}`))
    assert.equal(await b.get(sid), null)
    await b.destroy(sid)
    assert.ok(await a.get(sid))
  })

  it('upserts plain data passed to set directly, as MemoryStore does', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }))
    await store.set(sid, plainSession({ v: 2 }))
    assert.equal((await readSession(store, sid))?.v, 2)
  })
})

describe('expiry', () => {
  it('sends the remaining cookie lifetime plus one second', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({}, 60_000))
    const item = await file.server.inspect(keyOf(store, sid))
    assert.ok(item && item.ttl >= 60 && item.ttl <= 61, `ttl ${item?.ttl}`)
  })

  it('rounds a partial second of cookie lifetime up', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({}, 1_200))
    const item = await file.server.inspect(keyOf(store, sid))
    assert.ok(item && item.ttl >= 2 && item.ttl <= 3, `ttl ${item?.ttl}`)
  })

  it('uses the ttl option when the cookie has no expiry, and 0 means no expiry', async () => {
    const store = stores.create({ ttl: 120 })
    const sid = randomId()
    await store.set(sid, plainSession({}, null))
    const item = await file.server.inspect(keyOf(store, sid))
    assert.ok(item && item.ttl >= 120 && item.ttl <= 121, `ttl ${item?.ttl}`)

    const forever = stores.create({ ttl: 0 })
    await forever.set(sid, plainSession({}, null))
    assert.equal((await file.server.inspect(keyOf(forever, sid)))?.ttl, -1)
  })

  it('uses the ttl function for every session when given', async () => {
    const store = stores.create({ ttl: (sess) => (sess.admin ? 30 : 300) })
    const sid = randomId()
    await store.set(sid, plainSession({ admin: true }, 60_000))
    const item = await file.server.inspect(keyOf(store, sid))
    assert.ok(item && item.ttl >= 30 && item.ttl <= 31, `ttl ${item?.ttl}`)
  })

  it('rejects a ttl function that returns no number, writing nothing', async () => {
    const store = stores.create({ ttl: () => 'soon' as unknown as number })
    const sid = randomId()
    await assert.rejects(store.set(sid, plainSession()), /`ttl` function to return a number/)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined)
  })

  it('keeps a 31-day cookie: sent as an absolute Unix time, still there after 2 s', async () => {
    const store = stores.create()
    const sid = randomId()
    const days31 = 31 * 24 * 3600 * 1000
    await store.set(sid, plainSession({ long: true }, days31))
    const item = await file.server.inspect(keyOf(store, sid))
    assert.ok(item && Math.abs(item.ttl - days31 / 1000) <= 2, `ttl ${item?.ttl}`)
    await sleep(2000)
    assert.ok(await file.server.inspect(keyOf(store, sid)))
    assert.ok(await store.get(sid))
  })

  it('deletes the stored session instead of writing one whose cookie has expired', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }))
    const expired = plainSession({ v: 2 }, 60_000) as unknown as { cookie: { expires: string } }
    expired.cookie.expires = new Date(Date.now() - 1000).toISOString()
    await store.set(sid, expired as never)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined)
  })

  it('yields no session once the cookie has expired, even while memcached still holds it', async () => {
    const store = stores.create()
    const sid = randomId()
    // 1.5 s of life: the first read comes well within it, even on a loaded machine; memcached gets
    // 2 + 1 s, so it still holds the session for a while after its cookie expired.
    const sess = plainSession({}, 1_500)
    await store.set(sid, sess)
    assert.ok(await store.get(sid))
    await sleep(Date.parse(String(sess.cookie.expires)) + 50 - Date.now())
    assert.ok(await file.server.inspect(keyOf(store, sid)), 'memcached still holds it')
    assert.equal(await store.get(sid), null)
    // The read found it expired: it is not kept alive by the read's get-and-touch, but deleted.
    await eventually('the expired session is gone from memcached', async () => (await file.server.inspect(keyOf(store, sid))) === undefined)
  })
})

describe('an unmodified save', () => {
  /** A session stored by one store and loaded by another (a fresh process: its read is a plain GET that moves no expiry). */
  async function loadedElsewhere(options: Parameters<typeof stores.create>[0] = {}, maxAgeMs = 20_000) {
    const writer = stores.create()
    const store = stores.create({ ...options, prefix: writer.prefix })
    const sid = randomId()
    await writer.set(sid, newSession(writer, sid, { user: 'ada', cart: [1] }, maxAgeMs))
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    return { store, sid, loaded, before: await file.server.inspect(keyOf(store, sid)) }
  }

  /** A session stored and loaded by the same store: its read moved the expiry (get-and-touch). */
  async function loadedHere() {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { user: 'ada' }, 20_000))
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    return { store, sid, loaded }
  }

  it('only moves the expiry: one TOUCH, the value and its CAS unchanged', async () => {
    const { store, sid, loaded, before } = await loadedElsewhere()
    assert.ok(before)
    assert.match(await file.server.command(`touch ${keyOf(store, sid)} 5`), /^TOUCHED/)
    loaded.cookie.maxAge = 20_000 // the cookie renewed, as every framework does before saving
    const sent = await commandsDuring(file.server, () => store.set(sid, loaded))
    assert.deepEqual(sent, { get: 0, touch: 1, set: 0, delete: 0, total: 1 })
    const after = await file.server.inspect(keyOf(store, sid))
    assert.ok(after)
    assert.deepEqual([after.cas, after.value], [before.cas, before.value], 'not written')
    assert.ok(after.ttl >= 20, `the expiry moved back to the cookie's 20 s (ttl ${after.ttl})`)
  })

  it('sends nothing when the read already moved the expiry (get-and-touch)', async () => {
    const { store, sid, loaded } = await loadedHere()
    loaded.cookie.maxAge = 20_000
    const sent = await commandsDuring(file.server, () => store.set(sid, loaded))
    assert.equal(sent.total, 0, JSON.stringify(sent))
  })

  it("sends nothing when express-session's resetMaxAge left originalMaxAge a millisecond short (a clock tick): no lifetime change", async () => {
    const { store, sid, loaded } = await loadedHere()
    const stored = loaded.cookie.originalMaxAge as number
    // What cookie.resetMaxAge does when the clock ticks between setting the expiry and reading it back.
    loaded.cookie.maxAge = 20_000
    loaded.cookie.originalMaxAge = stored - 1
    const sent = await commandsDuring(file.server, () => store.set(sid, loaded))
    assert.equal(sent.total, 0, JSON.stringify(sent))
  })

  it('a field changed, added or deleted is written; so is a cookie whose lifetime changed', async () => {
    const changes: Array<[string, (sess: Record<string, unknown> & { cookie: { maxAge: number | null } }) => void]> = [
      ['changed', (sess) => (sess.cart = [1, 2])],
      ['changed inside', (sess) => (sess.cart as number[]).push(2)],
      ['added', (sess) => (sess.admin = false)],
      ['deleted', (sess) => delete sess.user],
      ['set to undefined', (sess) => (sess.user = undefined)],
      ['lifetime', (sess) => (sess.cookie.maxAge = 3_600_000)],
    ]
    for (const [what, change] of changes) {
      const { store, sid, loaded, before } = await loadedElsewhere()
      change(loaded as never)
      await store.set(sid, loaded)
      const after = await file.server.inspect(keyOf(store, sid))
      assert.notEqual(after?.cas, before?.cas, `${what}: written`)
    }
  })

  it('with disableTouch, nothing is sent', async () => {
    const { store, sid, loaded } = await loadedElsewhere({ disableTouch: true })
    loaded.cookie.maxAge = 20_000
    const sent = await commandsDuring(file.server, () => store.set(sid, loaded))
    assert.equal(sent.total, 0, JSON.stringify(sent))
  })

  it('a session deleted meanwhile is not re-created', async () => {
    const { store, sid, loaded } = await loadedElsewhere()
    await store.destroy(sid)
    await store.set(sid, loaded)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined)
  })
})

describe('touch', () => {
  it("keeps a touched session readable after its stored cookie expired: memcached's extended expiry decides", async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }, 1_000))
    await store.touch(sid, plainSession({ v: 1 }, 20_000))
    await sleep(4_200)
    assert.ok(await file.server.inspect(keyOf(store, sid)), 'memcached still holds it')
    assert.equal((await readSession(store, sid))?.v, 1)
  })

  it('moves the expiry without rewriting the stored bytes', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }, 10_000))
    const before = await file.server.inspect(keyOf(store, sid))
    assert.ok(before && before.ttl <= 11)
    await store.touch(sid, plainSession({ v: 'not written' }, 100_000))
    const after = await file.server.inspect(keyOf(store, sid))
    assert.ok(after && after.ttl >= 100 && after.ttl <= 101, `ttl ${after?.ttl}`)
    assert.deepEqual(after.value, before.value)
  })

  it('does nothing for an expired cookie, a missing session, or with disableTouch', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({}, 10_000))
    const expired = plainSession({}, 10_000) as unknown as { cookie: { expires: string } }
    expired.cookie.expires = new Date(Date.now() - 1).toISOString()
    await store.touch(sid, expired as never)
    assert.ok(((await file.server.inspect(keyOf(store, sid)))?.ttl ?? 0) <= 11)

    // A touch of a session memcached does not hold settles and leaves nothing behind.
    const missing = randomId()
    await store.touch(missing, plainSession({ v: 'not written' }, 100_000))
    assert.equal(await file.server.inspect(keyOf(store, missing)), undefined, 'the touch created no session')
    assert.equal(await store.get(missing), null)

    const untouchable = stores.create({ disableTouch: true })
    await untouchable.set(sid, plainSession({}, 10_000))
    await untouchable.touch(sid, plainSession({}, 100_000))
    assert.ok(((await file.server.inspect(keyOf(untouchable, sid)))?.ttl ?? 99) <= 11)
  })
})

describe('collision-checked new sessions', () => {
  it('adds a new session; a second new session under the same ID fails, the stored one is replaced by a marker, and the ID stays refused', async () => {
    const store = stores.create({ ttl: 600 })
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { owner: 'first', secret: 42 }))
    const isCollision = (err: MemcacheStoreError) => {
      assert.equal(err.code, 'ECOLLISION')
      assert.match(err.message, /collision/)
      assert.ok(!err.message.includes(sid), 'the message must not contain the whole session ID')
      return true
    }
    await assert.rejects(store.set(sid, newSession(store, sid, { owner: 'second' }, 60_000)), isCollision)
    const marker = await file.server.inspect(keyOf(store, sid))
    assert.ok(marker, 'the ID is still taken')
    assert.ok(!marker.value.toString().includes('first'), 'neither holder can read the other')
    assert.ok(marker.ttl >= 600 && marker.ttl <= 602, `the marker lives as long as the store's ttl at least (ttl ${marker.ttl})`)
    assert.equal(await store.get(sid), null, 'a read finds no session')
    // A framework that retries the save (Fastify's error path), or the next new session under the ID.
    await assert.rejects(store.set(sid, newSession(store, sid, { owner: 'second' })), isCollision)
    await assert.rejects(store.set(sid, newSession(store, sid, { owner: 'third' }, 3_600_000)), isCollision)
    const longer = await file.server.inspect(keyOf(store, sid))
    assert.ok(longer && longer.ttl >= 3600 && longer.ttl <= 3602, `the longer lifetime of the session refused (ttl ${longer?.ttl})`)
    assert.equal(store.diagnostics().collisions, 3)
  })

  it('a loaded session whose ID another new session collided with is not saved over the marker', async () => {
    for (const merge of [true, false]) {
      const store = stores.create({ merge })
      const sid = randomId()
      await store.set(sid, newSession(store, sid, { owner: 'first' }))
      const loaded = await loadSession(store, sid)
      assert.ok(loaded)
      await assert.rejects(
        store.set(sid, newSession(store, sid, { owner: 'second' })),
        (err: MemcacheStoreError) => err.code === 'ECOLLISION',
      )
      loaded.cart = ['late']
      await store.set(sid, loaded)
      const stored = (await file.server.inspect(keyOf(store, sid)))?.value.toString() ?? ''
      assert.ok(!stored.includes('first') && !stored.includes('late'), `merge: ${merge}: the first holder's save went over the marker`)
      assert.equal(await store.get(sid), null)
    }
  })

  it('a new session saved twice in one request is not a collision', async () => {
    const store = stores.create()
    const sid = randomId()
    const sess = newSession(store, sid, { step: 1 })
    await store.set(sid, sess)
    sess.step = 2
    await store.set(sid, sess)
    assert.equal((await readSession(store, sid))?.step, 2)
  })

  it('never re-creates a loaded session that was destroyed meanwhile', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { user: 'ada' }))
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    await store.destroy(sid) // a logout in a concurrent request
    loaded.cart = ['late change']
    await store.set(sid, loaded)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined)
  })

  it('with merge: false, never re-creates a loaded session that another request destroyed meanwhile', async () => {
    const store = stores.create({ merge: false })
    const other = stores.create({ merge: false, prefix: store.prefix }) // another process, the same sessions
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { user: 'ada' }))
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    // While it exists, a save of the loaded session is written (REPLACE)...
    loaded.step = 1
    await store.set(sid, loaded)
    assert.equal((await readSession(other, sid))?.step, 1)
    // ...once another request logged out, it must not come back.
    await other.destroy(sid)
    loaded.cart = ['late change']
    await store.set(sid, loaded)
    assert.equal(await file.server.inspect(keyOf(store, sid)), undefined, 'the save re-created a destroyed session')
    assert.equal(await other.get(sid), null)
  })

  it('saves a loaded session under another ID as a copy: the other ID holds its data, the original is unchanged', async () => {
    const store = stores.create()
    const original = randomId()
    const copy = randomId()
    await store.set(original, plainSession({ user: 'ada', cart: [1] }))
    const loaded = await loadSession(store, original)
    assert.ok(loaded)
    loaded.cart = [1, 2]
    await store.set(copy, loaded)
    const stored = await readSession(store, copy)
    assert.ok(stored, 'the session was stored under the other ID')
    assert.deepEqual([stored.user, stored.cart], ['ada', [1, 2]])
    assert.deepEqual((await readSession(store, original))?.cart, [1], 'the original ID was not written')
  })
})

describe('bad arguments fail at once', () => {
  /** memcached's count of commands received: nothing may be sent for a refused call. */
  async function commandsSent(): Promise<number> {
    const text = await file.server.command('stats')
    const read = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)`).exec(text)?.[1])
    return read('cmd_get') + read('cmd_set') + read('cmd_touch') + read('delete_hits') + read('delete_misses')
  }

  it('a callback that is not a function is a TypeError thrown at once: nothing sent, nothing left pending, no unhandled rejection', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ kept: true }))
    const before = await file.server.inspect(keyOf(store, sid))
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const sentBefore = await commandsSent()
      // What koa-session passes where express-session's callback goes: maxAge, then `{ ctx }` (whose
      // request carries the session cookie: it must not reach the message).
      const ctx = { ctx: { headers: { cookie: `koa.sess=${sid}` } }, rolling: false }
      const calls: Array<[string, () => unknown]> = [
        ['get', () => store.get(sid, 86_400_000 as never)],
        ['set', () => store.set(sid, plainSession({ kept: false }), 86_410_000 as never)],
        ['destroy', () => store.destroy(sid, ctx as never)],
        ['touch', () => store.touch(sid, plainSession(), 'later' as never)],
        ['all', () => store.all(true as never)],
        ['ids', () => store.ids({} as never)],
        ['length', () => store.length(1 as never)],
        ['clear', () => store.clear([] as never)],
      ]
      for (const [name, call] of calls) {
        assert.throws(call, (err: Error) => {
          assert.ok(err instanceof TypeError, `${name}: ${err}`)
          assert.match(err.message, new RegExp(`callback of \`${name}\` to be a function`))
          assert.ok(!err.message.includes(sid), `${name}: the message names the cookie's session ID`)
          return true
        })
      }
      assertIdle(store)
      await sleep(20)
      assert.equal(await commandsSent(), sentBefore, 'no command reached memcached')
      assert.deepEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
    const after = await file.server.inspect(keyOf(store, sid))
    assert.ok(before && after, 'the session is still stored')
    assert.deepEqual([after.cas, after.value], [before.cas, before.value], 'the session is as it was')
    // memcached counts what is left in whole seconds: a second may tick between the two reads.
    assert.ok(after.ttl >= before.ttl - 1 && after.ttl <= before.ttl, `its expiry did not move (ttl ${after.ttl}, was ${before.ttl})`)
  })

  it('an absent callback (undefined or null) is none: the promise settles', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ n: 1 }), undefined)
    await store.set(sid, plainSession({ n: 2 }), null as never)
    assert.equal((await readSession(store, sid))?.n, 2)
    await store.destroy(sid, null as never)
    assert.equal(await store.get(sid, null as never), null)
  })
})

describe('keys memcached would refuse', () => {
  const badIds = ['has space', 'tab\there', 'nul\0byte', 'newline\n', 'del\x7f', 'x'.repeat(300), '\ud800lone', '']
  for (const sid of badIds) {
    it(`${JSON.stringify(sid.slice(0, 12))}: get yields no session, others fail clearly, the connection survives`, async () => {
      const store = stores.create()
      const good = randomId()
      await store.set(good, plainSession({ ok: true }))
      assert.equal(await store.get(sid), null)
      for (const op of [() => store.set(sid, plainSession()), () => store.destroy(sid), () => store.touch(sid, plainSession())]) {
        await assert.rejects(op(), (err: MemcacheStoreError) => err.code === 'EBADKEY' && /session ID|key for session/.test(err.message))
      }
      assert.ok(await store.get(good), 'other sessions are untouched and the connection still works')
    })
  }

  it('accepts a Unicode ID within 250 bytes and counts bytes, not characters', async () => {
    const store = stores.create({ prefix: 'u:' })
    const sid = 'ü'.repeat(124) // 248 bytes, with the prefix 250
    await store.set(sid, plainSession({ uni: true }))
    assert.ok(await store.get(sid))
    await assert.rejects(store.set(`${sid}ü`, plainSession()), /252 bytes/)
  })
})

describe('item size', () => {
  it('refuses a session over the item limit, naming both sizes, and keeps the stored one', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 'small' }))
    await assert.rejects(store.set(sid, plainSession({ v: 'x'.repeat(1_100_000) })), (err: MemcacheStoreError) => {
      assert.equal(err.code, 'ETOOLARGE')
      assert.match(err.message, /1100\d{3} bytes/)
      assert.match(err.message, /1048576/)
      return true
    })
    assert.equal((await readSession(store, sid))?.v, 'small')
  })

  it('accepts a session just under the limit', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 'x'.repeat(1_048_576 - 400) }))
    assert.ok(await store.get(sid))
  })

  it('follows a configured maxItemSize, matching memcached -I', async () => {
    const big = await MemcachedServer.start({ args: ['-I', '2m'] })
    try {
      const store = createStore({ servers: big.address, maxItemSize: 2 * 1_048_576, logger: false })
      const sid = randomId()
      await store.set(sid, plainSession({ v: 'x'.repeat(1_500_000) }))
      assert.ok(await store.get(sid))
      await store.close()
    } finally {
      await big.stop()
    }
  })
})

describe('unreadable stored values', () => {
  const values: Array<[string, string | Buffer]> = [
    ['truncated JSON', '{"cookie":{"originalMaxAge":1000'],
    ['a number', '42'],
    ['an array', '[1,2]'],
    ['no cookie', '{"user":"ada"}'],
    ['null', 'null'],
    ['random bytes', Buffer.from([0xff, 0x00, 0x81, 0x7b, 0x22])],
  ]
  for (const [name, raw] of values) {
    it(`${name}: yields no session, throws nothing, logs without the whole session ID`, async () => {
      const lines: string[] = []
      const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
      const sid = randomId()
      const client = new RawClient(file.server.address)
      await client.set(keyOf(store, sid), raw as string, { expires: 60 })
      client.close()
      assert.equal(await store.get(sid), null)
      assert.equal(lines.length, 1)
      assert.match(lines[0], /not a session/)
      assert.ok(!lines[0].includes(sid))
    })
  }
})

describe('ready and close', () => {
  it('ready() resolves when every server answers', async () => {
    await stores.create().ready()
  })

  it('ready() rejects naming each unreachable server', async () => {
    const [deadA, deadB] = [await freePort(), await freePort()]
    const store = createStore({ servers: [`127.0.0.1:${deadA}`, file.server.address, `127.0.0.1:${deadB}`], logger: false })
    await assert.rejects(store.ready(), (err: Error) => {
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${deadA} \\(.*ECONNREFUSED`))
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${deadB}`))
      assert.ok(!err.message.includes(file.server.address), 'the reachable server is not named')
      assert.match(err.message, /2 of 3/)
      return true
    })
    await store.close()
  })

  it('close() closes its own client; later operations fail instead of reconnecting', async () => {
    const store = stores.create()
    await store.set('a', plainSession())
    await store.close()
    await assert.rejects(store.get('a'), (err: MemcacheStoreError) => err.code === 'ECLOSED')
  })

  it('uses the servers of a memjs client it was given, and never closes that client', async () => {
    const client = memjs.Client.create(file.server.address, { logger: { log() {} } })
    let closed = 0
    client.close = () => void closed++
    const store = createStore({ client, prefix: 'given:', logger: false })
    await store.set('a', plainSession({ via: 'client' }))
    assert.equal((await readSession(store, 'a'))?.via, 'client')
    assert.ok(await file.server.inspect('given:a'), "the session is on the client's server")
    await store.close()
    assert.equal(closed, 0)
  })
})

describe('per-session locks', () => {
  it('leave the lock table empty after many concurrent operations on many sessions', async () => {
    const store = stores.create()
    const ids = Array.from({ length: 200 }, randomId)
    await Promise.all(
      ids.flatMap((sid) => [store.set(sid, plainSession()), store.get(sid), store.touch(sid, plainSession()), store.destroy(sid)]),
    )
    assertIdle(store)
  })

  it('run operations on one session in arrival order', async () => {
    const store = stores.create()
    const sid = randomId()
    const order: string[] = []
    const track = (label: string, p: Promise<unknown>) => p.then(() => order.push(label))
    await Promise.all([
      track('set1', store.set(sid, newSession(store, sid, { v: 1 }))),
      track('get1', store.get(sid)),
      track('set2', store.set(sid, plainSession({ v: 2 }))),
      track('destroy', store.destroy(sid)),
      track('get2', store.get(sid)),
    ])
    assert.deepEqual(order, ['set1', 'get1', 'set2', 'destroy', 'get2'])
  })
})

describe('bounded time and failOpen', () => {
  it('settles within the timeout when the server is frozen, with an error naming the server, and recovers', async () => {
    const frozen = await MemcachedServer.start()
    const store = createStore({ servers: frozen.address, timeout: 300, logger: false })
    try {
      await store.set('a', plainSession({ v: 1 }))
      frozen.freeze()
      const budget = new SettleBudget(300)
      const started = performance.now()
      await assert.rejects(store.get('a'), (err: MemcacheStoreError) => {
        assert.equal(err.code, 'ETIMEDOUT')
        assert.ok(err.message.includes(frozen.address))
        return true
      })
      const took = performance.now() - started
      assert.ok(took < budget.limitMs, budget.describe(took))
      frozen.thaw()
      const deadline = Date.now() + 2000
      let value: unknown = null
      while (Date.now() < deadline && !value) value = await store.get('a').catch(() => null)
      assert.ok(value, 'reads succeed again after the thaw')
    } finally {
      await store.close()
      await frozen.stop()
    }
  })

  it('failOpen: a dead server yields no session, writes succeed without writing, one log line per burst; destroy still fails', async () => {
    const doomed = await MemcachedServer.start()
    const lines: string[] = []
    const store = createStore({ servers: doomed.address, failOpen: true, timeout: 300, logger: { warn: (l) => lines.push(l) } })
    try {
      await store.set('a', plainSession())
      await doomed.kill()
      for (let i = 0; i < 10; i++) {
        assert.equal(await store.get('a'), null)
        await store.set('a', plainSession())
        await store.touch('a', plainSession())
        // A logout that did not happen must not look like one.
        await assert.rejects(
          store.destroy('a'),
          (err: MemcacheStoreError) => ERROR_CODES[err.code].kind === 'server' && err.operation === 'destroy',
        )
      }
      assert.equal(lines.length, 1, lines.join('\n'))
      assert.match(lines[0], /failOpen/)
      assert.match(lines[0], new RegExp(doomed.address.replace(/\./g, '\\.')))
    } finally {
      await store.close()
    }
  })

  it('without failOpen, a dead server is an error passed on', async () => {
    const doomed = await MemcachedServer.start()
    const store = createStore({ servers: doomed.address, timeout: 300, logger: false })
    await doomed.kill()
    await assert.rejects(store.get('a'), (err: MemcacheStoreError) => err instanceof Error && err.message.includes(doomed.address))
    await store.close()
  })
})
