// One memcached request for a request that only reads its session (get-and-touch), and rolling
// sessions that stay alive while they are read, against real memcached and real Express apps.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import request from 'supertest'
import type { MemcacheStore } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { type MemcachedServer, sleep } from './harness/memcached.ts'
import { loadSession, newSession, uniquePrefix, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file

/** memcached's command counters. */
async function stats(server: MemcachedServer): Promise<{ get: number; touch: number; set: number }> {
  const text = await server.command('stats')
  const read = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)`).exec(text)?.[1])
  return { get: read('cmd_get'), touch: read('cmd_touch'), set: read('cmd_set') }
}

/** The commands memcached received while `run` ran. */
async function commandsDuring(run: () => Promise<unknown>): Promise<{ get: number; touch: number; set: number }> {
  const before = await stats(file.server)
  await run()
  const after = await stats(file.server)
  return { get: after.get - before.get, touch: after.touch - before.touch, set: after.set - before.set }
}

/** An app and a browser-like agent holding one session, read once already (which teaches the store its lifetime). */
async function readingAgent(store: MemcacheStore, cookie: { maxAge?: number } = { maxAge: 60_000 }, extra = {}) {
  const app = testApp(store, { cookie, ...extra })
  const agent = request.agent(app)
  await agent.get('/count').expect(200)
  await agent.get('/read').expect(200)
  return { app, agent }
}

describe('a request that only reads its session', () => {
  it('costs one memcached request (get-and-touch), and express-session’s touch sends nothing', async () => {
    const { agent, app } = await readingAgent(stores.create())
    for (let i = 0; i < 5; i++) {
      const sent = await commandsDuring(() => agent.get('/read').expect(200))
      assert.equal(sent.get + sent.touch, 1, `read ${i}: ${JSON.stringify(sent)}`)
      assert.equal(sent.set, 0)
    }
    assert.deepEqual(app.errors, [])
  })

  it('extends the expiry to the full lifetime, as the touch would have', async () => {
    const store = stores.create()
    const { agent } = await readingAgent(store, { maxAge: 20_000 })
    const sid = (await agent.get('/read').expect(200)).body.id
    await sleep(2100)
    const before = await file.server.inspect(store.prefix + sid)
    await agent.get('/read').expect(200)
    const after = await file.server.inspect(store.prefix + sid)
    assert.ok(before && after)
    assert.ok(before.ttl <= 19, `aged: ${before.ttl}`)
    assert.ok(after.ttl >= 20 && after.ttl <= 21, `renewed: ${after.ttl}`)
  })

  it('with disableTouch: one plain get, and nothing moves the expiry', async () => {
    const store = stores.create({ disableTouch: true })
    const { agent } = await readingAgent(store, { maxAge: 20_000 })
    const sid = (await agent.get('/read').expect(200)).body.id
    await sleep(1100)
    const sent = await commandsDuring(() => agent.get('/read').expect(200))
    assert.deepEqual(sent, { get: 1, touch: 0, set: 0 })
    const item = await file.server.inspect(store.prefix + sid)
    assert.ok(item && item.ttl <= 20, `not extended: ${item?.ttl}`)
  })

  it('with touchAfter and with a ttl function: still one request', async () => {
    for (const options of [{ touchAfter: 30 }, { ttl: () => 600 }]) {
      const { agent } = await readingAgent(stores.create(options), {})
      const sent = await commandsDuring(() => agent.get('/read').expect(200))
      assert.equal(sent.get + sent.touch, 1, `${JSON.stringify(Object.keys(options))}: ${JSON.stringify(sent)}`)
    }
  })

  it('sessions of different lifetimes each keep their own: a read never gives one another’s', async () => {
    const store = stores.create()
    const app = testApp(store, { cookie: { maxAge: 30_000 } })
    const short = request.agent(app)
    const long = request.agent(app)
    const shortId = (await short.get('/count').expect(200)).body.id
    // "Remember me": an hour for this one.
    const longId = (await long.post('/remember').send({ maxAge: 3_600_000, user: 'ada' }).expect(200)).body.id
    for (let i = 0; i < 3; i++) {
      await short.get('/read').expect(200)
      await long.get('/read').expect(200)
      await sleep(20)
      const [s, l] = [await file.server.inspect(store.prefix + shortId), await file.server.inspect(store.prefix + longId)]
      assert.ok(s && s.ttl >= 29 && s.ttl <= 31, `short session ttl ${s?.ttl}`)
      assert.ok(l && l.ttl >= 3599 && l.ttl <= 3601, `long session ttl ${l?.ttl}`)
    }
  })

  it('a session whose cookie has expired is neither served nor extended', async () => {
    const store = stores.create()
    // maxAge 2.1 s: memcached holds the session for 4 s (3 whole seconds + 1), at least 3 s after the
    // read below, so the check at 2.2 s has most of a second to spare on a loaded machine.
    const app = testApp(store, { cookie: { maxAge: 2100 } })
    const first = await request(app).get('/count').expect(200)
    // The cookie as a client that keeps it past its expiry replays it (a browser would drop it).
    const cookie = (first.headers['set-cookie'] as unknown as string[])[0].split(';')[0]
    await request(app).get('/read').set('Cookie', cookie).expect(200)
    await sleep(2200)
    const held = await file.server.inspect(store.prefix + first.body.id)
    assert.ok(held, 'memcached still holds it, within its grace second')
    const now = (await request(app).get('/read').set('Cookie', cookie).expect(200)).body
    assert.equal(now.views, null, 'not served')
    assert.notEqual(now.id, first.body.id)
    await sleep(50)
    assert.equal(await file.server.inspect(store.prefix + first.body.id), undefined, 'not extended: gone')
  })

  it('a session that is saved after its get-and-touch still gets its CAS write, and a concurrent change is merged', async () => {
    const store = stores.create()
    const sid = `${uniquePrefix()}merge`
    await store.set(sid, newSession(store, sid, { a: 0, b: 0 }))
    const first = await loadSession(store, sid)
    const second = await loadSession(store, sid)
    assert.ok(first && second)
    second.b = 1
    await store.set(sid, second)
    first.a = 1
    await store.set(sid, first)
    assert.deepEqual({ ...((await store.get(sid)) as object), cookie: undefined }, { a: 1, b: 1, cookie: undefined })
    assert.equal(store.diagnostics().merges, 1, 'the CAS from get-and-touch detected the other write')
  })
})

describe('rolling sessions, read from two processes', () => {
  const counterApp = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'counter-app.ts')

  async function startApp(prefix: string): Promise<{ child: ChildProcess; url: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', counterApp], {
      env: { ...process.env, MEMCACHE_SERVERS: file.server.address, PREFIX: prefix, ROLLING: '1', MAX_AGE: '2000' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const [line] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer]
    return { child, url: `http://127.0.0.1:${JSON.parse(line.toString()).port}` }
  }

  it('maxAge 2000, read every 700 ms alternately by two processes for 7 s: never lost; idle past maxAge: gone', async () => {
    const prefix = uniquePrefix()
    const apps = await Promise.all([startApp(prefix), startApp(prefix)])
    try {
      const init = await request(apps[0].url).post('/init').expect(200)
      const cookie = (init.headers['set-cookie'] as unknown as string[])[0].split(';')[0]
      const before = await stats(file.server)
      const reads = 10
      for (let i = 0; i < reads; i++) {
        await sleep(700)
        const { body } = await request(apps[i % 2].url)
          .get('/read')
          .set('Cookie', cookie)
          .expect(200)
        assert.deepEqual([body.a, body.b], [0, 0], `read ${i + 1} at ${(i + 1) * 0.7} s still has the session`)
      }
      const after = await stats(file.server)
      const writes = after.set - before.set
      console.log(
        `rolling, ${reads} reads over ${reads * 0.7} s: ${writes} stored-cookie rewrites, ${after.touch - before.touch} get-and-touch/touch, ${after.get - before.get} get`,
      )
      // Binary: about one rewrite per half-lifetime; meta: memcached's TTL decides, so none is needed.
      assert.ok(writes <= reads, `${writes} writes`)
      await sleep(3500)
      const { body } = await request(apps[0].url).get('/read').set('Cookie', cookie).expect(200)
      assert.equal(body.a, undefined, 'idle past maxAge: gone, as with MemoryStore')
    } finally {
      for (const { child } of apps) child.kill('SIGTERM')
    }
  })
})
