import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { SessionData } from 'express-session'
import request from 'supertest'
import type { MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { mergeSessions } from '../lib/merge.ts'
import { testApp } from './harness/app.ts'
import { createStore } from './harness/protocol.ts'
import { RawClient, setSync } from './harness/raw.ts'
import { loadSession, plainSession, randomId, uniquePrefix, useMemcached } from './harness/stores.ts'

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
 * One session, two requests that load it at the same time: the slow one saves 250 ms later than
 * the fast one. Resolves to what memcached holds afterwards.
 */
async function overlappingSaves(
  store: MemcacheStore,
  initial: Record<string, unknown>,
  slow: Record<string, unknown>,
  fast: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const agent = request.agent(testApp(store))
  const { body } = await agent.post('/set').send(initial).expect(200)
  await Promise.all([
    agent.post('/set-slowly').send({ fields: slow, delayMs: 250 }).expect(200),
    agent.post('/set-slowly').send({ fields: fast, delayMs: 20 }).expect(200),
  ])
  return JSON.parse((await file.server.inspect(store.prefix + body.id))?.value.toString() ?? '{}')
}

describe('concurrent requests in one process', () => {
  it('two overlapping requests changing different fields: both changes survive', async () => {
    const stored = await overlappingSaves(stores.create(), { start: true }, { a: 'from slow' }, { b: 'from fast' })
    assert.equal(stored.a, 'from slow')
    assert.equal(stored.b, 'from fast')
  })

  it('the same field changed by both: the later save wins', async () => {
    const stored = await overlappingSaves(stores.create(), { x: 'initial' }, { x: 'later' }, { x: 'earlier' })
    assert.equal(stored.x, 'later')
  })

  it("with merge: false, the later save erases the other's change (MemoryStore's semantics)", async () => {
    const stored = await overlappingSaves(stores.create({ merge: false }), { start: true }, { a: 'from slow' }, { b: 'from fast' })
    assert.equal(stored.a, 'from slow')
    assert.equal(stored.b, undefined, "the fast request's change was lost")
  })

  it('adds nothing to the session data the app sees or that is stored', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }))
    const loaded = await loadSession(store, sid)
    assert.deepEqual(Object.keys(loaded ?? {}).sort(), ['cookie', 'v'])
    await store.set(sid, loaded as unknown as SessionData)
    const stored = JSON.parse((await file.server.inspect(store.prefix + sid))?.value.toString() ?? '{}')
    assert.deepEqual(Object.keys(stored).sort(), ['cookie', 'v'])
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
    const store = createStore({ servers: file.server.address, prefix, serializer, logger: false })
    await client.set(prefix + sid, JSON.stringify(plainSession({ v: 0 })), { expires: 60 })
    const loaded = (await loadSession(store, sid)) as unknown as SessionData & { v: number }
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
