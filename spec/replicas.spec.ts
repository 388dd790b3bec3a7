// `replicas`: each session kept on 1 + replicas servers (its own on the ring and the next distinct
// ones), versioned, a logout leaving a tombstone. Real memcached processes killed, frozen and
// restarted empty: no session lost, no logout undone, no older copy served, missing and stale copies
// rewritten by the reads that find them, concurrent saves still merged, one command per copy for a
// read-only request. Both protocols.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { format } from 'node:util'
import request from 'supertest'
import type { MemcacheStore, MemcacheStoreOptions } from '../lib/index.ts'
import { consistentPlacement } from '../lib/memcached/ring.ts'
import { countingClients, testApp } from './harness/app.ts'
import { type MemcachedServer, sleep, startMemcacheds } from './harness/memcached.ts'
import { createStore, PROTOCOL } from './harness/protocol.ts'
import { RawClient } from './harness/raw.ts'
import { loadSession, plainSession, randomId, readSession, uniquePrefix } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'
import { inBatches } from './harness/traffic.ts'

const TIMEOUT_MS = 500

const started: MemcachedServer[] = []
const stores: MemcacheStore[] = []
const figures: string[] = []
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all(started.map((server) => server.stop()))
  if (figures.length) console.log(`\nReplica figures (${PROTOCOL}):\n${figures.map((f) => `  - ${f}`).join('\n')}`)
})

async function cluster(count: number): Promise<MemcachedServer[]> {
  const servers = await startMemcacheds(count)
  started.push(...servers)
  return servers
}

function create(servers: readonly MemcachedServer[], options: MemcacheStoreOptions = {}): MemcacheStore {
  const store = createStore({ servers: servers.map((server) => server.address), timeout: TIMEOUT_MS, logger: false, ...options })
  stores.push(store)
  return store
}

/** The servers that keep the copies of `key` (its own first), as the ring places them: what the store must use. */
function copiesOf(servers: readonly MemcachedServer[], key: string, count: number): MemcachedServer[] {
  const placement = consistentPlacement(servers.map((server) => server.address))
  return placement.copies(key, count).map((index) => servers[index])
}

/** What each server holds under `key`: its kind ('session', 'tombstone', or undefined for nothing) and raw value. */
async function heldBy(server: MemcachedServer, key: string): Promise<'session' | 'tombstone' | undefined> {
  if (!server.running) return undefined
  const item = await server.inspect(key)
  if (item === undefined) return undefined
  return item.value[0] === 0x1e && item.value[1] === 0x54 ? 'tombstone' : 'session'
}

describe('no session lost when a server dies or restarts empty', () => {
  for (const [count, replicas] of [
    [3, 1],
    [5, 2],
  ] as const) {
    it(`${count} servers, replicas: ${replicas}: each server in turn killed, then restarted empty; after each step every session reads back`, async () => {
      const servers = await cluster(count)
      const store = create(servers, { replicas, prefix: uniquePrefix() })
      const sids = Array.from({ length: 60 }, () => randomId())
      await inBatches(sids, 16, (sid) => store.set(sid, plainSession({ sid })))
      const readAll = async (step: string) => {
        const read = await inBatches(sids, 16, async (sid) => (await readSession(store, sid))?.sid)
        assert.deepEqual(
          read.filter((sid, i) => sid !== sids[i]),
          [],
          `${step}: every session reads back`,
        )
      }
      for (const server of servers) {
        await server.kill()
        await readAll(`${server.address} killed`)
        await server.restart()
        await readAll(`${server.address} restarted empty`)
        // Reads find the restarted server's copies missing and rewrite them there: it fills up again
        // as its sessions are used (those read while its circuit was still open, on the next read).
        await eventually(`${server.address} holds its copies again`, async () => {
          await readAll(`${server.address} filling up`)
          const missing = []
          for (const sid of sids) {
            const key = store.prefix + sid
            if (copiesOf(servers, key, 1 + replicas).includes(server) && (await heldBy(server, key)) !== 'session') missing.push(sid)
          }
          return missing.length === 0
        })
      }
      const { replication } = store.diagnostics()
      assert.ok(
        replication && replication.repairs >= replication.missingCopies && replication.missingCopies > 0,
        JSON.stringify(replication),
      )
      figures.push(
        `${count} servers, replicas ${replicas}: ${sids.length} sessions through ${count} kill/restart-empty steps, ${replication?.repairs} copies repaired`,
      )
    })
  }
})

