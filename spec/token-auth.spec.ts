// memcached's token authentication (-Y), which only the meta protocol speaks: servers with tokens
// answer text and meta commands only, so every store here is `protocol: 'meta'`. The store
// authenticates each new connection with `set <key> 0 -1 <len>\r\n<user> <pass>\r\n` (STORED), its
// listing connection (ids()) too. Wrong or missing credentials fail with EAUTH within the timeout,
// naming the user and the server and never the password; a restarted server is authenticated again.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { MemcacheStore, type MemcacheStoreOptions } from '../lib/index.ts'
import { makeCertificates } from './harness/certs.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import { failEveryOperation, failure, literally, load, roundTrip, tally, untilSuccess, withoutEnvCredentials } from './harness/outcomes.ts'
import { assertIdle, plainSession, randomId, uniquePrefix } from './harness/stores.ts'

const TIMEOUT_MS = 500
const BOUND_MS = TIMEOUT_MS + 400
const PASSWORD = 'wonder-land-7'
const WRONG = 'not-her-password-42'
const TOKENS: Array<[string, string]> = [
  ['alice', PASSWORD],
  ['bob', 'builder-9'],
]

const certs = makeCertificates()
let server: MemcachedServer
let secure: MemcachedServer
const stores: MemcacheStore[] = []
const figures: string[] = []

before(async () => {
  ;[server, secure] = await Promise.all([
    MemcachedServer.start({ tokens: TOKENS }),
    MemcachedServer.start({ tokens: TOKENS, tls: { cert: certs.server.cert, key: certs.server.key } }),
  ])
})
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all([server?.stop(), secure?.stop()])
  if (figures.length > 0)
    console.log(`\nToken authentication figures (timeout ${TIMEOUT_MS} ms):\n${figures.map((f) => `  - ${f}`).join('\n')}`)
})

/** A meta store with exactly the credentials its options give (none from the environment). */
function create(options: MemcacheStoreOptions = {}): MemcacheStore {
  const store = withoutEnvCredentials(
    () =>
      new MemcacheStore({
        protocol: 'meta',
        servers: server.address,
        prefix: uniquePrefix(),
        timeout: TIMEOUT_MS,
        logger: false,
        ...options,
      }),
  )
  stores.push(store)
  return store
}

/** Every kind of operation fails with EAUTH within the bound, naming the server, matching `reason`, never showing the password. */
async function assertRefused(store: MemcacheStore, address: string, reason: RegExp): Promise<string[]> {
  const seen: string[] = []
  for (const { name, err, ms } of await failEveryOperation(store)) {
    assert.equal(err.code, 'EAUTH', `${name}: ${err.message}`)
    assert.equal(err.server, address, `${name}: the server field`)
    assert.match(err.message, literally(address), name)
    assert.match(err.message, reason, name)
    for (const secret of [PASSWORD, WRONG]) assert.ok(!err.message.includes(secret), `${name} never shows a password: ${err.message}`)
    assert.ok(ms < BOUND_MS, `${name} settled in ${Math.round(ms)} ms`)
    // A refused write was not applied: the message must not say it may have been.
    assert.doesNotMatch(err.message, /may still be applied/, name)
    seen.push(`${name} (${Math.round(ms)} ms): ${err.message}`)
  }
  assertIdle(store)
  return seen
}

describe('right credentials', () => {
  it('username and password options: ready(), set/get/touch/destroy and ids() work', async () => {
    const store = create({ username: 'alice', password: PASSWORD })
    await store.ready()
    for (let i = 0; i < 10; i++) await roundTrip(store, server, 'alice')
    assertIdle(store)
  })

  it('user:pass@host:port in servers', async () => {
    const store = create({ servers: `bob:builder-9@${server.address}` })
    await store.ready()
    await roundTrip(store, server, 'alice')
  })

  it('the authenticating set stores nothing: the auth key is not an item on a -Y server', async () => {
    const store = create({ username: 'alice', password: PASSWORD })
    await store.ready()
    assert.equal(await server.inspect('__express_session_memcache_auth__'), undefined)
  })
})

