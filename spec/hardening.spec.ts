// What one user's choices, the application's own code, or another instance of the app must never do
// to everybody else: a 20-year "remember me" that logs other users out, a logger or ttl function that
// throws, an item larger than this instance's maxItemSize that takes the server down, a prefix that
// reaches other applications' keys. Real memcached, real Express apps, both protocols.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, it } from 'node:test'
import request from 'supertest'
import { type MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { seededRandom } from './harness/faults.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import { failure } from './harness/outcomes.ts'
import { createStore } from './harness/protocol.ts'
import { RawClient } from './harness/raw.ts'
import { newSession, plainSession, randomId, readSession, uniquePrefix, useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const { stores } = file

const SECOND = 1000
const YEAR = 365 * 86_400 * SECOND
/** memcached keeps nothing past this Unix time: it reads expiries as signed 32-bit numbers. */
const MAX_EXPIRY = 2 ** 31 - 1

/** memcached's remaining TTL for a session of `store` (seconds, -1 for none), or undefined when it holds nothing. */
async function ttlOf(store: MemcacheStore, sid: string): Promise<number | undefined> {
  return (await file.server.inspect(store.prefix + sid))?.ttl
}

/** The TTL memcached should report for a lifetime of `ms` from now: the lifetime, or what is left until MAX_EXPIRY. */
function expectedTtl(ms: number): number {
  return Math.min(Math.ceil(ms / SECOND), MAX_EXPIRY - Math.floor(Date.now() / SECOND))
}

/** An agent logged in as `user`, its session given `maxAge` (ms) like a "remember me" box would. */
async function loggedIn(app: ReturnType<typeof testApp>, user: string, maxAge?: number) {
  const agent = request.agent(app)
  const sid: string = (await agent.post('/login').send({ user }).expect(200)).body.id
  if (maxAge !== undefined) await agent.post('/remember').send({ user, maxAge }).expect(200)
  return { agent, sid, user, maxAge }
}

describe('"remember me" for 20 years', () => {
  it('is stored and served, and logs nobody else out: other users read their sessions and keep their own lifetimes', async () => {
    const store = stores.create()
    const app = testApp(store, { cookie: { maxAge: 60 * SECOND } })
    const others = await Promise.all(['ann', 'bob', 'cid', 'dee'].map((user) => loggedIn(app, user)))
    const long = []
    for (let i = 0; i < 10; i++) {
      long.push(await loggedIn(app, `long${i}`, 20 * YEAR))
      // Other users' reads between the long logins: each is extended, and by nothing shorter than its own lifetime.
      for (const other of others) {
        const { body } = await other.agent.get('/read').expect(200)
        assert.equal(body.user, other.user, `${other.user} is still logged in after ${i + 1} long logins`)
      }
    }
    for (let round = 0; round < 5; round++) {
      for (const other of others) assert.equal((await other.agent.get('/read').expect(200)).body.user, other.user)
    }
    for (const other of others) {
      await eventually(`${other.user}'s expiry is its own (60 s)`, async () => {
        const ttl = await ttlOf(store, other.sid)
        return ttl !== undefined && ttl >= 58 && ttl <= 62
      })
    }
    for (const one of long) {
      assert.equal((await one.agent.get('/read').expect(200)).body.user, one.user)
      const ttl = await ttlOf(store, one.sid)
      assert.ok(ttl !== undefined && ttl >= expectedTtl(20 * YEAR) - 5, `a 20-year session is kept until memcached's last second: ${ttl}`)
    }
    assert.deepEqual(app.errors, [])
  })

  it('random cookie lifetimes from 2 s to 100 years: each is served until its own expiry and sets no one else’s', async () => {
    const store = stores.create()
    const app = testApp(store, { cookie: { maxAge: 60 * SECOND } })
    const random = seededRandom(21)
    const lifetimes = Array.from({ length: 24 }, (_, i) => (i < 3 ? 2 * SECOND : Math.round(2 * SECOND * (50 * YEAR) ** random())))
    const users = []
    for (const [i, maxAge] of lifetimes.entries()) users.push(await loggedIn(app, `u${i}`, maxAge))
    const loggedInAt = Date.now()
    // Reads in a shuffled order, three rounds, short-lived sessions included while they live.
    for (let round = 0; round < 3; round++) {
      const order = [...users].sort(() => random() - 0.5)
      for (const user of order) {
        if (user.maxAge === 2 * SECOND) continue
        assert.equal((await user.agent.get('/read').expect(200)).body.user, user.user, `${user.user} (${user.maxAge} ms) is served`)
      }
    }
    for (const user of users) {
      if (user.maxAge === 2 * SECOND) continue
      const maxAge = user.maxAge as number
      await eventually(`${user.user}'s expiry is its own (${maxAge} ms)`, async () => {
        const ttl = await ttlOf(store, user.sid)
        const expected = expectedTtl(maxAge)
        return ttl !== undefined && ttl >= expected - 3 && ttl <= expected + 3
      })
    }
    // The 2-second sessions, read by nobody since their login: gone with their own expiry, never served.
    await sleep(Math.max(0, loggedInAt + 2 * SECOND + 3500 - Date.now()))
    for (const user of users.filter((one) => one.maxAge === 2 * SECOND)) {
      assert.equal((await user.agent.get('/read').expect(200)).body.user, null, `${user.user} expired`)
    }
    assert.deepEqual(app.errors, [])
  })
})

describe('the application’s own code', () => {
  it('a logger that throws, with failOpen and memcached down: get settles with no session, set resolves, destroy rejects; nothing unhandled', async () => {
    const server = await MemcachedServer.start()
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    const store = createStore({
      servers: server.address,
      prefix: uniquePrefix(),
      timeout: 500,
      failOpen: true,
      logger: {
        warn() {
          throw new Error('the logger broke')
        },
      },
    })
    try {
      const sid = randomId()
      await store.set(sid, plainSession({ user: 'ada' }))
      await server.kill()
      for (let i = 0; i < 3; i++) {
        const started = performance.now()
        assert.equal(await store.get(sid), null)
        assert.ok(performance.now() - started < 1500, 'settled within the timeout')
        await store.set(sid, plainSession({ user: 'ada' }))
      }
      const { err } = await failure(store.destroy(sid))
      assert.ok(['ECONNECTION', 'ESERVERDOWN'].includes(err.code), err.message)
      // And it works again by itself once memcached is back.
      await server.restart()
      await eventually('the store works again', async () => {
        try {
          await store.set(sid, plainSession({ user: 'ada' }))
          return (await readSession(store, sid))?.user === 'ada'
        } catch {
          return false
        }
      })
      await sleep(50)
      assert.deepEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await store.close()
      await server.stop()
    }
  })

  it('a ttl function that returns NaN or throws: set and touch reject with EUSERCODE, nothing sent, what is stored unchanged', async () => {
    const sid = randomId()
    const good = stores.create()
    await good.set(sid, plainSession({ user: 'ada' }))
    const stored = await file.server.inspect(good.prefix + sid)
    for (const [what, ttl] of [
      ['returns NaN', () => Number.NaN],
      ['returns a string', () => '60' as unknown as number],
      [
        'throws',
        () => {
          throw new RangeError('no lifetime for you')
        },
      ],
    ] as const) {
      const store = stores.create({ prefix: good.prefix, ttl })
      for (const operation of [
        () => store.set(sid, plainSession({ user: 'bob' })),
        () => store.touch(sid, plainSession({ user: 'bob' })),
      ]) {
        const { err } = await failure(operation())
        assert.equal(err.code, 'EUSERCODE', `${what}: ${err.message}`)
        assert.equal(err.kind, 'usage')
        assert.equal(err.sent, false)
        assert.match(err.message, /`ttl` function/)
        if (what === 'throws') assert.match(err.message, /RangeError: no lifetime for you/)
        // Also through express-session's callback, never thrown at the caller.
        const viaCallback = await new Promise((resolve) => store.set(sid, plainSession(), resolve))
        assert.ok(viaCallback instanceof MemcacheStoreError && viaCallback.code === 'EUSERCODE')
      }
    }
    assert.deepEqual((await file.server.inspect(good.prefix + sid))?.cas, stored?.cas, 'nothing was written')
    assert.equal((await readSession(good, sid))?.user, 'ada')
  })

  it('a ttl function that returns a negative number expires the session: set deletes it and resolves (documented)', async () => {
    const sid = randomId()
    const store = stores.create()
    await store.set(sid, plainSession({ user: 'ada' }))
    const expiring = stores.create({ prefix: store.prefix, ttl: () => -5 })
    await expiring.set(sid, plainSession({ user: 'ada' }))
    assert.equal(await file.server.inspect(store.prefix + sid), undefined)
  })

  it('generateId that throws: genid throws EUSERCODE naming it, and express-session answers 500 rather than hang', async () => {
    const store = stores.create({
      generateId: () => {
        throw new Error('no IDs today')
      },
    })
    assert.throws(
      () => store.genid(),
      (err: MemcacheStoreError) => err.code === 'EUSERCODE' && /`generateId` threw: Error: no IDs today/.test(err.message),
    )
    const app = testApp(store, { genid: store.genid })
    const { body } = await request(app).post('/login').send({ user: 'ada' }).expect(500)
    assert.equal(body.code, 'EUSERCODE')
  })

  it('a serverDown listener that throws: logged, and the store still fails fast and recovers', async () => {
    const server = await MemcachedServer.start()
    const lines: string[] = []
    const store = createStore({
      servers: server.address,
      prefix: uniquePrefix(),
      timeout: 300,
      logger: { warn: (line) => lines.push(line) },
    })
    store.on('serverDown', () => {
      throw new Error('the listener broke')
    })
    try {
      const sid = randomId()
      await store.set(sid, plainSession({ user: 'ada' }))
      await server.kill()
      const { err } = await failure(store.get(sid))
      assert.ok(['ECONNECTION', 'ECONNCLOSED', 'ESERVERDOWN'].includes(err.code), err.message)
      assert.ok(
        lines.some((line) => /'serverDown' listener threw \(Error: the listener broke\)/.test(line)),
        lines.join('\n'),
      )
      await server.restart()
      await eventually('the store works again', async () => {
        try {
          await store.set(sid, plainSession({ user: 'bob' }))
          return true
        } catch {
          return false
        }
      })
    } finally {
      await store.close()
      await server.stop()
    }
  })
})

describe('an item larger than this instance’s maxItemSize (a rolling config change)', () => {
  let big: MemcachedServer
  before(async () => {
    big = await MemcachedServer.start({ args: ['-I', '2m'], memoryMb: 128 })
  })
  after(async () => {
    await big?.stop()
  })

  it('fails that read alone with ETOOLARGE; the connection stays, and every other session’s operation succeeds', async () => {
    const prefix = uniquePrefix()
    const wide = createStore({ servers: big.address, prefix, maxItemSize: 2 * 1024 * 1024, logger: false })
    const narrow = createStore({ servers: big.address, prefix, logger: false })
    try {
      const huge = randomId()
      await wide.set(huge, plainSession({ blob: 'x'.repeat(1_500_000) }))
      const sids = Array.from({ length: 20 }, () => randomId())
      for (const sid of sids) await narrow.set(sid, plainSession({ sid }))
      await narrow.ready()
      const connectionsBefore = await totalConnections(big)
      let stop = false
      let tooLarge = 0
      const others = { ok: 0, failed: [] as string[] }
      const reader = (async () => {
        while (!stop) {
          const { err } = await failure(narrow.get(huge))
          assert.equal(err.code, 'ETOOLARGE', err.message)
          assert.equal(err.kind, 'input')
          assert.match(err.message, /1500\d{3} bytes, more than maxItemSize \(1048576\)/)
          tooLarge++
          await sleep(20)
        }
      })()
      const workers = Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; !stop; i++) {
          const sid = sids[(w + i) % sids.length]
          try {
            if (i % 3 === 0) await narrow.set(sid, plainSession({ sid, i }))
            else assert.equal((await readSession(narrow, sid))?.sid, sid)
            others.ok++
          } catch (err) {
            others.failed.push(String(err))
          }
        }
      })
      await sleep(1500)
      stop = true
      await Promise.all([reader, ...workers])
      assert.ok(tooLarge >= 10, `${tooLarge} reads of the large session`)
      assert.deepEqual(others.failed, [], `${others.ok} other operations`)
      assert.ok(others.ok > 100, `${others.ok} other operations`)
      // One connection the whole time: the store's own opened none, only the harness's counting one did.
      assert.equal((await totalConnections(big)) - connectionsBefore, 1)
      assert.equal(narrow.diagnostics().servers[0].state, 'up')
      // Its owner can still log out, and the wide instance still reads it.
      assert.equal(((await wide.get(huge)) as { blob?: string } | null)?.blob?.length, 1_500_000)
      await narrow.destroy(huge)
      assert.equal(await wide.get(huge), null)
    } finally {
      await Promise.all([wide.close(), narrow.close()])
    }
  })
})

