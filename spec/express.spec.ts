import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import request from 'supertest'
import type { MemcacheStore } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { commandsDuring } from './harness/commands.ts'
import { useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

function cookieOf(res: request.Response): string | undefined {
  const header = res.headers['set-cookie'] as unknown as string[] | undefined
  return header?.find((c) => c.startsWith('connect.sid='))?.split(';')[0]
}

async function stored(store: MemcacheStore, sid: string) {
  return file.server.inspect(store.prefix + sid)
}

describe('express + express-session end to end', () => {
  it('creates a session on first change, reads and modifies it on later requests', async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store))
    const first = await agent.get('/count').expect(200)
    assert.equal(first.body.views, 1)
    assert.ok(cookieOf(first), 'a session cookie is set')
    assert.ok(await stored(store, first.body.id), 'the session is in memcached')
    const second = await agent.get('/count').expect(200)
    assert.equal(second.body.views, 2)
    assert.equal(second.body.id, first.body.id)
    const read = await agent.get('/read').expect(200)
    assert.equal(read.body.views, 2)
  })

  it('regenerates on login: new ID stored, old one deleted', async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store))
    const before = await agent.get('/count').expect(200)
    const login = await agent.post('/login').send({ user: 'ada' }).expect(200)
    assert.notEqual(login.body.id, before.body.id)
    assert.equal(await stored(store, before.body.id), undefined)
    assert.ok(await stored(store, login.body.id))
    const read = await agent.get('/read').expect(200)
    assert.equal(read.body.user, 'ada')
    assert.equal(read.body.views, null, 'the old session data did not carry over')
  })

  it('destroys on logout: the session is gone from memcached and the next request starts afresh', async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store))
    const login = await agent.post('/login').send({ user: 'ada' }).expect(200)
    await agent.post('/logout').expect(200)
    assert.equal(await stored(store, login.body.id), undefined)
    const read = await agent.get('/read').expect(200)
    assert.equal(read.body.user, null)
  })

  it("rolling: a read-only request late in the session's life moves its stored expiry back to the full lifetime", async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store, { rolling: true, cookie: { maxAge: 20_000 } }))
    const first = await agent.get('/count').expect(200)
    const key = store.prefix + first.body.id
    const before = await file.server.inspect(key)
    assert.ok(before && before.ttl >= 20, `stored for the cookie's 20 s plus one (ttl ${before?.ttl})`)
    // Late in its life as memcached counts it: 3 s left, as 18 s after the last request. (Shortened
    // on the server rather than waited for: the stored cookie stays fresh, so no rewrite is due.)
    assert.match(await file.server.command(`touch ${key} 3`), /^TOUCHED/)
    assert.ok(((await file.server.inspect(key))?.ttl ?? 99) <= 3)
    const read = await agent.get('/read').expect(200)
    assert.ok(cookieOf(read), 'rolling sends the cookie again on a read-only request')
    const after = await file.server.inspect(key)
    assert.ok(after, 'the session is still stored')
    assert.deepEqual(after.value, before.value, 'the read-only request did not rewrite the value')
    assert.ok(after.ttl >= 19, `the read-only request moved the expiry to the full 20 s again (ttl ${after.ttl}, was 3)`)

    // The same in a process that has written nothing yet (its reads cannot extend by themselves: the
    // touch that follows must).
    const fresh = stores.create({ prefix: store.prefix })
    const cookie = cookieOf(first)
    assert.ok(cookie)
    assert.match(await file.server.command(`touch ${key} 3`), /^TOUCHED/)
    const again = await request(testApp(fresh, { rolling: true, cookie: { maxAge: 20_000 } }))
      .get('/read')
      .set('Cookie', cookie)
      .expect(200)
    assert.equal(again.body.id, first.body.id, 'the other process read the same session')
    const last = await file.server.inspect(key)
    assert.ok(
      last && last.ttl >= 19,
      `a fresh process's read-only request moved the expiry to the full 20 s again (ttl ${last?.ttl}, was 3)`,
    )
  })

  it('resave: true or false: an unmodified session is not written again, and a read-only request costs one memcached command', async () => {
    for (const resave of [true, false]) {
      const store = stores.create()
      const agent = request.agent(testApp(store, { resave, cookie: { maxAge: 20_000 } }))
      const first = await agent.get('/count').expect(200)
      await agent.get('/read').expect(200)
      const before = await stored(store, first.body.id)
      const sent = await commandsDuring(file.server, () => agent.get('/read').expect(200))
      const after = await stored(store, first.body.id)
      assert.ok(before && after)
      assert.equal(after.cas, before.cas, `resave: ${resave}: the unmodified session was written again`)
      assert.deepEqual([sent.total, sent.set], [1, 0], `resave: ${resave}: ${JSON.stringify(sent)}`)
      assert.ok(after.ttl >= 19, `resave: ${resave}: the expiry moved to the full 20 s (ttl ${after.ttl})`)
      await agent.get('/count').expect(200)
      assert.notEqual((await stored(store, first.body.id))?.cas, after.cas, `resave: ${resave}: a change is written`)
    }
  })

  it('saveUninitialized: true stores an untouched new session; false does not', async () => {
    for (const saveUninitialized of [true, false]) {
      const store = stores.create()
      const res = await request(testApp(store, { saveUninitialized })).get('/read').expect(200)
      const item = await stored(store, res.body.id)
      assert.equal(Boolean(item), saveUninitialized)
      assert.equal(Boolean(cookieOf(res)), saveUninitialized)
    }
  })

  it('a session saved twice in one request (save(), then the automatic save) is not a collision', async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store))
    const res = await agent.post('/save-twice').expect(200)
    const read = await agent.get('/read').expect(200)
    assert.equal(read.body.id, res.body.id)
    assert.equal(read.body.views, 2)
  })

  it("a collision forced through a genid that repeats IDs: the second client never sees the first one's data", async () => {
    const store = stores.create()
    const app = testApp(store, { genid: () => 'the-same-id-every-time' })
    const alice = request.agent(app)
    const mallory = request.agent(app)
    await alice.post('/set').send({ secret: 'alice-secret' }).expect(200)
    assert.equal((await alice.get('/read').expect(200)).body.secret, 'alice-secret')

    await mallory.post('/set').send({ secret: 'mallory' })
    await eventually('the colliding save failed', () => app.errors.length > 0)
    assert.equal(app.errors[0].code, 'ECOLLISION', 'the colliding save failed with a collision error')
    const malloryView = await mallory.get('/read')
    assert.notEqual(malloryView.body.secret, 'alice-secret')
    const aliceView = await alice.get('/read')
    assert.notEqual(aliceView.body.secret, 'mallory')
    // express-session then starts an empty session under the same ID (the cookie matches genid's
    // repeat, so it saves it); whatever is stored holds neither client's data.
    const left = (await stored(store, 'the-same-id-every-time'))?.value.toString() ?? ''
    assert.ok(!left.includes('alice-secret') && !left.includes('mallory'), left)
  })

  it('a logout during a slow request stays final: the slow save does not re-create the session', async () => {
    const store = stores.create()
    const app = testApp(store)
    const agent = request.agent(app)
    const login = await agent.post('/login').send({ user: 'ada' }).expect(200)
    // `.then` sends the request now (supertest sends nothing until then/end); it is held in its
    // route with the logged-in session loaded until released.
    const slow = agent
      .post('/set-when-released')
      .send({ cart: ['book'] })
      .then((res) => res)
    await eventually('the slow request has loaded the session', () => app.held.length === 1)
    assert.equal(app.held[0].sessionID, login.body.id, 'the slow request runs on the logged-in session')
    await agent.post('/logout').expect(200)
    assert.equal(await stored(store, login.body.id), undefined, 'logged out')
    app.held[0].release()
    const res = await slow
    assert.equal(res.status, 200)
    assert.equal(res.body.id, login.body.id)
    assert.deepEqual(app.errors, [])
    assert.equal(await stored(store, login.body.id), undefined, 'the slow save re-created the session')
    const read = await agent.get('/read').expect(200)
    assert.equal(read.body.user, null)
    assert.notEqual(read.body.id, login.body.id)
  })
})
