// How honestly failures are reported: lock waiters that time out (never run later), follow-up
// requests due after the deadline (never sent), sent/not-sent, and failOpen never faking a logout.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { MemcacheStoreError } from '../lib/index.ts'
import { freePort, MemcachedServer, sleep } from './harness/memcached.ts'
import { storeError, timed } from './harness/outcomes.ts'
import { swappingImpostor } from './harness/peers.ts'
import { createStore, PROTOCOL } from './harness/protocol.ts'
import { loadSession, markerSpy, newSession, ownSession, plainSession, randomId, StoreFactory, sidOf } from './harness/stores.ts'
import { blockEventLoop, eventually } from './harness/timing.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)

before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await stores.closeAll()
  await server?.stop()
})

describe('honest failure reports', () => {
  const TIMEOUT = 400

  /**
   * Keeps a session's lock busy past TIMEOUT without a connection failure (which would start a
   * back-off): two gets of the session in a row through an impostor that holds each lone get reply
   * 270 ms. The second get takes the lock at about 270 ms and keeps it until about 540 ms (its reply
   * comes before its connection's own 670 ms), while a third operation queued at 0 ms reaches its
   * deadline at 400 ms, still waiting for the lock: about 130 ms of margin on every side.
   */
  async function busySession() {
    const writer = stores.create()
    const impostor = await swappingImpostor(server.address, PROTOCOL, { holdMs: 270 })
    const { serializer, stringified } = markerSpy()
    const store = createStore({ servers: impostor.address, prefix: writer.prefix, timeout: TIMEOUT, logger: false, serializer })
    const sid = randomId()
    await writer.set(sid, ownSession(sid, { marker: 'original' }))
    await store.ready()
    const holders = [store.get(sid), store.get(sid)].map((p) => p.then(sidOf, (err: Error) => err))
    return {
      sid,
      writer,
      store,
      stringified,
      async settle() {
        const [first, second] = await Promise.all(holders)
        assert.equal(first, sid, 'the first holder read its session')
        assert.ok(second === sid || (second instanceof MemcacheStoreError && second.code === 'ETIMEDOUT'), String(second))
        // The second holder's work ends when its reply comes, at about 540 ms: whatever was queued behind it has had its turn by then.
        await sleep(500)
      },
      async close() {
        await store.close()
        await impostor.close()
      },
    }
  }

  function assertLockTimeout(err: MemcacheStoreError, operation: string): void {
    assert.equal(err.code, 'ETIMEDOUT', err.message)
    assert.equal(err.operation, operation)
    assert.equal(err.sent, false, err.message)
    assert.match(err.message, /timed out waiting for the session's lock/)
    assert.match(err.message, /nothing was sent and it will not run/)
    assert.doesNotMatch(err.message, /memcached (destroy|delete|set|add|cas)/)
  }

  it('a destroy whose deadline passed while it waited for the lock fails, was never sent, and never runs later', async () => {
    const busy = await busySession()
    try {
      const { ms, error } = await timed(busy.store.destroy(busy.sid))
      assertLockTimeout(storeError(error), 'destroy')
      assert.ok(ms < TIMEOUT + 150, `settled in ${ms.toFixed(0)} ms`)
      await busy.settle()
      assert.equal(sidOf(await busy.writer.get(busy.sid)), busy.sid, 'the session is still there: the destroy was not carried out')
    } finally {
      await busy.close()
    }
  })

  it('a set whose deadline passed while it waited for the lock fails, and its value never appears', async () => {
    const busy = await busySession()
    try {
      const { ms, error } = await timed(busy.store.set(busy.sid, ownSession(busy.sid, { marker: 'late' })))
      assertLockTimeout(storeError(error), 'set')
      assert.ok(ms < TIMEOUT + 150, `settled in ${ms.toFixed(0)} ms`)
      await busy.settle()
      const stored = (await busy.writer.get(busy.sid)) as unknown as { marker?: string }
      assert.equal(stored.marker, 'original', 'the late value never appeared')
      assert.deepEqual(busy.stringified, [], 'its work never ran: the session was never even serialized')
    } finally {
      await busy.close()
    }
  })

  // The runner must also check the deadline when a waiter's turn comes: the sweep that fails late
  // operations may not have run yet. Here the event loop is busy past both deadlines (a CPU-bound
  // request, a long GC pause); the holder's reply arrived meanwhile and is read first, which hands the
  // lock to a waiter whose deadline has passed.
  it('a set whose deadline passed while the event loop was blocked, waiting for the lock, never runs', async () => {
    const { serializer, stringified } = markerSpy()
    const store = stores.create({ timeout: TIMEOUT, serializer })
    const sid = randomId()
    await store.set(sid, ownSession(sid, { marker: 'original' }))
    const holder = timed(store.set(sid, ownSession(sid, { marker: 'holder' })))
    const waiter = timed(store.set(sid, ownSession(sid, { marker: 'late' })))
    const busyUntil = performance.now() + TIMEOUT + 100
    while (performance.now() < busyUntil) {
      // the event loop is busy elsewhere
    }
    assert.equal((await holder).error, undefined, 'the holder was answered in time')
    assertLockTimeout(storeError((await waiter).error), 'set')
    assert.deepEqual(stringified, ['original', 'holder'], 'the late set never ran: its session was never serialized')
    assert.equal(((await store.get(sid)) as unknown as { marker: string }).marker, 'holder')
  })

  // Each request an operation sends checks the operation's deadline first (the connection's own
  // check). Here the operation's first request is answered while the event loop is blocked past the
  // deadline; the follow-up request the reply calls for must then not be sent at all. Were it sent,
  // it would still be carried out while the caller is told the operation timed out.
  describe('a follow-up request due after the deadline is never sent', () => {
    const TIMEOUT_MS = 300
    const BLOCK_MS = 500

    /**
     * Waits until the timers armed by the test's earlier operations have fired (the store keeps one
     * per connection and one for its operations), then for a check phase: no deadline sweep of
     * theirs is then queued to run between the blocked loop and the reading of the reply, which
     * would fail the operation by its own timer before its follow-up request is even due.
     */
    async function pastEarlierTimers(): Promise<void> {
      await sleep(TIMEOUT_MS + 50)
      await new Promise((resolve) => setImmediate(resolve))
    }

    /** The caller's error: ETIMEDOUT from the refused follow-up request, not from the operation's own timer. */
    function assertRefusedFollowUp(error: unknown, command: string): void {
      const err = storeError(error)
      assert.equal(err.code, 'ETIMEDOUT', err.message)
      assert.equal(err.command, command, err.message)
      assert.match(
        err.message,
        new RegExp(`the operation's ${TIMEOUT_MS} ms had passed before this request could be sent; it was not sent`),
      )
    }

    it('a new session whose ADD finds the ID taken after its deadline: ECOLLISION all the same, and the marker is written by an operation of its own', async () => {
      const store = stores.create({ timeout: TIMEOUT_MS })
      const sid = `taken-${randomId()}`
      await store.set(sid, ownSession(sid, { marker: 'stored' }))
      await pastEarlierTimers()
      const outcome = timed(store.set(sid, newSession(store, sid, { marker: 'new' })))
      assert.equal(store.diagnostics().requestsInFlight, 1, 'the ADD went out at once, on the open connection')
      blockEventLoop(BLOCK_MS)
      const err = storeError((await outcome).error)
      assert.equal(err.code, 'ECOLLISION', err.message)
      // The marker could not be sent within the save's own deadline: a follow-up with its own wrote it,
      // so the new client never reads the stored session, and the ID stays taken.
      await eventually('the marker replaced the stored session', async () => {
        const stored = (await server.inspect(store.prefix + sid))?.value.toString() ?? ''
        return stored.includes('collided')
      })
      assert.equal(await store.get(sid), null, 'neither holder reads the other')
      await assert.rejects(store.set(sid, newSession(store, sid, { marker: 'again' })), (e: MemcacheStoreError) => e.code === 'ECOLLISION')
    })

    it('a save that lost its CAS race: neither the re-read nor a merged write is sent, and the other writer’s session stays as written', async () => {
      const store = stores.create({ timeout: TIMEOUT_MS })
      const sid = randomId()
      await store.set(sid, newSession(store, sid, { a: 0, b: 0 }))
      const [loser, winner] = [await loadSession(store, sid), await loadSession(store, sid)]
      assert.ok(loser && winner)
      winner.b = 1
      await store.set(sid, winner)
      const before = await server.inspect(store.prefix + sid)
      assert.ok(before)
      loser.a = 1
      await pastEarlierTimers()
      const outcome = timed(store.set(sid, loser))
      assert.equal(store.diagnostics().requestsInFlight, 1, 'the CAS write went out at once, on the open connection')
      blockEventLoop(BLOCK_MS)
      assertRefusedFollowUp((await outcome).error, 'get')
      await eventually('no request in flight', () => store.diagnostics().requestsInFlight === 0)
      const after = await server.inspect(store.prefix + sid)
      assert.ok(after)
      assert.equal(after.cas, before.cas, 'nothing was written after the deadline')
      const stored = JSON.parse(after.value.toString()) as { a: number; b: number }
      assert.deepEqual({ a: stored.a, b: stored.b }, { a: 0, b: 1 }, 'the other writer’s change stays; the late save’s is not there')
    })
  })

  it('refused and backed-off requests report sent: false and say so', async () => {
    const address = `127.0.0.1:${await freePort()}`
    const store = createStore({ servers: address, timeout: TIMEOUT, logger: false })
    try {
      const operations = [store.get('a'), store.set('b', plainSession()), store.destroy('c')]
      const first = await Promise.allSettled(operations)
      const again = await Promise.allSettled([store.get('a'), store.set('b', plainSession()), store.destroy('c')])
      const codes = new Set<string>()
      for (const result of [...first, ...again]) {
        assert.equal(result.status, 'rejected')
        const err = storeError((result as PromiseRejectedResult).reason)
        codes.add(err.code)
        assert.equal(err.sent, false, err.message)
        assert.match(err.message, /it was not sent|nothing was sent/)
        assert.doesNotMatch(err.message, /may still be applied/)
        assert.equal(err.server, address)
      }
      assert.ok(codes.has('ECONNECTION'), [...codes].join())
      assert.ok(codes.has('ESERVERDOWN'), `the second round is refused during the back-off: ${[...codes].join()}`)
    } finally {
      await store.close()
    }
  })

  it('requests written to a frozen memcached report sent: true; writes say they may still be applied', async () => {
    const frozen = await MemcachedServer.start()
    const store = createStore({ servers: frozen.address, timeout: TIMEOUT, logger: false })
    try {
      await store.set('w', plainSession())
      frozen.freeze()
      const [set, destroy, get] = await Promise.all([
        timed(store.set('x', plainSession())),
        timed(store.destroy('w')),
        timed(store.get('y')),
      ])
      for (const [name, outcome] of [
        ['set', set],
        ['destroy', destroy],
        ['get', get],
      ] as const) {
        const err = storeError(outcome.error)
        assert.equal(err.code, 'ETIMEDOUT', err.message)
        assert.equal(err.sent, true, `${name}: ${err.message}`)
        assert.equal(err.server, frozen.address)
        assert.ok(outcome.ms < TIMEOUT + 300, `${name} settled in ${outcome.ms.toFixed(0)} ms`)
        assert.doesNotMatch(err.message, /not sent/)
        if (name !== 'get') assert.match(err.message, /may still be applied/, err.message)
        else assert.doesNotMatch(err.message, /may still be applied/, 'a read (even a get-and-touch) is not reported as a write')
      }
    } finally {
      frozen.thaw()
      await store.close()
      await frozen.stop()
    }
  })
})

describe('failOpen never fakes a logout', () => {
  it('memcached down: get yields no session, set resolves, destroy still rejects', async () => {
    const down = await MemcachedServer.start()
    const lines: string[] = []
    const store = createStore({ servers: down.address, timeout: 300, failOpen: true, logger: { warn: (l) => lines.push(l) } })
    try {
      await store.set('kept', plainSession({ v: 1 }))
      assert.ok(await store.get('kept'))
      await down.kill()
      assert.equal(await store.get('kept'), null)
      await store.set('kept', plainSession({ v: 2 }))
      for (let i = 0; i < 3; i++) {
        const { error } = await timed(store.destroy('kept'))
        const err = storeError(error)
        assert.equal(err.kind, 'server', err.message)
        assert.equal(err.operation, 'destroy')
        assert.equal(err.server, down.address)
      }
      assert.ok(lines.length >= 1, 'the swallowed failures were logged')
      assert.ok(
        lines.every((line) => !/destroy/.test(line)),
        'a destroy is never swallowed',
      )
    } finally {
      await store.close()
      await down.stop()
    }
  })
})