/** memcached's count of connections ever accepted (each harness command is one). */
async function totalConnections(server: MemcachedServer): Promise<number> {
  return Number(/STAT total_connections (\d+)/.exec(await server.command('stats'))?.[1])
}

describe('prefixes', () => {
  it('a prefix without the ":" delimiter is refused, saying why and what to use', () => {
    for (const prefix of ['sess', 'app_', 'x.']) {
      assert.throws(
        () => createStore({ servers: file.server.address, prefix }),
        (err: Error) => err instanceof TypeError && err.message.includes(`"${prefix}"`) && err.message.includes(`Use "${prefix}:"`),
      )
    }
  })

  it('"sess:" beside another application’s session_count and sessionizer-config: listed never, cleared never', async () => {
    const prefix = uniquePrefix()
    const store = stores.create({ prefix })
    const raw = new RawClient(file.server.address)
    const base = prefix.slice(0, -1)
    const foreign = [`${base}ion_count`, `${base}ionizer-config`, `${base}_other`]
    try {
      for (const key of foreign) await raw.set(key, 'theirs', { expires: 60 })
      const sid = randomId()
      await store.set(sid, plainSession({ user: 'ada' }))
      assert.deepEqual(await store.ids(), [sid])
      await store.clear()
      for (const key of foreign) assert.equal((await file.server.inspect(key))?.value.toString(), 'theirs', key)
      assert.equal(await store.length(), 0)
    } finally {
      raw.close()
    }
  })
})

