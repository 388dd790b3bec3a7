import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import type { SessionData } from 'express-session'
import request from 'supertest'
import type { MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { mergeSessions } from '../lib/merge.ts'
import { testApp } from './harness/app.ts'
import { sleep } from './harness/memcached.ts'
import { replyHookProxy } from './harness/peers.ts'
import { createStore } from './harness/protocol.ts'
import { RawClient, setSync } from './harness/raw.ts'
import { loadSession, plainSession, randomId, uniquePrefix, useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

describe('three-way merge of top-level fields', () => {
  const cookie = { originalMaxAge: 1000 }
  it("takes this request's added, changed and deleted fields and keeps every other stored field", () => {
    const base = { cookie, kept: 1, changed: 1, deleted: 1, theirsChanged: 1 }
    const mine = { cookie: { originalMaxAge: 2000 }, kept: 1, changed: 2, added: 'new', theirsChanged: 1 }
    const theirs = { cookie, kept: 1, changed: 1, deleted: 1, theirsChanged: 'theirs', theirsAdded: true }
    assert.deepEqual(mergeSessions(base, mine, theirs), {
      cookie: { originalMaxAge: 2000 },
      kept: 1,
      changed: 2,
      theirsChanged: 'theirs',
      theirsAdded: true,
      added: 'new',
    })
  })

  it('compares nested values by content, and the later save wins a field both changed', () => {
    const base = { cookie, cart: { items: [1] } }
    assert.deepEqual(mergeSessions(base, { cookie, cart: { items: [1] } }, { cookie, cart: { items: [1, 2] } }).cart, { items: [1, 2] })
    assert.deepEqual(mergeSessions(base, { cookie, cart: { items: [3] } }, { cookie, cart: { items: [1, 2] } }).cart, { items: [3] })
  })
})

/**
 * One session, two requests that have both loaded it before either saves: the `earlier` one saves
 * first, then the `later` one (each is held in its route until released, so the order does not
 * depend on timing). Resolves to what memcached holds afterwards.
 */
async function overlappingSaves(
  store: MemcacheStore,
  initial: Record<string, unknown>,
  later: Record<string, unknown>,
  earlier: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const app = testApp(store)
  const agent = request.agent(app)
  const { body } = await agent.post('/set').send(initial).expect(200)
  // `.then` sends a supertest request; without it nothing would be sent before it is awaited.
  const responses = [later, earlier].map((fields) =>
    agent
      .post('/set-when-released')
      .send(fields)
      .then((res) => res),
  )
  await eventually('both requests have loaded the session', () => app.held.length === 2)
  const heldWith = (fields: Record<string, unknown>) => app.held.find((held) => isDeepStrictEqual(held.fields, fields))
  assert.ok(heldWith(earlier) && heldWith(later))
  heldWith(earlier)?.release()
  assert.equal((await responses[1]).status, 200)
  heldWith(later)?.release()
  assert.equal((await responses[0]).status, 200)
  return storedFields(store, body.id)
}

/** The fields memcached holds for a session of `store` (read raw: nothing extends or deletes it). */
async function storedFields(store: MemcacheStore, sid: string): Promise<Record<string, unknown>> {
  return JSON.parse((await file.server.inspect(store.prefix + sid))?.value.toString() ?? '{}')
}

function pick(fields: Record<string, unknown>, ...names: string[]): Record<string, unknown> {
  return Object.fromEntries(names.map((name) => [name, fields[name]]))
}

describe('concurrent requests in one process', () => {
  it('two overlapping requests changing different fields: both changes survive', async () => {
    const stored = await overlappingSaves(stores.create(), { start: true }, { a: 'from the later' }, { b: 'from the earlier' })
    assert.equal(stored.a, 'from the later')
    assert.equal(stored.b, 'from the earlier')
  })

  it('the same field changed by both: the later save wins', async () => {
    const stored = await overlappingSaves(stores.create(), { x: 'initial' }, { x: 'later' }, { x: 'earlier' })
    assert.equal(stored.x, 'later')
  })

  it("with merge: false, the later save erases the other's change (MemoryStore's semantics)", async () => {
    const stored = await overlappingSaves(
      stores.create({ merge: false }),
      { start: true },
      { a: 'from the later' },
      { b: 'from the earlier' },
    )
    assert.equal(stored.a, 'from the later')
    assert.equal(stored.b, undefined, "the earlier request's change was lost")
  })

  it('adds nothing to the session data the app sees or that is stored', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }))
    const loaded = await loadSession(store, sid)
    assert.deepEqual(Object.keys(loaded ?? {}).sort(), ['cookie', 'v'])
    assert.ok(loaded)
    await store.set(sid, loaded)
    const stored = JSON.parse((await file.server.inspect(store.prefix + sid))?.value.toString() ?? '{}')
    assert.deepEqual(Object.keys(stored).sort(), ['cookie', 'v'])
  })

  it("a request that saves again after a merged save keeps the other request's change", async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ start: true }))
    const a = await loadSession(store, sid)
    const b = await loadSession(store, sid)
    assert.ok(a && b)
    b.b = 'from B'
    await store.set(sid, b)
    a.a = 'from A'
    await store.set(sid, a) // lost the race to B: merged with B's change
    assert.deepEqual(pick(await storedFields(store, sid), 'a', 'b'), { a: 'from A', b: 'from B' }, 'the first save merged')
    // A's session object still lacks B's field: its next save must merge again, not overwrite.
    a.a2 = 'A again'
    await store.set(sid, a)
    assert.deepEqual(pick(await storedFields(store, sid), 'a', 'a2', 'b'), { a: 'from A', a2: 'A again', b: 'from B' })
  })

  it('a save that lost its race to a writer whose session has since expired does not revive it', async () => {
    const store = stores.create()
    const other = stores.create({ prefix: store.prefix }) // another process, the same sessions
    const sid = randomId()
    const key = store.prefix + sid
    await store.set(sid, plainSession({ start: true }, 60_000))
    const mine = await loadSession(store, sid)
    const theirs = await loadSession(other, sid)
    assert.ok(mine && theirs)
    // The other writer stores the session with a cookie that expires in 1.5 s: a lifetime of 2 s,
    // which memcached gets as 3 s, so memcached still holds it for a while after the cookie expired.
    theirs.cookie.maxAge = 1500
    theirs.other = true
    await other.set(sid, theirs)
    const expiresAt = (theirs.cookie.expires as Date).getTime()
    await sleep(expiresAt + 50 - Date.now())
    const held = await file.server.inspect(key)
    assert.ok(held && Date.now() > expiresAt, 'memcached still holds the session whose cookie expired: this save has to merge with it')
    mine.mine = 'late change'
    await store.set(sid, mine)
    assert.ok(!(await file.server.inspect(key))?.value.toString().includes('late change'), 'nothing of the late save was written')
    assert.equal(await store.get(sid), null, 'the expired session stays expired')
    assert.equal(await other.get(sid), null)
    await eventually('memcached drops the expired session', async () => (await file.server.inspect(key)) === undefined)
  })

  it('a save that lost its race to a writer who then deleted the session does not re-create it', async () => {
    const client = new RawClient(file.server.address)
    let deleteKey: string | undefined
    // The lost race's reply (binary status 0x0002 "exists", meta "EX") reaches the store only
    // after the session is gone: the merge's re-read finds nothing.
    const proxy = await replyHookProxy(file.server.address, async (chunk) => {
      const lostRace = (chunk[0] === 0x81 && chunk.readUInt16BE(6) === 0x0002) || chunk.subarray(0, 3).toString() === 'EX '
      if (lostRace && deleteKey !== undefined) {
        await client.delete(deleteKey)
        deleteKey = undefined
      }
    })
    const store = stores.create({ servers: proxy.address })
    try {
      const sid = randomId()
      const key = store.prefix + sid
      await store.set(sid, plainSession({ start: true }))
      const mine = await loadSession(store, sid)
      assert.ok(mine)
      await client.set(key, JSON.stringify(plainSession({ theirs: true })), { expires: 60 }) // the other writer wins the race
      deleteKey = key
      mine.mine = 'late change'
      await store.set(sid, mine)
      assert.equal(deleteKey, undefined, 'the save lost its race, and the session was deleted before its reply arrived')
      assert.equal(await file.server.inspect(key), undefined, 'the deleted session was not re-created')
      assert.equal(await store.get(sid), null)
    } finally {
      await store.close()
      await proxy.close()
      client.close()
    }
  })

  it("gives up with an error after a bounded number of lost races, leaving the other writer's value", async () => {
    const client = new RawClient(file.server.address)
    const prefix = uniquePrefix()
    const sid = randomId()
    let stringified = 0
    // Every merge attempt is overtaken by another writer, whose write has landed before the store's is sent.
    const serializer = {
      parse: JSON.parse,
      stringify(sess: SessionData) {
        if (++stringified > 1) setSync(file.server.address, prefix + sid, JSON.stringify({ ...plainSession(), other: stringified }), 60)
        return JSON.stringify(sess)
      },
    }
    // Each overtaking write blocks the event loop while a child process runs it (about 100 ms, far
    // more on a loaded machine): the operation gets time for all of them, as time is not the subject.
    const store = createStore({ servers: file.server.address, prefix, serializer, logger: false, timeout: 30_000 })
    await client.set(prefix + sid, JSON.stringify(plainSession({ v: 0 })), { expires: 60 })
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    await client.set(prefix + sid, JSON.stringify(plainSession({ v: 0, other: 1 })), { expires: 60 })
    loaded.v = 1
    await assert.rejects(
      store.set(sid, loaded),
      (err: MemcacheStoreError) => err.code === 'ECONFLICT' && /gave up after 5 merges/.test(err.message),
    )
    const stored = JSON.parse((await client.get(prefix + sid)).value?.toString() ?? '{}')
    assert.equal(stored.v, undefined, 'nothing of the failed save was written')
    assert.ok(stored.other > 1, "the other writer's last value is what is stored")
    await store.close()
    client.close()
  })
})

