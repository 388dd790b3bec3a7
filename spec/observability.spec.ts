// What the people running an app can see: the tracing channel, DEBUG output, server state events,
// counters, and the health/metrics example, against real memcached.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import diagnosticsChannel from 'node:diagnostics_channel'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import request from 'supertest'
import { createMonitoredApp } from '../examples/prometheus.ts'
import type { MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { loadSession, newSession, plainSession, randomId, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file

interface Seen {
  event: string
  operation: string
  server: string
  session: string | undefined
  hit?: boolean
  write?: string
  error?: unknown
}

/** Records what a tracing subscriber receives while `run` runs. */
async function traced(run: () => Promise<void>): Promise<Seen[]> {
  const seen: Seen[] = []
  const record = (event: string) => (context: object) => seen.push({ event, ...(context as Omit<Seen, 'event'>) })
  const handlers = {
    start: record('start'),
    end: record('end'),
    asyncStart: record('asyncStart'),
    asyncEnd: record('asyncEnd'),
    error: record('error'),
  }
  const channel = diagnosticsChannel.tracingChannel('express-session-memcache:operation')
  channel.subscribe(handlers)
  try {
    await run()
  } finally {
    channel.unsubscribe(handlers)
  }
  return seen
}

/**
 * A new session loaded twice, as by two overlapping requests; the second has saved its change, so
 * saving the first (`loser`, which changed another field) loses its CAS race and merges.
 */
async function casRaceLoser(store: MemcacheStore) {
  const sid = randomId()
  await store.set(sid, newSession(store, sid, { a: 0, b: 0 }))
  const [loser, winner] = [await loadSession(store, sid), await loadSession(store, sid)]
  assert.ok(loser && winner)
  winner.b = 1
  await store.set(sid, winner)
  loser.a = 1
  return { sid, loser }
}

describe('tracing channel', () => {
  it('each operation publishes start, end and asyncEnd with its operation, server, shortened session, hit and write', async () => {
    const store = stores.create()
    const sid = `${randomId()}-long-enough-to-shorten`
    const other = randomId()
    const seen = await traced(async () => {
      await store.set(sid, newSession(store, sid, { v: 1 }))
      const loaded = await loadSession(store, sid)
      assert.ok(loaded)
      await store.touch(sid, loaded)
      loaded.v = 2
      await store.set(sid, loaded)
      await store.set(other, plainSession())
      await store.destroy(sid)
      assert.equal(await store.get(sid), null)
      await store.ids()
      await store.set(sid, plainSession({ huge: 'x'.repeat(2_000_000) })).catch(() => {})
    })
    const ends = seen.filter((s) => s.event === 'asyncEnd')
    assert.deepEqual(
      ends.map((s) => s.operation),
      ['set', 'get', 'touch', 'set', 'set', 'destroy', 'get', 'ids', 'set'],
    )
    for (const operation of ['start', 'end', 'asyncStart', 'asyncEnd']) {
      assert.equal(seen.filter((s) => s.event === operation).length, 9, `${operation} for each operation`)
    }
    for (const end of ends) {
      assert.equal(end.server, file.server.address)
      if (end.operation !== 'ids') {
        assert.ok(end.session && !end.session.includes('long-enough'), `shortened: ${end.session}`)
        assert.ok(sid.startsWith(end.session.replace('…', '')) || other.startsWith(end.session.replace('…', '')))
      }
    }
    assert.deepEqual(
      ends.filter((s) => s.operation === 'get').map((s) => s.hit),
      [true, false],
    )
    assert.deepEqual(
      ends.filter((s) => s.operation === 'set').map((s) => s.write),
      ['added', 'cas', 'upserted', undefined],
    )
    const errors = seen.filter((s) => s.event === 'error')
    assert.equal(errors.length, 1)
    assert.equal((errors[0].error as MemcacheStoreError).code, 'ETOOLARGE')
    assert.equal((ends[ends.length - 1].error as MemcacheStoreError).code, 'ETOOLARGE')
  })

  it('a save that lost a CAS race is traced as merged', async () => {
    const store = stores.create()
    const { sid, loser } = await casRaceLoser(store)
    const seen = await traced(() => store.set(sid, loser))
    assert.equal(seen.find((s) => s.event === 'asyncEnd')?.write, 'merged')
  })

  it('nobody subscribed: nothing is published, operations work', async () => {
    const channel = diagnosticsChannel.tracingChannel('express-session-memcache:operation')
    assert.equal(channel.hasSubscribers, false)
    const store = stores.create()
    await store.set('quiet', plainSession())
    assert.ok(await store.get('quiet'))
  })
})

describe('DEBUG=express-session-memcache', () => {
  const fixture = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'debug-store.ts')
  const run = (env: NodeJS.ProcessEnv) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, MEMCACHE_SERVERS: file.server.address, PREFIX: `dbg${process.pid}:`, ...env }
    // The fixture is a plain program, not a test file of this run.
    delete childEnv.NODE_TEST_CONTEXT
    return spawnSync(process.execPath, ['--import', 'tsx', fixture], { env: childEnv, encoding: 'utf8', timeout: 20_000 })
  }

  it('prints connections, collisions, merges, decode failures and listings, with session IDs shortened', () => {
    const { stderr, stdout, status } = run({ DEBUG: 'express-session-memcache' })
    assert.equal(status, 0, stderr)
    const ids = JSON.parse(stdout) as string[]
    for (const expected of [
      /connecting \((binary|meta)\)/,
      /: connected/,
      /collision: session /,
      /merge: session /,
      /cas retry: session /,
      /decode failure: session /,
      /ids found \d+ key/,
      /down, next attempt in/,
    ]) {
      assert.match(stderr, expected)
    }
    for (const sid of ids) assert.ok(!stderr.includes(sid), `the whole ID ${sid} is never printed`)
  })

  it('prints nothing without the variable', () => {
    const { stderr, status } = run({ DEBUG: '' })
    assert.equal(status, 0, stderr)
    assert.equal(stderr, '')
  })
})

