// Koa: koa + koa-session with `koaStore(store)`, against real memcached, through a supertest agent.
// The guarantees express-session gets: a logout that stays final, merged saves, collision-checked
// new sessions, koa-session's maxAge as memcached's expiry, unmodified saves that only touch, one
// memcached request for a request that only reads; and what happens when the store is given to
// koa-session directly (a TypeError at once, nothing written).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import request from 'supertest'
import { koaStore, type MemcacheStore } from '../lib/index.ts'
import { commandsDuring } from './harness/commands.ts'
import { koaApp } from './harness/koa-app.ts'
import { useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

function stored(store: MemcacheStore, sid: string) {
  return file.server.inspect(store.prefix + sid)
}

async function storedFields(store: MemcacheStore, sid: string): Promise<Record<string, unknown>> {
  return JSON.parse((await stored(store, sid))?.value.toString() ?? '{}')
}

describe('koa + koa-session with koaStore end to end', () => {
  it('counts, logs in (regenerate), reads, logs out: the session is stored, moved, then gone', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store))
    const agent = request.agent(app.callback())
    const first = (await agent.get('/count').expect(200)).body
    assert.equal(first.views, 1)
    assert.ok(await stored(store, first.id), 'the session is in memcached')
    assert.equal((await agent.get('/count').expect(200)).body.views, 2)
    await agent.post('/login').send({ user: 'ada' }).expect(200)
    assert.equal(await stored(store, first.id), undefined, 'regenerate deleted the old session')
    const read = (await agent.get('/read').expect(200)).body
    assert.equal(read.user, 'ada')
    assert.notEqual(read.id, first.id, 'a new ID')
    assert.ok(await stored(store, read.id))
    await agent.post('/logout').expect(200)
    assert.equal(await stored(store, read.id), undefined, 'logged out')
    assert.equal((await agent.get('/read').expect(200)).body.user, null)
    assert.deepEqual(errors, [])
  })

  it('a logout during a slow request stays final: the slow save does not re-create the session', async () => {
    const store = stores.create()
    const { app, errors, held } = koaApp(koaStore(store))
    const agent = request.agent(app.callback())
    const { id } = (await agent.post('/set').send({ user: 'ada' }).expect(200)).body
    const slow = agent
      .post('/set-when-released')
      .send({ cart: ['book'] })
      .then((res) => res)
    await eventually('the slow request has loaded the session', () => held.length === 1)
    assert.equal(held[0].sessionID, id)
    await agent.post('/logout').expect(200)
    assert.equal(await stored(store, id), undefined, 'logged out')
    held[0].release()
    assert.equal((await slow).status, 200)
    assert.equal(await stored(store, id), undefined, 'the slow save re-created the session')
    assert.deepEqual(errors, [])
  })

  it('two overlapping requests saving different fields: both are kept', async () => {
    const store = stores.create()
    const { app, errors, held } = koaApp(koaStore(store))
    const agent = request.agent(app.callback())
    const { id } = (await agent.post('/set').send({ start: true }).expect(200)).body
    const first = agent
      .post('/set-when-released')
      .send({ a: 1 })
      .then((res) => res)
    const second = agent
      .post('/set-when-released')
      .send({ b: 2 })
      .then((res) => res)
    await eventually('both requests have loaded the session', () => held.length === 2)
    held[0].release()
    await first
    held[1].release()
    await second
    const fields = await storedFields(store, id)
    assert.deepEqual([fields.start, fields.a, fields.b], [true, 1, 2], JSON.stringify(fields))
    assert.equal(store.diagnostics().merges, 1, 'the later save merged')
    assert.deepEqual(errors, [])
  })

  it('a first save under a taken ID is refused, never shared, and stays refused when saved again', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store), { genid: () => 'the-same-id-every-time' })
    const alice = request.agent(app.callback())
    const mallory = request.agent(app.callback())
    await alice.post('/set').send({ secret: 'alice-secret' }).expect(200)
    assert.equal((await alice.get('/read').expect(200)).body.secret, 'alice-secret')
    // The route saves, fails, and koa-session commits (saves) again after it.
    await mallory.post('/set-and-save').send({ secret: 'mallory' }).expect(500)
    assert.deepEqual(
      errors.map((err) => err.code),
      ['ECOLLISION', 'ECOLLISION'],
    )
    assert.equal(store.diagnostics().collisions, 2)
    const left = (await stored(store, 'the-same-id-every-time'))?.value.toString() ?? ''
    assert.ok(!left.includes('alice-secret') && !left.includes('mallory'), `what is stored holds neither client's data: ${left}`)
    assert.notEqual((await alice.get('/read')).body.secret, 'mallory')
    assert.notEqual((await mallory.get('/read')).body.secret, 'alice-secret')
  })

  it('with genid: store.genid, new sessions take reserved IDs', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store), { genid: store.genid })
    await eventually('the pool has IDs', () => store.diagnostics().genid.pooled > 0)
    const agent = request.agent(app.callback())
    const { id } = (await agent.get('/count').expect(200)).body
    assert.equal((await agent.get('/count').expect(200)).body.views, 2)
    assert.equal((await agent.get('/read').expect(200)).body.id, id)
    assert.equal(store.diagnostics().genid.fallbacks, 0, 'the ID came from the pool')
    assert.deepEqual(errors, [])
  })

  it("maxAge becomes memcached's expiry (+1 s); 'session' the store's ttl; koa-session's default a day", async () => {
    const cases: Array<[number | 'session' | undefined, number]> = [
      [20_000, 20],
      ['session', 600],
      [undefined, 86_400],
    ]
    for (const [maxAge, seconds] of cases) {
      const store = stores.create({ ttl: 600 })
      const { app } = koaApp(koaStore(store), maxAge === undefined ? {} : { maxAge })
      const agent = request.agent(app.callback())
      const { id } = (await agent.get('/count').expect(200)).body
      const item = await stored(store, id)
      assert.ok(item && item.ttl >= seconds && item.ttl <= seconds + 1, `maxAge ${maxAge}: ttl ${item?.ttl}, expected ${seconds} + 1`)
      assert.equal((await agent.get('/count').expect(200)).body.views, 2, `maxAge ${maxAge}: read back`)
    }
  })

  it('without rolling a read does not move the expiry (koa-session’s _expire stays the end); with rolling it does', async () => {
    for (const rolling of [false, true]) {
      const store = stores.create()
      const { app } = koaApp(koaStore(store), { rolling, maxAge: 20_000 })
      const agent = request.agent(app.callback())
      const { id } = (await agent.get('/count').expect(200)).body
      assert.match(await file.server.command(`touch ${store.prefix}${id} 5`), /^TOUCHED/)
      await agent.get('/read').expect(200)
      const ttl = (await stored(store, id))?.ttl ?? -1
      if (rolling) assert.ok(ttl >= 20, `rolling: moved to maxAge (ttl ${ttl})`)
      else assert.ok(ttl <= 5, `not rolling: not moved (ttl ${ttl})`)
    }
  })

  it('a new session saved twice in one request (save(), then the commit) is not a collision', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store))
    const agent = request.agent(app.callback())
    const { id } = (await agent.post('/set-and-save').send({ step: 1 }).expect(200)).body
    assert.deepEqual(errors, [])
    assert.equal((await storedFields(store, id)).step, 1)
    assert.equal((await agent.get('/read').expect(200)).body.id, id)
  })

  it('koa-session sees its own fields only, and a field named `cookie` is refused', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store), { maxAge: 60_000 })
    const agent = request.agent(app.callback())
    const { id } = (await agent.post('/set').send({ user: 'ada' }).expect(200)).body
    const seen = (await agent.get('/json').expect(200)).body
    assert.deepEqual(seen.fields, ['user'])
    assert.ok(!seen.all.includes('cookie'), JSON.stringify(seen.all))
    const fields = await storedFields(store, id)
    assert.deepEqual(Object.keys(fields).sort(), ['cookie', 'user'], 'koa-session’s _expire and _maxAge are the cookie')
    await agent.post('/set').send({ cookie: 'mine' }).expect(500)
    assert.equal(errors[0]?.code, 'ESERIALIZE')
    assert.match(errors[0].message, /field `cookie`/)
    assert.equal((await storedFields(store, id)).user, 'ada', 'the stored session is unchanged')
  })

  it('a read-only request costs one memcached command, with koa-session’s defaults and with rolling', async () => {
    for (const options of [{}, { rolling: true }, { rolling: true, maxAge: 'session' as const }]) {
      const store = stores.create()
      const { app, errors } = koaApp(koaStore(store), options)
      const agent = request.agent(app.callback())
      await agent.get('/count').expect(200)
      await agent.get('/read').expect(200)
      for (let i = 0; i < 3; i++) {
        const sent = await commandsDuring(file.server, () => agent.get('/read').expect(200))
        assert.deepEqual([sent.total, sent.set], [1, 0], `${JSON.stringify(options)}, read ${i}: ${JSON.stringify(sent)}`)
      }
      const changed = await commandsDuring(file.server, () => agent.get('/count').expect(200))
      assert.equal(changed.set, 1, `a change is written: ${JSON.stringify(changed)}`)
      assert.deepEqual(errors, [])
    }
  })

  it('rolling, read by a process whose read did not move the expiry: changed: false only touches', async () => {
    const writer = stores.create()
    const { app } = koaApp(koaStore(writer), { rolling: true, maxAge: 20_000 })
    const first = await request(app.callback()).get('/count').expect(200)
    const { id } = first.body
    const cookie = first.headers['set-cookie']
    assert.ok(cookie)
    const before = await stored(writer, id)
    assert.match(await file.server.command(`touch ${writer.prefix}${id} 5`), /^TOUCHED/)
    // A fresh process: its first read is a plain GET (it has written nothing yet).
    const fresh = koaApp(koaStore(stores.create({ prefix: writer.prefix })), { rolling: true, maxAge: 20_000 })
    const sent = await commandsDuring(file.server, () =>
      request(fresh.app.callback())
        .get('/read')
        .set('Cookie', (cookie as unknown as string[]).map((c) => c.split(';')[0]).join('; '))
        .expect(200),
    )
    assert.deepEqual(sent, { get: 1, touch: 1, set: 0, delete: 0, total: 2 })
    const after = await stored(writer, id)
    assert.ok(before && after)
    assert.deepEqual([after.cas, after.value], [before.cas, before.value], 'not written')
    assert.ok(after.ttl >= 20, `the expiry moved back to maxAge (ttl ${after.ttl})`)
    assert.deepEqual(fresh.errors, [])
  })
})