describe('wrong or missing credentials', () => {
  it('a wrong password: EAUTH within the timeout for every operation, naming the user and the server, never the password', async () => {
    const store = create({ username: 'alice', password: WRONG })
    const seen = await assertRefused(store, server.address, /token authentication failed for user "alice"/)
    figures.push(`wrong password: ${seen[0]}`, `wrong password: ${seen[4]}`, `wrong password: ${seen[5]}`)
  })

  it('a wrong password in the address is not shown either', async () => {
    const store = create({ servers: `alice:${WRONG}@${server.address}` })
    await assertRefused(store, server.address, /token authentication failed for user "alice"/)
  })

  it('an unknown user fails the same way', async () => {
    const store = create({ username: 'mallory', password: WRONG })
    const { err, ms } = await failure(store.get(randomId()))
    assert.equal(err.code, 'EAUTH')
    assert.match(err.message, /user "mallory"/)
    assert.ok(ms < BOUND_MS)
  })

  it('no credentials: EAUTH saying none are configured, for every operation (ids() included)', async () => {
    const store = create()
    const seen = await assertRefused(
      store,
      server.address,
      /requires token authentication \(memcached -Y\) and no credentials are configured/,
    )
    figures.push(`no credentials: ${seen[0]}`, `no credentials: ${seen[4]}`, `no credentials: ${seen[5]}`)
  })
})

describe('restarts', () => {
  it('kill + restart of the -Y server under load: the store authenticates its new connection and works again', async () => {
    const own = await MemcachedServer.start({ tokens: TOKENS })
    try {
      const store = create({ servers: own.address, username: 'alice', password: PASSWORD })
      const sids = Array.from({ length: 12 }, randomId)
      await Promise.all(sids.map((sid) => store.set(sid, plainSession({ sid }))))
      const traffic = load(4, (i) => (i % 2 ? store.get(sids[i % 12]) : store.set(sids[i % 12], plainSession({ i }))))
      await sleep(200)
      const killedAt = performance.now()
      await own.kill()
      await sleep(500)
      const restartingAt = performance.now()
      await own.restart()
      const restartedAt = performance.now()
      const recoveryMs = await untilSuccess(() => store.ready(), 5000)
      await sleep(300)
      const outcomes = await traffic.stop()

      const during = outcomes.filter((o) => o.at >= killedAt && o.at < restartingAt)
      assert.ok(during.length > 10, `load ran while the server was down (${during.length})`)
      for (const o of during) {
        assert.ok(o.code !== undefined && ['ECONNECTION', 'ECONNCLOSED', 'ESERVERDOWN', 'ETIMEDOUT'].includes(o.code), o.error?.message)
        assert.equal(o.error?.server, own.address)
        assert.ok(!o.error?.message.includes(PASSWORD))
        assert.ok(o.ms < BOUND_MS, `settled in ${Math.round(o.ms)} ms`)
      }
      const firstSuccess = outcomes.find((o) => o.code === undefined && o.at + o.ms >= restartedAt)
      assert.ok(firstSuccess, 'the load succeeds again after the restart')
      const later = outcomes.filter((o) => o.at > firstSuccess.at + firstSuccess.ms + 50)
      assert.ok(later.length > 10 && later.every((o) => o.code === undefined), `steady after recovery: ${tally(later)}`)
      // The restarted memcached is empty and refuses unauthenticated commands: this round trip
      // (on the store's connection and on ids()'s) only works because both authenticated again.
      await roundTrip(store, own, 'alice')
      assert.equal(await own.command('mn'), 'MN\r\n')
      const stats = await own.command('stats')
      assert.ok(Number(/STAT auth_cmds (\d+)/.exec(stats)?.[1]) >= 2, 'the new process saw authentications')
      assert.equal(Number(/STAT auth_errors (\d+)/.exec(stats)?.[1]), 0)
      figures.push(
        `kill + restart: ${during.length} operations while down (${tally(during)}); ready() again ${Math.round(recoveryMs)} ms after the restart, first load success ${Math.round(firstSuccess.at + firstSuccess.ms - restartedAt)} ms after it`,
      )
      assertIdle(store)
    } finally {
      await own.stop()
    }
  })
})

describe('token authentication over TLS (-Y and -Z)', () => {
  it('right credentials with tls: { ca }: ready(), round trips and ids()', async () => {
    const store = create({ servers: secure.address, username: 'alice', password: PASSWORD, tls: { ca: certs.ca.certPem } })
    await store.ready()
    await roundTrip(store, secure)
  })

  it('a wrong password over TLS: EAUTH, not ETLS', async () => {
    const store = create({ servers: secure.address, username: 'alice', password: WRONG, tls: { ca: certs.ca.certPem } })
    const seen = await assertRefused(store, secure.address, /token authentication failed for user "alice"/)
    figures.push(`wrong password over TLS: ${seen[0]}`)
  })

  it('credentials without tls against the TLS port: fails within the timeout, ready() says to set `tls`', async () => {
    const store = create({ servers: secure.address, username: 'alice', password: PASSWORD })
    const { err, ms } = await failure(store.ready())
    figures.push(`credentials, no tls, TLS port: ready(): ${err.message}`)
    assert.ok(ms < BOUND_MS)
    assert.match(err.message, /set `tls`/)
    assert.ok(!err.message.includes(PASSWORD))
  })
})