describe('a logout is final, and no older copy is served', () => {
  it('destroy while one copy’s server is frozen: succeeds; after the thaw and one read, every other server dies, and the session is still not served', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const sid = randomId()
    const key = store.prefix + sid
    await store.set(sid, plainSession({ user: 'ada' }))
    const [own, other] = copiesOf(servers, key, 2)
    assert.deepEqual([await heldBy(own, key), await heldBy(other, key)], ['session', 'session'])
    other.freeze()
    const started = performance.now()
    await store.destroy(sid)
    assert.ok(performance.now() - started < TIMEOUT_MS, 'the logout settled within the timeout')
    other.thaw()
    assert.equal(await store.get(sid), null)
    await eventually('the copy that missed the logout holds the tombstone', async () => (await heldBy(other, key)) === 'tombstone')
    for (const server of servers) if (server !== other) await server.kill()
    assert.equal(await store.get(sid), null, 'the session never comes back')
    // A fresh process, which never saw the logout, does not serve it either.
    const fresh = create(servers, { replicas: 1, prefix: store.prefix })
    assert.equal(await fresh.get(sid), null)
    for (const server of servers) if (!server.running) await server.restart()
  })

  it('a copy that missed the logout on the key’s own server, which answers first: the tombstone still wins, and overwrites it', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const sid = randomId()
    const key = store.prefix + sid
    await store.set(sid, plainSession({ user: 'ada' }))
    const [own, other] = copiesOf(servers, key, 2)
    const before = await own.inspect(key)
    assert.ok(before)
    await store.destroy(sid)
    // What a server that was cut off during the logout holds (a frozen one executes the requests
    // queued in its socket once thawed, so it would not miss it): the session, put back as it was.
    const raw = new RawClient(own.address)
    try {
      assert.ok(await raw.set(key, before.value, { expires: 60 }))
    } finally {
      raw.close()
    }
    assert.equal(await heldBy(own, key), 'session', 'the copy that missed the logout')
    assert.equal(await heldBy(other, key), 'tombstone')
    const fresh = create(servers, { replicas: 1, prefix: store.prefix })
    assert.equal(await fresh.get(sid), null)
    await eventually('the stale copy is overwritten', async () => (await heldBy(own, key)) === 'tombstone')
    await other.kill()
    assert.equal(await fresh.get(sid), null)
    await other.restart()
  })

  it('save while one copy’s server is frozen: after the thaw and one read, the other server dies, and the newer save is served, never the older', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const sid = randomId()
    const key = store.prefix + sid
    await store.set(sid, plainSession({ step: 1 }))
    const [own, other] = copiesOf(servers, key, 2)
    const loaded = await loadSession(store, sid)
    assert.ok(loaded)
    other.freeze()
    ;(loaded as unknown as Record<string, unknown>).step = 2
    await store.set(sid, loaded)
    other.thaw()
    const fresh = create(servers, { replicas: 1, prefix: store.prefix })
    assert.equal((await readSession(fresh, sid))?.step, 2)
    await eventually('the stale copy is rewritten', async () => {
      const item = await other.inspect(key)
      return item?.value.includes('"step":2') === true
    })
    await own.kill()
    assert.equal((await readSession(create(servers, { replicas: 1, prefix: store.prefix }), sid))?.step, 2)
    await own.restart()
  })

  it('concurrent saves of different fields, with one copy’s server frozen, keep both fields', async () => {
    const servers = await cluster(3)
    const prefix = uniquePrefix()
    const first = create(servers, { replicas: 1, prefix })
    const second = create(servers, { replicas: 1, prefix })
    const sid = randomId()
    await first.set(sid, plainSession({ base: true }))
    const [, other] = copiesOf(servers, prefix + sid, 2)
    const a = await loadSession(first, sid)
    const b = await loadSession(second, sid)
    assert.ok(a && b)
    other.freeze()
    ;(a as unknown as Record<string, unknown>).cart = ['book']
    ;(b as unknown as Record<string, unknown>).theme = 'dark'
    await Promise.all([first.set(sid, a), second.set(sid, b)])
    other.thaw()
    const read = await readSession(create(servers, { replicas: 1, prefix }), sid)
    assert.deepEqual([read?.base, read?.cart, read?.theme], [true, ['book'], 'dark'])
  })

  it('a new session under an ID already stored is refused on every copy, and stays refused when the save is retried', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const sid = randomId()
    await store.set(sid, plainSession({ user: 'ada' }))
    const app = testApp(store, { genid: () => sid })
    // express-session saves while the response ends: the failed save is the app's error, after the headers.
    await request(app).post('/login').send({ user: 'mallory' })
    await eventually('the first save failed', () => app.errors.length === 1)
    await request(app).post('/login').send({ user: 'mallory' })
    await eventually('the second save failed', () => app.errors.length === 2)
    assert.deepEqual(
      app.errors.map((err) => err.code),
      ['ECOLLISION', 'ECOLLISION'],
      'the retried save under the taken ID is refused too',
    )
    await eventually('every copy holds a tombstone', async () => {
      const held = await Promise.all(copiesOf(servers, store.prefix + sid, 2).map((server) => heldBy(server, store.prefix + sid)))
      return held.every((kind) => kind === 'tombstone')
    })
    assert.equal(await store.get(sid), null, 'neither holder reads the other’s session')
    assert.equal(store.diagnostics().collisions, 2)
  })
})