describe('concurrent requests across processes', () => {
  const counterApp = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'counter-app.ts')

  async function startApp(prefix: string, merge: boolean): Promise<{ child: ChildProcess; url: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', counterApp], {
      env: { ...process.env, MEMCACHE_SERVERS: file.server.address, PREFIX: prefix, MERGE: String(merge) },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const [line] = (await once(child.stdout!, 'data')) as [Buffer]
    return { child, url: `http://127.0.0.1:${JSON.parse(line.toString()).port}` }
  }

  async function race(merge: boolean, perClient: number): Promise<{ a: number; b: number }> {
    const prefix = uniquePrefix()
    const [one, two] = await Promise.all([startApp(prefix, merge), startApp(prefix, merge)])
    try {
      const init = await request(one.url).post('/init').expect(200)
      const cookie = (init.headers['set-cookie'] as unknown as string[])[0].split(';')[0]
      const hammer = async (url: string, field: string) => {
        for (let i = 0; i < perClient; i++) await request(url).post(`/inc/${field}`).set('Cookie', cookie).expect(200)
      }
      await Promise.all([hammer(one.url, 'a'), hammer(two.url, 'b')])
      const { body } = await request(one.url).get('/read').set('Cookie', cookie).expect(200)
      return { a: body.a, b: body.b }
    } finally {
      for (const { child } of [one, two]) child.kill('SIGTERM')
    }
  }

  it('500 + 500 increments of different fields from two processes: none is lost', async (t) => {
    const result = await race(true, 500)
    t.diagnostic(`merge on: a=${result.a} b=${result.b}`)
    assert.deepEqual(result, { a: 500, b: 500 })
  })

  it('the same run with merge: false loses updates (so the scenario really overlaps)', async (t) => {
    const result = await race(false, 500)
    t.diagnostic(`merge off: a=${result.a} b=${result.b} (${1000 - result.a - result.b} lost)`)
    assert.ok(result.a + result.b < 1000, `expected losses, got a=${result.a} b=${result.b}`)
  })
})
