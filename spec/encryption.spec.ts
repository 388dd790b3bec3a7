import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import express from 'express'
import session from 'express-session'
import memjs from 'memjs'
import request from 'supertest'
import { MemcacheStore } from '../lib/index.ts'
import { loadSession, newSession, plainSession, randomId, uniquePrefix, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file
let rawClient: memjs.Client | undefined

/** A memjs client of the test's own, to read and write the raw bytes in memcached. */
function raw(): memjs.Client {
  rawClient ??= memjs.Client.create(file.server.address, { logger: { log() {} } })
  return rawClient
}
after(() => {
  rawClient?.close()
})

/** A logger that keeps what the store reports. */
function recorder(): { warn(message: string): void; lines: string[] } {
  const lines: string[] = []
  return { lines, warn: (message) => lines.push(message) }
}

async function rawValue(key: string): Promise<Buffer> {
  const { value } = await raw().get(key)
  assert.ok(value, `memcached holds ${key}`)
  return value
}

type Fields = Record<string, unknown>

describe('encryption at rest', () => {
  it('stores no plaintext of the session, and reads it back', async () => {
    const store = stores.create({ secret: 'correct horse battery staple' })
    const sid = randomId()
    const fields = { email: 'ada.lovelace@example.com', cart: ['analytical-engine-9000'], note: 'première' }
    await store.set(sid, plainSession(fields))

    const bytes = await rawValue(store.prefix + sid)
    assert.equal(bytes[0], 0x01, 'the format version byte comes first')
    for (const needle of ['ada.lovelace@example.com', 'analytical-engine-9000', 'première', 'email', 'cookie', 'originalMaxAge', sid]) {
      assert.equal(bytes.includes(Buffer.from(needle)), false, `${needle} must not appear in the stored bytes`)
    }
    const sess = (await store.get(sid)) as unknown as Fields
    assert.equal(sess.email, fields.email)
    assert.deepEqual(sess.cart, fields.cart)
    assert.equal(sess.note, fields.note)
  })

  it('uses a fresh IV per write: the same session stored twice gives different bytes', async () => {
    const store = stores.create({ secret: 's3cret' })
    const sid = randomId()
    const sess = plainSession({ same: true })
    await store.set(sid, sess)
    const first = await rawValue(store.prefix + sid)
    await store.set(sid, sess)
    const second = await rawValue(store.prefix + sid)
    assert.equal(first.length, second.length)
    assert.notDeepEqual(first, second)
    assert.notDeepEqual(first.subarray(1, 13), second.subarray(1, 13))
  })

  for (const [name, spoil] of [
    ['a flipped ciphertext byte', (bytes: Buffer) => Buffer.from(bytes).fill(bytes[20] ^ 0xff, 20, 21)],
    ['a flipped tag byte', (bytes: Buffer) => Buffer.from(bytes).fill(bytes[bytes.length - 1] ^ 0x01, bytes.length - 1)],
    ['a truncated value', (bytes: Buffer) => bytes.subarray(0, 20)],
    ['an empty value', () => Buffer.alloc(0)],
    ['an unknown format version', (bytes: Buffer) => Buffer.concat([Buffer.from([0x02]), bytes.subarray(1)])],
  ] as const) {
    it(`${name}: no session, logged without the whole session ID, never a crash`, async () => {
      const log = recorder()
      const store = stores.create({ secret: 's3cret', logger: log })
      const sid = randomId()
      await store.set(sid, plainSession({ user: 'ada' }))
      await raw().set(store.prefix + sid, spoil(await rawValue(store.prefix + sid)), { expires: 0 })
      assert.equal(await store.get(sid), null)
      assert.equal(log.lines.length, 1)
      assert.match(log.lines[0], /is not a session/)
      assert.equal(log.lines[0].includes(sid), false, 'the whole session ID is not logged')
      assert.ok(log.lines[0].includes(sid.slice(0, 6)), 'its first characters are')
      const other = randomId()
      await store.set(other, plainSession({ still: 'works' }))
      assert.equal(((await store.get(other)) as unknown as Fields).still, 'works')
    })
  }

  it('a session written with an unknown secret yields no session and is logged', async () => {
    const prefix = uniquePrefix()
    const log = recorder()
    const writer = stores.create({ prefix, secret: 'old secret' })
    const reader = stores.create({ prefix, secret: 'another secret', logger: log })
    const sid = randomId()
    await writer.set(sid, plainSession({ user: 'ada' }))
    assert.equal(await reader.get(sid), null)
    assert.match(log.lines[0], /failed authentication with each of the 1 configured secret/)
  })

  it('a plaintext session written before encryption was enabled yields no session and is logged', async () => {
    const prefix = uniquePrefix()
    const log = recorder()
    const before = stores.create({ prefix })
    const after = stores.create({ prefix, secret: 'now encrypted', logger: log })
    const sid = randomId()
    await before.set(sid, plainSession({ user: 'ada' }))
    assert.equal(await after.get(sid), null)
    assert.match(log.lines[0], /not encrypted \(written before `secret` was set\?\)/)
  })

  it('a value copied under another session’s key does not decrypt (the key is authenticated)', async () => {
    const store = stores.create({ secret: 's3cret' })
    const victim = randomId()
    const attacker = randomId()
    await store.set(victim, plainSession({ user: 'admin' }))
    await raw().set(store.prefix + attacker, await rawValue(store.prefix + victim), { expires: 0 })
    assert.equal(await store.get(attacker), null)
    assert.ok(await store.get(victim))
  })

  it('rotating secrets keeps existing sessions readable; new writes use the first secret', async () => {
    const prefix = uniquePrefix()
    const old = stores.create({ prefix, secret: 'first' })
    const rotated = stores.create({ prefix, secret: ['second', 'first'] })
    const onlyNew = stores.create({ prefix, secret: 'second' })
    const sid = randomId()
    await old.set(sid, plainSession({ user: 'ada' }))
    assert.equal(((await rotated.get(sid)) as unknown as Fields).user, 'ada')
    assert.equal(await onlyNew.get(sid), null, 'not yet rewritten with the new secret')

    await rotated.set(sid, plainSession({ user: 'ada', rewritten: true }))
    assert.equal(((await onlyNew.get(sid)) as unknown as Fields).rewritten, true)
    assert.equal(await old.get(sid), null, 'the retired secret no longer reads it')
  })

  it('the merge of concurrent saves works on encrypted sessions', async () => {
    const store = stores.create({ secret: 's3cret' })
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { user: 'ada' }))
    const first = await loadSession(store, sid)
    const second = await loadSession(store, sid)
    assert.ok(first && second)
    first.cart = ['book']
    second.theme = 'dark'
    await store.set(sid, first as never)
    await store.set(sid, second as never)
    const merged = (await store.get(sid)) as unknown as Fields
    assert.deepEqual(merged.cart, ['book'])
    assert.equal(merged.theme, 'dark')
    assert.equal(merged.user, 'ada')
    assert.equal((await rawValue(store.prefix + sid)).includes(Buffer.from('book')), false)
  })

  it('saves a loaded session encrypted with merge: false too', async () => {
    const store = stores.create({ secret: 's3cret', merge: false })
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { step: 1 }))
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    loaded.step = 'second-step-marker'
    await store.set(sid, loaded as never)
    assert.equal(((await store.get(sid)) as unknown as Fields).step, 'second-step-marker')
    assert.equal((await rawValue(store.prefix + sid)).includes(Buffer.from('second-step-marker')), false)
  })

  it('all() decrypts what it lists', async () => {
    const store = stores.create({ secret: 's3cret' })
    const sid = randomId()
    await store.set(sid, plainSession({ user: 'ada' }))
    const all = await store.all()
    assert.equal((all[sid] as unknown as Fields).user, 'ada')
  })

  it('counts the encryption overhead against the item size limit', async () => {
    const store = stores.create({ secret: 's3cret', maxItemSize: 2048 })
    const sid = randomId()
    // Fits in plain text, but not once the version byte, IV and tag are added.
    const limit = 2048 - Buffer.byteLength(store.prefix + sid) - 64
    const base = JSON.stringify(plainSession({ pad: '' })).length
    const plain = new MemcacheStore({ servers: file.server.address, prefix: store.prefix, logger: false, maxItemSize: 2048 })
    try {
      const sess = plainSession({ pad: 'x'.repeat(limit - base - 10) })
      await plain.set(sid, sess)
      await assert.rejects(store.set(sid, sess), /bytes serialized, over the/)
    } finally {
      await plain.close()
    }
  })

  it('works end to end under express-session, and log-out-everywhere finds the user’s sessions', async () => {
    const store = stores.create({ secret: 'store secret' })
    const app = express()
    app.use(session({ store, secret: 'cookie secret', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }))
    app.post('/login', (req, res) => {
      ;(req.session as unknown as Fields).userId = 'user-e2e-marker'
      res.send('ok')
    })
    app.get('/me', (req, res) => {
      res.send(String((req.session as unknown as Fields).userId ?? 'nobody'))
    })
    const phone = request.agent(app)
    const laptop = request.agent(app)
    await phone.post('/login').expect(200)
    await laptop.post('/login').expect(200)
    await phone.get('/me').expect(200, 'user-e2e-marker')

    const sessions = await store.all()
    const theirs = Object.keys(sessions).filter((sid) => (sessions[sid] as unknown as Fields).userId === 'user-e2e-marker')
    assert.equal(theirs.length, 2)
    for (const sid of theirs) assert.equal((await rawValue(store.prefix + sid)).includes(Buffer.from('user-e2e-marker')), false)
    await Promise.all(theirs.map((sid) => store.destroy(sid)))
    await phone.get('/me').expect(200, 'nobody')
    await laptop.get('/me').expect(200, 'nobody')
  })

  it('rejects a bad secret option without ever quoting a secret', () => {
    for (const secret of ['', [], ['good-secret-value', 5], ['good-secret-value', ''], 42, null]) {
      assert.throws(
        () => new MemcacheStore({ servers: file.server.address, secret: secret as never }),
        (err: Error) => err instanceof TypeError && /`secret`/.test(err.message) && !err.message.includes('good-secret-value'),
      )
    }
  })
})