describe('cost', () => {
  it('a read-only request sends at most one command to each copy’s server', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const app = testApp(store, { cookie: { maxAge: 60_000 } })
    const agent = request.agent(app)
    await agent.get('/count').expect(200)
    await agent.get('/read').expect(200)
    // A copy's reply may come after the read settled (on a loaded machine, past the grace its copies
    // get): its command must be counted before or after the window, not in it.
    await sleep(200)
    const before = await Promise.all(servers.map(commands))
    for (let i = 0; i < 5; i++) await agent.get('/read').expect(200)
    await sleep(200)
    const after = await Promise.all(servers.map(commands))
    const perServer = after.map((count, i) => count - before[i])
    assert.equal(
      perServer.reduce((sum, n) => sum + n, 0),
      10,
      `5 reads, 2 copies: ${JSON.stringify(perServer)}`,
    )
    assert.ok(
      perServer.every((n) => n === 0 || n === 5),
      `one command per copy per read: ${JSON.stringify(perServer)}`,
    )
    assert.deepEqual(app.errors, [])
  })

  it('replicas is checked: a whole number up to the number of servers minus one', async () => {
    const servers = await cluster(2)
    for (const replicas of [-1, 2, 1.5, Number.NaN, '1']) {
      assert.throws(() => create(servers, { replicas: replicas as number }), /`replicas` to be a whole number from 0 to 1/)
    }
  })
})