describe('honest reports', () => {
  it('ready() against a port that never completes the TLS handshake: sent is false; against one that never answers: true', async () => {
    const sockets = new Set<net.Socket>()
    const silent = net.createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const address = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`
    try {
      const secure = createStore({ servers: address, tls: { rejectUnauthorized: false }, timeout: 300, logger: false })
      const plain = createStore({ servers: address, timeout: 300, logger: false })
      try {
        const tls = await failure(secure.ready())
        assert.equal(tls.err.sent, false, tls.err.message)
        const answered = await failure(plain.ready())
        assert.equal(answered.err.sent, true, answered.err.message)
      } finally {
        await Promise.all([secure.close(), plain.close()])
      }
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  })

  it('a session without a cookie object is refused (ESERIALIZE, nothing sent) rather than stored unseen', async () => {
    const store = stores.create()
    const sid = randomId()
    const { err } = await failure(store.set(sid, { user: 'ada' } as never))
    assert.equal(err.code, 'ESERIALIZE')
    assert.equal(err.sent, false)
    assert.match(err.message, /no `cookie` object/)
    assert.equal(await file.server.inspect(store.prefix + sid), undefined)
    assert.deepEqual(await store.ids(), [])
  })

  it('every rejection of an operation is a MemcacheStoreError, whatever failed (store closed, bad ID, user code, server)', async () => {
    const store = stores.create({
      ttl: () => {
        throw 'not even an Error'
      },
    })
    const failures = [
      await failure(store.set(randomId(), newSession(store, randomId()))),
      await failure(store.touch(randomId(), plainSession())),
      await failure(store.set('', plainSession())),
      await failure(store.destroy('has space')),
    ]
    await store.close()
    failures.push(await failure(store.get(randomId())))
    assert.deepEqual(
      failures.map(({ err }) => err.code),
      ['EUSERCODE', 'EUSERCODE', 'EBADKEY', 'EBADKEY', 'ECLOSED'],
    )
  })
})