describe('server state', () => {
  it('serverDown and serverUp follow a kill and a restart, and diagnostics().servers shows the state', async () => {
    const server = await MemcachedServer.start()
    const store = createStore({ servers: server.address, timeout: 300, logger: false })
    const events: Array<{ event: string; server: string; code?: string }> = []
    store.on('serverDown', ({ server: address, error }) => events.push({ event: 'serverDown', server: address, code: error.code }))
    store.on('serverUp', ({ server: address }) => events.push({ event: 'serverUp', server: address }))
    let disconnects = 0
    store.on('disconnect', () => disconnects++)
    try {
      await store.set('a', plainSession())
      assert.deepEqual(store.diagnostics().servers, [
        { address: server.address, state: 'up', lastError: undefined, lastErrorAt: undefined },
      ])
      await server.kill()
      for (let i = 0; i < 5; i++) await store.get('a').catch(() => {})
      const down = store.diagnostics().servers[0]
      assert.notEqual(down.state, 'up')
      assert.ok(down.lastError && down.lastErrorAt && Math.abs(down.lastErrorAt - Date.now()) < 5000, JSON.stringify(down))
      assert.deepEqual(
        events.map((e) => e.event),
        ['serverDown'],
        'one serverDown per outage',
      )
      assert.equal(events[0].server, server.address)
      assert.match(events[0].code ?? '', /^E(CONNCLOSED|CONNECTION)$/)
      await server.restart()
      const deadline = Date.now() + 5000
      while (
        Date.now() < deadline &&
        !(await store.get('a').then(
          () => true,
          () => false,
        ))
      )
        await sleep(20)
      assert.deepEqual(
        events.map((e) => e.event),
        ['serverDown', 'serverUp'],
      )
      assert.equal(store.diagnostics().servers[0].state, 'up')
      assert.equal(disconnects, 0, "never express-session's disconnect: requests keep their req.session")
    } finally {
      await store.close()
      await server.stop()
    }
  })
})

