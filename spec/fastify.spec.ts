// Fastify: fastify + @fastify/cookie + @fastify/session with `new MemcacheStore()` given directly,
// against real memcached. The guarantees express-session gets: a logout that stays final, merged
// saves, collision-checked new sessions (through Fastify's error path, which saves again), expiry
// from the cookie, and one memcached request for a request that only reads its session.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { MemcacheStore } from '../lib/index.ts'
import { commandsDuring } from './harness/commands.ts'
import { FastifyAgent, fastifyApp } from './harness/fastify-app.ts'
import { useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

function stored(store: MemcacheStore, sid: string) {
  return file.server.inspect(store.prefix + sid)
}

describe('fastify + @fastify/session end to end', () => {
  it('counts, logs in (regenerate), reads, logs out: the session is stored, moved, then gone', async () => {
    const store = stores.create()
    const { app, errors } = await fastifyApp(store)
    const agent = new FastifyAgent(app)
    const first = (await agent.get('/count')).json()
    assert.equal(first.views, 1)
    assert.ok(await stored(store, first.id), 'the session is in memcached')
    assert.equal((await agent.get('/count')).json().views, 2)
    const login = (await agent.post('/login', { user: 'ada' })).json()
    assert.notEqual(login.id, first.id)
    assert.equal(await stored(store, first.id), undefined, 'regenerate deleted the old session')
    const read = (await agent.get('/read')).json()
    assert.deepEqual([read.user, read.views, read.id], ['ada', null, login.id])
    assert.equal((await agent.post('/logout')).statusCode, 200)
    assert.equal(await stored(store, login.id), undefined, 'logged out')
    const after = (await agent.get('/read')).json()
    assert.equal(after.user, null)
    assert.notEqual(after.id, login.id)
    assert.deepEqual(errors, [])
    await app.close()
  })

  it('a logout during a slow request stays final: the slow save does not re-create the session', async () => {
    const store = stores.create()
    const { app, errors, held } = await fastifyApp(store)
    const agent = new FastifyAgent(app)
    const login = (await agent.post('/login', { user: 'ada' })).json()
    const slow = agent.post('/set-when-released', { cart: ['book'] })
    await eventually('the slow request has loaded the session', () => held.length === 1)
    assert.equal(held[0].sessionID, login.id, 'the slow request runs on the logged-in session')
    await agent.post('/logout')
    assert.equal(await stored(store, login.id), undefined, 'logged out')
    held[0].release()
    const res = await slow
    assert.equal(res.statusCode, 200)
    assert.deepEqual(errors, [])
    assert.equal(await stored(store, login.id), undefined, 'the slow save re-created the session')
    await app.close()
  })

  it('two overlapping requests saving different fields: both are kept', async () => {
    const store = stores.create()
    const { app, errors, held } = await fastifyApp(store)
    const agent = new FastifyAgent(app)
    const { id } = (await agent.post('/set', { start: true })).json()
    const first = agent.post('/set-when-released', { a: 1 })
    const second = agent.post('/set-when-released', { b: 2 })
    await eventually('both requests have loaded the session', () => held.length === 2)
    held[0].release()
    await first
    held[1].release()
    await second
    const read = JSON.parse((await stored(store, id))?.value.toString() ?? '{}')
    assert.deepEqual([read.start, read.a, read.b], [true, 1, 2], JSON.stringify(read))
    assert.equal(store.diagnostics().merges, 1, 'the later save merged')
    assert.deepEqual(errors, [])
    await app.close()
  })

  it('a first save under a taken ID is refused, never shared, and stays refused when Fastify saves again on its error path', async () => {
    const store = stores.create()
    const { app, errors } = await fastifyApp(store, { idGenerator: () => 'the-same-id-every-time' })
    const alice = new FastifyAgent(app)
    const mallory = new FastifyAgent(app)
    await alice.post('/set', { secret: 'alice-secret' })
    assert.equal((await alice.get('/read')).json().secret, 'alice-secret')

    const refused = await mallory.post('/set', { secret: 'mallory' })
    assert.equal(refused.statusCode, 500)
    assert.equal(errors[0]?.code, 'ECOLLISION', 'the save failed with a collision error')
    // Fastify sent its error reply through onSend again, which saved the session a second time.
    assert.equal(store.diagnostics().collisions, 2, 'the second save (Fastify’s error path) was refused too')
    const left = (await stored(store, 'the-same-id-every-time'))?.value.toString() ?? ''
    assert.ok(!left.includes('alice-secret') && !left.includes('mallory'), `what is stored holds neither client's data: ${left}`)
    assert.notEqual((await alice.get('/read')).json().secret, 'mallory')
    assert.notEqual((await mallory.get('/read')).json().secret, 'alice-secret')
    await app.close()
  })

  it('a read-only request costs one memcached command with @fastify/session’s defaults (rolling: every request saves)', async () => {
    for (const cookie of [{ secure: false }, { secure: false, maxAge: 60_000 }]) {
      const store = stores.create()
      const { app, errors } = await fastifyApp(store, { cookie })
      const agent = new FastifyAgent(app)
      await agent.get('/count')
      await agent.get('/read')
      const reads = 5
      let total = 0
      for (let i = 0; i < reads; i++) {
        const sent = await commandsDuring(file.server, async () => assert.equal((await agent.get('/read')).json().views, 1))
        assert.deepEqual([sent.total, sent.set], [1, 0], `maxAge ${cookie.maxAge ?? 'none'}, read ${i}: ${JSON.stringify(sent)}`)
        total += sent.total
      }
      console.log(
        `@fastify/session, maxAge ${cookie.maxAge ?? 'none'}: ${(total / reads).toFixed(2)} memcached commands per read-only request`,
      )
      const changed = await commandsDuring(file.server, () => agent.get('/count'))
      assert.equal(changed.set, 1, `a request that changes the session writes it: ${JSON.stringify(changed)}`)
      assert.deepEqual(errors, [])
      await app.close()
    }
  })

  it("expiry follows the cookie's maxAge; without one, the store's ttl", async () => {
    const store = stores.create({ ttl: 600 })
    const withMaxAge = await fastifyApp(store, { cookie: { secure: false, maxAge: 20_000 } })
    const { id } = (await new FastifyAgent(withMaxAge.app).get('/count')).json()
    const item = await stored(store, id)
    assert.ok(item && item.ttl >= 20 && item.ttl <= 21, `maxAge 20 s: ttl ${item?.ttl}`)
    const without = await fastifyApp(store)
    const other = (await new FastifyAgent(without.app).get('/count')).json()
    const plain = await stored(store, other.id)
    assert.ok(plain && plain.ttl >= 600 && plain.ttl <= 601, `no maxAge: ttl ${plain?.ttl}`)
    await withMaxAge.app.close()
    await without.app.close()
  })

  it('nothing of the store’s is stored or reaches the serializer, and what request.session shows of it serializes to nothing', async () => {
    // A serializer that sees every field (one that ignored toJSON would store what it is given).
    const seen = new Set<string>()
    const store = stores.create({
      serializer: {
        stringify: (sess) => {
          for (const name of Object.keys(sess)) seen.add(name)
          return JSON.stringify(sess)
        },
        parse: JSON.parse,
      },
    })
    const { app } = await fastifyApp(store)
    const agent = new FastifyAgent(app)
    const { id } = (await agent.post('/set', { user: 'ada' })).json()
    const shown = JSON.parse((await agent.get('/json')).body)
    assert.deepEqual(Object.keys(shown).sort(), ['cookie', 'user'])
    await agent.post('/set', { cart: [1] })
    const text = (await stored(store, id))?.value.toString() ?? ''
    assert.deepEqual(Object.keys(JSON.parse(text)).sort(), ['cart', 'cookie', 'user'], text)
    assert.deepEqual([...seen].sort(), ['cart', 'cookie', 'user'], 'the serializer was given only the session’s fields')
    await app.close()
  })
})
