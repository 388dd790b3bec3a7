// `hashIds`: sessions stored under a hash of their ID (HMAC-SHA-256 keyed from `secret`, else
// SHA-256), so that reading memcached's keys yields nothing that works as a cookie. Through an
// Express app: after logins no key holds an ID handed out in a cookie, and everything else works:
// counting, logging in and out, `genid` reservations, `length()` and `clear()`; `ids()` and `all()`
// are refused with ENOTSUPPORTED, as documented. Keys stay put across a rotation of secrets that
// keeps the last one. Both protocols.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import request from 'supertest'
import { testApp } from './harness/app.ts'
import { failure } from './harness/outcomes.ts'
import { plainSession, uniquePrefix, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const SECRETS = ['a first secret of at least 32 characters, random enough', 'a second secret of at least 32 characters, random too']

for (const [name, options] of [
  ['SHA-256, no secret', {}],
  ['HMAC-SHA-256 from secret', { secret: SECRETS[0] }],
] as const) {
  describe(`hashIds (${name})`, () => {
    it('after logins, no memcached key holds a session ID handed out in a cookie; counting, login and logout work', async () => {
      const store = file.stores.create({ hashIds: true, ...options })
      const app = testApp(store, { genid: store.genid })
      const handedOut: string[] = []
      for (const user of ['ann', 'bob', 'cyd']) {
        const agent = request.agent(app)
        assert.equal((await agent.get('/count').expect(200)).body.views, 1)
        handedOut.push((await agent.get('/read').expect(200)).body.id)
        await agent.post('/login').send({ user }).expect(200)
        const read = (await agent.get('/read').expect(200)).body
        assert.equal(read.user, user)
        handedOut.push(read.id)
        assert.equal((await agent.get('/count').expect(200)).body.views, 1)
        assert.equal((await agent.get('/count').expect(200)).body.views, 2)
      }
      const logout = request.agent(app)
      await logout.post('/login').send({ user: 'dee' }).expect(200)
      handedOut.push((await logout.get('/read').expect(200)).body.id)
      await logout.post('/logout').expect(200)
      assert.equal((await logout.get('/read').expect(200)).body.user, null)
      const keys = (await file.server.keys()).filter((key) => key.startsWith(store.prefix))
      assert.ok(keys.length >= 3, `${keys.length} keys`)
      for (const sid of handedOut) {
        for (const key of keys) assert.ok(!key.includes(sid), `a key holds a handed-out ID: ${key}`)
      }
      // What a key reveals cannot be used as a cookie: a get of the hash finds nothing.
      assert.equal(await store.get(keys[0].slice(store.prefix.length)), null)
    })

    it('length() counts and clear() deletes; ids() and all() are refused with ENOTSUPPORTED, saying why', async () => {
      const store = file.stores.create({ hashIds: true, ...options })
      for (const sid of ['one', 'two', 'three']) await store.set(sid, plainSession({ sid }))
      assert.equal(await store.length(), 3)
      for (const listing of [() => store.ids(), () => store.all()]) {
        const { err } = await failure(listing())
        assert.equal(err.code, 'ENOTSUPPORTED')
        assert.match(err.message, /hashIds/)
      }
      await store.clear()
      assert.equal(await store.length(), 0)
      assert.equal(await store.get('one'), null)
    })
  })
}

describe('hashIds and secret rotation', () => {
  it('keys stay put when a new secret is put first (the last one keys the hash); dropping the last one moves them', async () => {
    const prefix = uniquePrefix()
    const before = file.stores.create({ prefix, hashIds: true, secret: [SECRETS[0]] })
    await before.set('kept', plainSession({ kept: true }))
    const rotated = file.stores.create({ prefix, hashIds: true, secret: [SECRETS[1], SECRETS[0]] })
    assert.equal(((await rotated.get('kept')) as { kept?: boolean } | null)?.kept, true)
    const dropped = file.stores.create({ prefix, hashIds: true, secret: [SECRETS[1]] })
    assert.equal(await dropped.get('kept'), null)
  })
})