describe('counters', () => {
  // Four hits against three misses: a store that swapped the two counts must fail, not pass by symmetry.
  it('hits, misses, calls, successes and errors match a scripted sequence exactly', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.get(sid)
    await store.get(sid)
    await store.set(sid, plainSession({ v: 1 }))
    for (let i = 0; i < 4; i++) assert.ok(await store.get(sid))
    await store.touch(sid, plainSession({ v: 1 }))
    await store.destroy(sid)
    await store.get(sid)
    await assert.rejects(store.set(sid, plainSession({ huge: 'x'.repeat(2_000_000) })))
    const { operations, bytesWritten } = store.diagnostics()
    const get = operations.get
    assert.deepEqual(
      { calls: get.calls, successes: get.successes, hits: get.hits, misses: get.misses, errors: get.errors },
      { calls: 7, successes: 7, hits: 4, misses: 3, errors: {} },
    )
    assert.deepEqual(
      { calls: operations.set.calls, successes: operations.set.successes, errors: operations.set.errors },
      { calls: 2, successes: 1, errors: { ETOOLARGE: 1 } },
    )
    assert.equal(operations.touch.calls, 1)
    assert.equal(operations.destroy.successes, 1)
    assert.ok(get.p50 > 0 && get.p99 >= get.p50, JSON.stringify(get))
    assert.ok(bytesWritten > 0)
  })

  it('a touch that sends nothing (disableTouch, touchAfter) is counted and traced like any other', async () => {
    for (const options of [{ disableTouch: true }, { touchAfter: 60 }]) {
      const store = stores.create(options)
      const sid = randomId()
      await store.set(sid, plainSession())
      await store.touch(sid, plainSession()) // with touchAfter this one is sent; the next is skipped
      const seen = await traced(() => store.touch(sid, plainSession()))
      assert.deepEqual(
        seen.map((s) => s.event),
        ['start', 'end', 'asyncStart', 'asyncEnd'],
        JSON.stringify(options),
      )
      assert.equal(store.diagnostics().operations.touch.calls, 2, JSON.stringify(options))
      assert.equal(store.diagnostics().operations.touch.successes, 2, JSON.stringify(options))
    }
  })

  it('merges and collisions are counted', async () => {
    const store = stores.create()
    const sid = randomId()
    await store.set(sid, newSession(store, sid, { a: 0 }))
    await assert.rejects(store.set(sid, newSession(store, sid, { again: true })), (err: MemcacheStoreError) => err.code === 'ECOLLISION')
    const race = await casRaceLoser(store)
    await store.set(race.sid, race.loser)
    assert.equal(store.diagnostics().collisions, 1)
    assert.equal(store.diagnostics().merges, 1)
  })
})

describe('the health and metrics example', () => {
  it('serves /healthz without I/O, /readyz with a round trip, and /metrics from the counters', async () => {
    const store: MemcacheStore = stores.create()
    const app = createMonitoredApp(store, 'a secret for the example')
    const agent = request.agent(app)
    await agent.get('/').expect(200)
    await agent.get('/').expect(200)
    assert.equal((await request(app).get('/healthz').expect(200)).body.up, 1)
    assert.deepEqual((await request(app).get('/readyz').expect(200)).body, { ready: true })
    const metrics = (await request(app).get('/metrics').expect(200)).text
    assert.match(metrics, /session_store_get_total\{result="hit"\} 1/)
    // Both requests changed the session (views): two saves.
    assert.match(metrics, /session_store_operations_total\{operation="set",outcome="success"\} 2/)
    assert.match(metrics, /session_store_server_up\{server="127\.0\.0\.1:\d+"\} 1/)
  })
})