/** The commands a server ran that a read or touch adds to: cmd_get + cmd_touch. */
async function commands(server: MemcachedServer): Promise<number> {
  const text = await server.command('stats')
  const read = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)`).exec(text)?.[1])
  return read('cmd_get') + read('cmd_touch')
}

describe('under load', () => {
  it('Express, replicas: 1 on 3 servers: counters never reset while one server is killed, restarted empty, and another killed; under 5% of requests fail', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix(), timeout: 1000 })
    const load = countingClients(store, 16)
    const [first, second] = servers
    try {
      await sleep(800)
      await first.kill()
      await sleep(1000)
      await first.restart()
      // Every session is read many times a second: the restarted server gets its copies back.
      await sleep(1500)
      await second.kill()
      await sleep(1000)
    } catch (err) {
      await load.stop()
      throw err
    }
    const { requests, failed, resets, clients } = await load.stop()
    figures.push(`Express under load: ${requests} requests, ${failed} failed, ${resets} counters reset (kill, restart empty, kill another)`)
    assert.equal(resets, 0, 'no counter ever went back')
    assert.ok(
      clients.every((client) => client.views > 5),
      'every client kept counting',
    )
    assert.ok(failed < requests * 0.05, `${failed} of ${requests} requests failed`)
    await second.restart()
  })

  it('listing counts each session once, and not the logged-out ones (a tombstone on every copy)', async () => {
    const servers = await cluster(3)
    const store = create(servers, { replicas: 1, prefix: uniquePrefix() })
    const sids = Array.from({ length: 20 }, () => randomId())
    for (const sid of sids) await store.set(sid, plainSession({ sid }))
    for (const sid of sids.slice(0, 5)) await store.destroy(sid)
    assert.deepEqual((await store.ids()).sort(), sids.slice(5).sort())
    assert.equal(await store.length(), 15)
    assert.deepEqual(Object.keys(await store.all()).sort(), sids.slice(5).sort())
  })
})

describe('what the people running it see', () => {
  it('a read that finds a copy missing: the trace says so, a DEBUG line names the server, and diagnostics counts it per server', async () => {
    const servers = await cluster(3)
    const prefix = uniquePrefix()
    const store = create(servers, { replicas: 1, prefix })
    const sid = randomId()
    await store.set(sid, plainSession({ user: 'ada' }))
    const [, other] = copiesOf(servers, prefix + sid, 2)
    const raw = new RawClient(other.address)
    try {
      await raw.delete(prefix + sid)
    } finally {
      raw.close()
    }
    const traces: Array<Record<string, unknown>> = []
    const onEnd = (message: unknown) => traces.push(message as Record<string, unknown>)
    const { tracingChannel } = await import('node:diagnostics_channel')
    const channel = tracingChannel('express-session-memcache:operation')
    channel.subscribe({ start() {}, end() {}, asyncStart() {}, error() {}, asyncEnd: onEnd })
    const lines: string[] = []
    const { default: createDebug } = await import('debug')
    const log = createDebug.log
    createDebug.enable('express-session-memcache')
    createDebug.log = (...args: unknown[]) => lines.push(format(...args))
    try {
      assert.equal((await readSession(store, sid))?.user, 'ada')
    } finally {
      channel.unsubscribe({ start() {}, end() {}, asyncStart() {}, error() {}, asyncEnd: onEnd })
      createDebug.disable()
      createDebug.log = log
    }
    const trace = traces.find((t) => t.operation === 'get')
    assert.deepEqual(trace?.copies, { answered: 2, missing: 1, stale: 0, tombstone: false })
    assert.ok(
      lines.some((line) => line.includes(`has no copy on ${other.address}`)),
      lines.join('\n'),
    )
    await eventually('the copy is rewritten', async () => (await heldBy(other, prefix + sid)) === 'session')
    const replication = store.diagnostics().replication
    assert.equal(replication?.perServer[other.address]?.missingCopies, 1)
    assert.equal(replication?.perServer[other.address]?.repairs, 1)
  })
})

describe('what holds without copies holds with them', () => {
  it('encryption, genid reservations and failOpen, with replicas: 1', async () => {
    const servers = await cluster(3)
    const prefix = uniquePrefix()
    const secret = 'a long random secret for the replicas test, 32+ chars'
    const store = create(servers, { replicas: 1, prefix, secret })
    // genid: a reserved ID has its placeholder on both copies, and the first save writes over both.
    const genid = store.genid
    await eventually('genid has reserved IDs', () => store.diagnostics().genid.pooled > 0)
    const app = testApp(store, { genid })
    const agent = request.agent(app)
    const reserved: string = (await agent.post('/login').send({ user: 'ada' }).expect(200)).body.id
    await eventually('saved', () => app.errors.length === 0, 500).catch(() => assert.fail(app.errors.map((err) => err.message).join('; ')))
    assert.equal(store.diagnostics().genid.fallbacks, 0, 'the ID came from the reserved pool')
    const key = prefix + reserved
    const stored = await Promise.all(copiesOf(servers, key, 2).map((server) => server.inspect(key)))
    assert.ok(
      stored.every((item) => item !== undefined && item.value[0] === 0x1e && item.value[1] === 0x53 && !item.value.includes('ada')),
      'both copies hold the session, encrypted',
    )
    // One copy's server dies: the session is read, decrypted, from the other.
    await copiesOf(servers, key, 2)[0].kill()
    assert.equal((await agent.get('/read').expect(200)).body.user, 'ada')
    // failOpen: every copy's server down: no session, saves succeed without writing, a logout still fails.
    const open = create(servers, { replicas: 1, prefix, secret, failOpen: true })
    for (const server of servers) if (server.running) await server.kill()
    assert.equal(await open.get(reserved), null)
    await open.set(randomId(), plainSession())
    await assert.rejects(open.destroy(reserved))
    for (const server of servers) await server.restart()
  })
})
