// SASL authentication against real memcached processes started with -S and a password database
// made by saslpasswd2 (the harness fails with an install hint when sasl2-bin is missing).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { MemcacheStore } from '../lib/index.ts'
import { failure as settledFailure, withEnv, withoutEnvCredentials } from './harness/outcomes.ts'
import { type SaslMemcached, startSaslMemcached } from './harness/sasl.ts'
import { assertIdle, plainSession, randomId, readSession, uniquePrefix } from './harness/stores.ts'

const USERS = { alice: 'wonderland', bob: 'builder' }
/** The store's timeout in these tests; every failure must settle well within it plus scheduling slack. */
const TIMEOUT_MS = 1000
const SETTLE_BOUND_MS = TIMEOUT_MS + 2000

let sasl: SaslMemcached
let other: SaslMemcached
const stores: MemcacheStore[] = []

before(async () => {
  ;[sasl, other] = await Promise.all([startSaslMemcached(USERS), startSaslMemcached({ carol: 'c:ol@pw' })])
})
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all([sasl.stop(), other.stop()])
})

function create(options: ConstructorParameters<typeof MemcacheStore>[0] = {}): MemcacheStore {
  const store = new MemcacheStore({ servers: sasl.server.address, prefix: uniquePrefix(), logger: false, timeout: TIMEOUT_MS, ...options })
  stores.push(store)
  return store
}

async function roundTrip(store: MemcacheStore): Promise<void> {
  const sid = randomId()
  await store.set(sid, plainSession({ user: 'ada' }))
  const sess = await readSession(store, sid)
  assert.equal(sess?.user, 'ada')
  await store.destroy(sid)
  assert.equal(await store.get(sid), null)
}

/** The error an operation settles with and how long it took; a hang fails the test after the bound. */
function failure(operation: Promise<unknown>) {
  return settledFailure(operation, SETTLE_BOUND_MS)
}

/** A store with no credentials at all: none in the options and none in memjs's environment variables. */
function createWithoutCredentials(): MemcacheStore {
  return withoutEnvCredentials(() => create())
}

describe('right credentials', () => {
  it('username and password options: sessions round-trip and ready() resolves', async () => {
    const store = create({ username: 'alice', password: USERS.alice })
    await store.ready()
    await roundTrip(store)
  })

  it('user:pass@host:port in servers', async () => {
    const store = create({ servers: `bob:${USERS.bob}@${sasl.server.address}` })
    await store.ready()
    await roundTrip(store)
  })

  it("memjs's MEMCACHE_USERNAME and MEMCACHE_PASSWORD environment variables", async () => {
    const restore = withEnv({
      MEMCACHIER_USERNAME: undefined,
      MEMCACHIER_PASSWORD: undefined,
      MEMCACHE_USERNAME: 'alice',
      MEMCACHE_PASSWORD: USERS.alice,
    })
    let store: MemcacheStore
    try {
      store = create()
    } finally {
      restore()
    }
    await store.ready()
    await roundTrip(store)
  })

  it('credentials in an address win over the username option, so two servers can have different users', async () => {
    // carol's password holds ':' and '@', which memjs cannot parse from an address: she uses the options.
    const store = create({
      servers: [other.server.address, `bob:${USERS.bob}@${sasl.server.address}`],
      username: 'carol',
      password: 'c:ol@pw',
    })
    await store.ready()
    for (let i = 0; i < 20; i++) await roundTrip(store)
  })
})

describe('wrong or missing credentials', () => {
  it('a wrong password fails with an EAUTH Error naming the server, at once and for later requests too', async () => {
    const store = create({ username: 'alice', password: 'not-her-password' })
    const first = await failure(store.set(randomId(), plainSession()))
    assert.equal(first.err.code, 'EAUTH')
    assert.equal(first.err.server, sasl.server.address)
    assert.match(
      first.err.message,
      new RegExp(`on ${sasl.server.address.replace(/\./g, '\\.')} failed: SASL authentication failed for user "alice"`),
    )
    assert.ok(!first.err.message.includes('not-her-password'), 'the password never appears in a message')
    assert.ok(first.ms < SETTLE_BOUND_MS)
    const later = await failure(store.get(randomId()))
    assert.equal(later.err.code, 'EAUTH')
    assert.match(later.err.message, new RegExp(sasl.server.address.replace(/\./g, '\\.')))
  })

  it('ready() rejects with EAUTH naming the server when the password is wrong', async () => {
    const store = create({ servers: `alice:wrong@${sasl.server.address}` })
    const { err } = await failure(store.ready())
    assert.equal(err.code, 'EAUTH')
    assert.match(err.message, /1 of 1 server/)
    assert.ok(err.message.includes(`${sasl.server.address} (SASL authentication failed for user "alice"`), err.message)
  })

  it('an unknown user fails the same way', async () => {
    const store = create({ username: 'mallory', password: 'guess' })
    const { err } = await failure(store.get(randomId()))
    assert.equal(err.code, 'EAUTH')
    assert.match(err.message, /user "mallory"/)
  })

  it('no credentials against a server that requires them: EAUTH saying none are configured, within the timeout', async () => {
    const store = createWithoutCredentials()
    for (const operation of [() => store.get(randomId()), () => store.set(randomId(), plainSession()), () => store.ready()]) {
      const { err, ms } = await failure(operation())
      assert.equal(err.code, 'EAUTH')
      assert.match(err.message, /requires SASL authentication and no credentials are configured/)
      assert.ok(err.message.includes(sasl.server.address))
      assert.ok(ms < SETTLE_BOUND_MS, `settled in ${Math.round(ms)} ms`)
    }
  })

  it('ready() right after a refused request gets the refusal too, not a timeout on an orphaned connection', async () => {
    // memjs clears a server's socket when the previous, refused connection closes, even when a new
    // one was opened meanwhile; the new connection's requests then wait for the deadline.
    const store = createWithoutCredentials()
    for (let i = 0; i < 3; i++) {
      await failure(store.set(randomId(), plainSession()))
      const { err } = await failure(store.ready())
      assert.equal(err.code, 'EAUTH', err.message)
      assert.doesNotMatch(err.message, /timed out/)
    }
  })

  it('a store that failed to authenticate leaves nothing in flight', async () => {
    const store = create({ username: 'alice', password: 'nope' })
    await Promise.allSettled(Array.from({ length: 50 }, () => store.get(randomId())))
    assertIdle(store)
  })
})

describe('credential options', () => {
  it('username and password must come together, and the password is never quoted', () => {
    assert.throws(
      () => new MemcacheStore({ username: 'alice' }),
      (err: Error) => err instanceof TypeError && /together/.test(err.message),
    )
    assert.throws(
      () => new MemcacheStore({ username: '', password: 'secret-pw' }),
      (err: Error) => err instanceof TypeError && !err.message.includes('secret-pw'),
    )
  })

  it('refuses the old memjs pass-through option with a pointer, and an address whose password would be cut at a colon', () => {
    assert.throws(
      () => new MemcacheStore({ username: 'a', password: 'b', memjs: { username: 'a', password: 'b' } } as never),
      /Unknown option `memjs`: .*`username`\/`password`/,
    )
    assert.throws(
      () => new MemcacheStore({ servers: 'alice:pa:ss@127.0.0.1:11211' }),
      (err: Error) => err instanceof TypeError && !err.message.includes('pa:ss') && err.message.includes('alice:***@'),
    )
  })
})
