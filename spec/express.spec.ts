import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import request from 'supertest'
import type { MemcacheStore } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { sleep } from './harness/memcached.ts'
import { useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file

function cookieOf(res: request.Response): string | undefined {
  const header = res.headers['set-cookie'] as unknown as string[] | undefined
  return header?.find((c) => c.startsWith('connect.sid='))?.split(';')[0]
}

async function waitFor(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(10)
  }
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

  it('rolling: every response resets the cookie and touches the stored expiry', async () => {
    const store = stores.create()
    const agent = request.agent(testApp(store, { rolling: true, cookie: { maxAge: 20_000 } }))
    const first = await agent.get('/count').expect(200)
    const before = await stored(store, first.body.id)
    await sleep(1100)
    const read = await agent.get('/read').expect(200)
    assert.ok(cookieOf(read), 'rolling sends the cookie again on a read-only request')
    const after = await stored(store, first.body.id)
    assert.ok(before && after)
    assert.deepEqual(after.value, before.value, 'touch did not rewrite the value')
    assert.ok(after.ttl >= 20, `expiry was moved forward (ttl ${after.ttl})`)
  })

  it('resave: true rewrites an unmodified session; resave: false only touches it', async () => {
    for (const resave of [true, false]) {
      const store = stores.create()
      const agent = request.agent(testApp(store, { resave, cookie: { maxAge: 20_000 } }))
      const first = await agent.get('/count').expect(200)
      const before = await stored(store, first.body.id)
      await agent.get('/read').expect(200)
      const after = await stored(store, first.body.id)
      assert.ok(before && after)
      if (resave) assert.notEqual(after.cas, before.cas, 'resave: true wrote the session again')
      else assert.equal(after.cas, before.cas, 'resave: false did not write it')
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
    await waitFor(() => app.errors.length > 0)
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
    const agent = request.agent(testApp(store))
    const login = await agent.post('/login').send({ user: 'ada' }).expect(200)
    const slow = agent.post('/set-slowly').send({ fields: { cart: ['book'] }, delayMs: 300 })
    await sleep(100)
    await agent.post('/logout').expect(200)
    await slow
    assert.equal(await stored(store, login.body.id), undefined)
    assert.equal((await agent.get('/read').expect(200)).body.user, null)
  })
})