describe('koa-session’s _expire', () => {
  it('a session whose stored expiry passed while a touch kept it in memcached is not expired for koa-session, and is rewritten', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(koaStore(store), { rolling: true, maxAge: 20_000 })
    const agent = request.agent(app.callback())
    const { id } = (await agent.get('/count').expect(200)).body
    // As an unmodified save leaves it: the stored cookie expired 5 s ago (past the store's grace),
    // memcached's expiry moved by a touch since.
    const key = store.prefix + id
    const fields = await storedFields(store, id)
    ;(fields.cookie as { expires: string }).expires = new Date(Date.now() - 5000).toISOString()
    const value = JSON.stringify(fields)
    assert.match(await file.server.command(`set ${key} 0 60 ${Buffer.byteLength(value)}\r\n${value}`), /^STORED/)
    const read = (await agent.get('/read').expect(200)).body
    assert.deepEqual([read.id, read.views], [id, 1], 'the session was served, not replaced by a new one')
    const renewed = Date.parse(((await storedFields(store, id)).cookie as { expires: string }).expires)
    assert.ok(renewed > Date.now() + 15_000, 'the stored cookie was rewritten with a fresh expiry')
    assert.deepEqual(errors, [])
  })
})

describe('koa-session given the store directly (without koaStore)', () => {
  it('fails the request at once with a TypeError: nothing written, no hang, no unhandled rejection', async () => {
    const store = stores.create()
    const { app, errors } = koaApp(store)
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const started = performance.now()
      const sent = await commandsDuring(file.server, () => request(app.callback()).get('/count').expect(500))
      assert.ok(performance.now() - started < 1000, 'answered at once')
      assert.equal(sent.total, 0, `nothing was sent: ${JSON.stringify(sent)}`)
      assert.ok(errors[0] instanceof TypeError, String(errors[0]))
      assert.match(errors[0].message, /koaStore/)
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.deepEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
