// What the store does with replies it cannot trust, and how honestly it reports failures: swapped
// replies and replies for another key (never another session's value), the wrong protocol, lock
// waiters that time out (never run later), follow-up requests due after the deadline (never sent),
// sent/not-sent, failOpen never faking a logout, a graceful close, nested prefixes, listings that
// must end, and a stored session that nests too deep for express-session.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, it } from 'node:test'
import type { SessionData } from 'express-session'
import request from 'supertest'
import { type MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { watchProcess } from './harness/faults.ts'
import { freePort, MemcachedServer, sleep } from './harness/memcached.ts'
import { keyRewritingProxy, swappingImpostor, tricklingServer } from './harness/peers.ts'
import { createStore, PROTOCOL } from './harness/protocol.ts'
import { RawClient } from './harness/raw.ts'
import { base64JsonSerializer, loadSession, newSession, plainSession, randomId, StoreFactory, uniquePrefix } from './harness/stores.ts'
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

/** The session each test stores: its own ID inside, so a value handed to the wrong caller shows. */
function ownSession(sid: string, fields: Record<string, unknown> = {}) {
  return plainSession({ sid, ...fields })
}

function sidOf(sess: unknown): unknown {
  return (sess as { sid?: unknown } | null)?.sid
}

/** A JSON serializer that records the `marker` of every session it serializes: whether a save's work ran. */
function markerSpy() {
  const stringified: unknown[] = []
  const serializer = {
    parse: JSON.parse,
    stringify: (sess: SessionData) => {
      stringified.push((sess as { marker?: unknown }).marker)
      return JSON.stringify(sess)
    },
  }
  return { serializer, stringified }
}

/** Runs `operation` and returns how long it took to settle and how. */
async function timed<T>(operation: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now()
  try {
    const value = await operation
    return { ms: performance.now() - started, value }
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
}

function storeError(error: unknown): MemcacheStoreError {
  assert.ok(error instanceof MemcacheStoreError, `a MemcacheStoreError, not ${String(error)}`)
  return error
}

describe('replies that cannot be trusted', () => {
  for (const rewriteOpaque of [false, true]) {
    it(`swapped get replies (rewriteOpaque ${rewriteOpaque}): nobody gets another session; EPROTOCOL naming the impostor; recovers once swaps stop`, async () => {
      const writer = stores.create()
      const sids = Array.from({ length: 20 }, (_, i) => `swap${i}-${randomId()}`)
      await Promise.all(sids.map((sid) => writer.set(sid, ownSession(sid))))
      const maxSwaps = 3
      const impostor = await swappingImpostor(server.address, PROTOCOL, { rewriteOpaque, maxSwaps })
      const store = createStore({ servers: impostor.address, prefix: writer.prefix, timeout: 500, logger: false })
      const wrong: string[] = []
      const failures: MemcacheStoreError[] = []
      let served = 0
      const read = async (sid: string) => {
        const sess = await store.get(sid)
        served++
        if (sidOf(sess) !== sid) wrong.push(`${sid} got ${String(sidOf(sess))}`)
      }
      try {
        let cleanBursts = 0
        for (let burst = 0; burst < 10; burst++) {
          // One lone get first (the impostor lets it through after its hold): the server is up again
          // after the back-off, so that every get of the burst below is sent.
          const probeStarted = performance.now()
          for (;;) {
            const probe = await timed(read(sids[burst]))
            if (probe.error === undefined) break
            const err = storeError(probe.error)
            assert.ok(err.code === 'ESERVERDOWN' || err.code === 'EPROTOCOL', err.message)
            assert.ok(performance.now() - probeStarted < 5000, 'the server is tried again after its back-off')
            await sleep(20)
          }
          const swapsBefore = impostor.swaps
          const results = await Promise.allSettled(sids.map(read))
          for (const result of results) if (result.status === 'rejected') failures.push(storeError(result.reason))
          if (swapsBefore >= maxSwaps) {
            cleanBursts++
            assert.deepEqual(
              results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.message),
              [],
              `burst ${burst + 1}: the impostor stopped swapping, so every get succeeds`,
            )
          }
        }
        assert.deepEqual(wrong, [], "no caller ever received another session's value")
        assert.equal(impostor.swaps, maxSwaps)
        assert.ok(failures.length > 0, 'the swaps were noticed')
        assert.ok(cleanBursts >= 5, `${cleanBursts} bursts after the swaps stopped`)
        assert.ok(served >= 100, `${served} gets answered`)
        for (const err of failures) {
          assert.equal(err.code, 'EPROTOCOL', err.message)
          assert.equal(err.server, impostor.address)
          assert.ok(err.message.includes(impostor.address), err.message)
          assert.equal(err.sent, true)
          assert.match(err.reason, rewriteOpaque ? /another key/ : /out of order|another key/)
        }
      } finally {
        await store.close()
        await impostor.close()
      }
    })
  }

  // memcached answering honestly, but for another key than the store asked for (a proxy or a client
  // bug that rewrote the request): only the echoed key (meta `k`, binary GETK/GATK) shows it.
  it('a reply for another key than requested: EPROTOCOL naming the server, and that key’s session is never handed over', async () => {
    const writer = stores.create()
    const tag = randomId()
    const [mine, theirs, unrelated] = [`mine-${tag}`, `them-${tag}`, randomId()]
    await writer.set(mine, ownSession(mine))
    await writer.set(theirs, ownSession(theirs, { user: 'someone else' }))
    await writer.set(unrelated, ownSession(unrelated))
    const proxy = await keyRewritingProxy(server.address, writer.prefix + mine, writer.prefix + theirs)
    const store = createStore({ servers: proxy.address, prefix: writer.prefix, timeout: 500, logger: false })
    try {
      const readMine = async () => {
        const { value, error } = await timed(untilSent(() => store.get(mine)))
        assert.notEqual(sidOf(value), theirs, 'the session of the key memcached answered for is never handed over')
        const err = storeError(error)
        assert.equal(err.code, 'EPROTOCOL', err.message)
        assert.equal(err.server, proxy.address)
        assert.equal(err.sent, true)
        assert.match(err.reason, /a reply for another key/)
      }
      await readMine() // a plain get: the store has not written yet
      await untilSent(() => store.set(unrelated, ownSession(unrelated, { again: true })))
      await readMine() // a get-and-touch, now that a write gave the store a lifetime to extend by
      assert.equal(proxy.rewrites, 2, 'both reads were asked as the other key')
      assert.equal(sidOf(await untilSent(() => store.get(unrelated))), unrelated, 'the other sessions read through the proxy as usual')
      assert.equal(sidOf(await writer.get(mine)), mine, 'the session itself is still there')
    } finally {
      await store.close()
      await proxy.close()
    }
  })

  it('a meta reply whose CAS or TTL is not a number: EPROTOCOL naming the server, nothing thrown, and the store carries on', async () => {
    const peer = await malformedMetaPeer()
    const watcher = watchProcess()
    const store = createStore({ servers: peer.address, protocol: 'meta', timeout: 300, logger: false })
    try {
      for (const sid of ['bad-cas', 'bad-ttl']) {
        const { ms, error } = await timed(untilSent(() => store.get(sid)))
        const err = storeError(error)
        assert.equal(err.code, 'EPROTOCOL', err.message)
        assert.equal(err.server, peer.address)
        assert.ok(err.message.includes(peer.address), err.message)
        assert.equal(err.sent, true)
        assert.match(err.reason, /not a number/)
        assert.ok(ms < 300 + 1000, `settled in ${ms.toFixed(0)} ms`)
      }
      assert.equal(await untilSent(() => store.get('missing')), null, 'the next connection is read afresh')
      assert.deepEqual(watcher.seen, [], 'no exception escaped the reply reader')
    } finally {
      watcher.stop()
      await store.close()
      await peer.close()
    }
  })

  it("a binary store against memcached -B ascii: operations fail within the timeout, and ready() suggests protocol: 'meta'", async () => {
    const ascii = await MemcachedServer.start({ protocol: 'ascii' })
    const store = createStore({ servers: ascii.address, protocol: 'binary', timeout: 300, logger: false })
    try {
      const outcomes = await Promise.all([
        timed<unknown>(store.get('a')),
        timed<unknown>(store.set('b', plainSession())),
        timed<unknown>(store.destroy('c')),
      ])
      for (const { ms, error } of outcomes) {
        const err = storeError(error)
        assert.ok(['EPROTOCOL', 'ETIMEDOUT'].includes(err.code), err.message)
        assert.equal(err.server, ascii.address)
        assert.ok(ms < 300 + 300, `settled in ${ms.toFixed(0)} ms`)
      }
      const { ms, error } = await timed(store.ready())
      const err = storeError(error)
      assert.match(err.message, /protocol: 'meta'/)
      assert.ok(err.message.includes(ascii.address), err.message)
      assert.ok(ms < 300 + 300, `ready() settled in ${ms.toFixed(0)} ms`)
    } finally {
      await store.close()
      await ascii.stop()
    }
  })
})

/** Retries `operation` while the server is in its back-off (ESERVERDOWN: not sent), for at most 3 s. */
async function untilSent<T>(operation: () => Promise<T>): Promise<T> {
  const started = performance.now()
  for (;;) {
    try {
      return await operation()
    } catch (err) {
      if (!(err instanceof MemcacheStoreError) || err.code !== 'ESERVERDOWN' || performance.now() - started > 3000) throw err
      await sleep(20)
    }
  }
}

/**
 * A meta-protocol server that answers `mg` well-framed but with a CAS (`c`) or TTL (`t`) that is not
 * a number, for the keys ending in bad-cas and bad-ttl; any other key is a miss.
 */
async function malformedMetaPeer(): Promise<{ address: string; close(): Promise<void> }> {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  const peer = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    let input = ''
    socket.on('data', (chunk: Buffer) => {
      input += chunk.toString('latin1')
      for (let end = input.indexOf('\r\n'); end >= 0; end = input.indexOf('\r\n')) {
        const [command, key, ...flags] = input.slice(0, end).split(' ')
        input = input.slice(end + 2)
        const opaque = flags.find((flag) => flag.startsWith('O')) ?? ''
        if (command !== 'mg') socket.write('ERROR\r\n')
        else if (key.endsWith('bad-cas')) socket.write(`VA 2 cnot-a-cas t-1 k${key} ${opaque}\r\nhi\r\n`)
        else if (key.endsWith('bad-ttl')) socket.write(`VA 2 c1 tsoon k${key} ${opaque}\r\nhi\r\n`)
        else socket.write(`EN k${key} ${opaque}\r\n`)
      }
    })
  })
  await new Promise<void>((resolve) => peer.listen(port, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        peer.close(() => resolve())
      }),
  }
}

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

    it('a new session whose ADD finds the ID taken: the collision DELETE is not sent and the stored session stays', async () => {
      const store = stores.create({ timeout: TIMEOUT_MS })
      const sid = `taken-${randomId()}`
      await store.set(sid, ownSession(sid, { marker: 'stored' }))
      const before = await server.inspect(store.prefix + sid)
      assert.ok(before)
      await pastEarlierTimers()
      const outcome = timed(store.set(sid, newSession(store, sid, { marker: 'new' })))
      assert.equal(store.diagnostics().requestsInFlight, 1, 'the ADD went out at once, on the open connection')
      blockEventLoop(BLOCK_MS)
      assertRefusedFollowUp((await outcome).error, 'delete')
      await eventually('no request in flight', () => store.diagnostics().requestsInFlight === 0)
      const after = await server.inspect(store.prefix + sid)
      assert.ok(after, 'the stored session was not deleted after the deadline')
      assert.equal(after.cas, before.cas, 'nor changed in any way')
      assert.equal(sidOf(await store.get(sid)), sid)
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

describe('graceful close', () => {
  it('20 saves in flight: close() lets them finish and store; later operations get ECLOSED, not sent', async () => {
    const store = stores.create()
    const reader = stores.create({ prefix: store.prefix })
    const sids = Array.from({ length: 20 }, () => randomId())
    const saves = sids.map((sid) => store.set(sid, ownSession(sid, { payload: 'x'.repeat(20_000) })))
    const closing = store.close()
    const late = Promise.allSettled([store.get(sids[0]), store.set(sids[0], ownSession(sids[0])), store.destroy(sids[0])])
    const results = await Promise.allSettled(saves)
    assert.deepEqual(
      results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
      [],
    )
    await closing
    for (const result of await late) {
      assert.equal(result.status, 'rejected')
      const err = storeError((result as PromiseRejectedResult).reason)
      assert.equal(err.code, 'ECLOSED', err.message)
      assert.equal(err.sent, false)
    }
    const stored = await Promise.all(sids.map((sid) => reader.get(sid)))
    assert.deepEqual(stored.map(sidOf), sids, 'every save was stored')
  })

  it('memcached frozen: close() resolves within about the timeout; the saves in flight fail with ETIMEDOUT', async () => {
    const frozen = await MemcachedServer.start()
    const timeout = 300
    const store = createStore({ servers: frozen.address, timeout, logger: false })
    try {
      await store.ready()
      frozen.freeze()
      const saves = Array.from({ length: 20 }, (_, i) => timed(store.set(`s${i}`, plainSession())))
      const closed = await timed(store.close())
      assert.equal(closed.error, undefined)
      assert.ok(closed.ms < timeout + 200, `close() took ${closed.ms.toFixed(0)} ms`)
      for (const save of await Promise.all(saves)) {
        const err = storeError(save.error)
        assert.equal(err.code, 'ETIMEDOUT', err.message)
        assert.ok(save.ms < timeout + 200)
      }
      await assert.rejects(store.get('s0'), (err: MemcacheStoreError) => err.code === 'ECLOSED' && err.sent === false)
    } finally {
      frozen.thaw()
      await frozen.stop()
    }
  })
})

describe('nested prefixes', () => {
  async function populate(store: MemcacheStore, count: number): Promise<string[]> {
    const sids = Array.from({ length: count }, () => randomId())
    await Promise.all(sids.map((sid) => store.set(sid, ownSession(sid, { prefix: store.prefix }))))
    return sids
  }

  async function assertListsExactly(store: MemcacheStore, sids: string[]): Promise<void> {
    const expected = [...sids].sort()
    assert.deepEqual((await store.ids()).sort(), expected, `ids() of ${store.prefix}`)
    assert.equal(await store.length(), sids.length, `length() of ${store.prefix}`)
    const all = await store.all()
    assert.deepEqual(Object.keys(all).sort(), expected, `all() of ${store.prefix}`)
    for (const [sid, sess] of Object.entries(all)) assert.equal(sidOf(sess), sid)
  }

  it('app: and app:admin: on one memcached never list, read or clear each other', async () => {
    const base = `${uniquePrefix()}app:`
    const app = stores.create({ prefix: base })
    const admin = stores.create({ prefix: `${base}admin:` })
    let appSids = await populate(app, 6)
    let adminSids = await populate(admin, 4)
    await assertListsExactly(app, appSids)
    await assertListsExactly(admin, adminSids)

    await app.clear()
    await assertListsExactly(app, [])
    await assertListsExactly(admin, adminSids)
    for (const sid of adminSids) assert.equal(sidOf(await admin.get(sid)), sid, "app's clear() left admin's sessions")

    appSids = await populate(app, 5)
    await admin.clear()
    await assertListsExactly(admin, [])
    await assertListsExactly(app, appSids)
    for (const sid of appSids) assert.equal(sidOf(await app.get(sid)), sid, "admin's clear() left app's sessions")
    adminSids = await populate(admin, 2)
    await assertListsExactly(admin, adminSids)
    await assertListsExactly(app, appSids)
  })
})

describe('listing is bounded', () => {
  const TIMEOUT = 300

  it('a key dump that never ends: ids(), length(), all() and clear() each fail within 10 × timeout, naming the server', async () => {
    const trickler = await tricklingServer({ intervalMs: 100 })
    const listers = Array.from({ length: 4 }, () =>
      createStore({ servers: trickler.address, prefix: 'trickle:', timeout: TIMEOUT, logger: false }),
    )
    try {
      const [ids, length, all, clear] = await Promise.all([
        timed(listers[0].ids()),
        timed(listers[1].length()),
        timed(listers[2].all()),
        timed(listers[3].clear()),
      ])
      for (const [name, outcome] of Object.entries({ ids, length, all, clear })) {
        const err = storeError(outcome.error)
        assert.equal(err.code, 'ETIMEDOUT', `${name}: ${err.message}`)
        assert.equal(err.server, trickler.address)
        assert.ok(err.message.includes(trickler.address), err.message)
        assert.match(err.message, /did not end within 3000 ms/)
        assert.ok(outcome.ms >= 10 * TIMEOUT - 50 && outcome.ms < 10 * TIMEOUT + 1000, `${name} settled in ${outcome.ms.toFixed(0)} ms`)
      }
      assert.ok(trickler.linesSent >= 4 * 20, `the dumps kept trickling (${trickler.linesSent} lines)`)
    } finally {
      await Promise.all(listers.map((store) => store.close()))
      await trickler.close()
    }
  })

  it('a key dump that stalls after its first line: ETIMEDOUT after the idle timeout', async () => {
    const trickler = await tricklingServer({ stallAfterFirstLine: true })
    const store = createStore({ servers: trickler.address, timeout: TIMEOUT, logger: false })
    try {
      for (const operation of ['ids', 'length', 'all', 'clear'] as const) {
        const { ms, error } = await timed<unknown>(store[operation]())
        const err = storeError(error)
        assert.equal(err.code, 'ETIMEDOUT', err.message)
        assert.equal(err.server, trickler.address)
        assert.match(err.message, /stalled: nothing received for 300 ms/)
        assert.ok(ms < TIMEOUT + 500, `${operation} settled in ${ms.toFixed(0)} ms`)
      }
    } finally {
      await store.close()
      await trickler.close()
    }
  })
})

describe('a stored session nested too deep', () => {
  it('is found whatever the serializer, and a wide but shallow session with many brackets is served', async () => {
    const lines: string[] = []
    const store = stores.create({ serializer: base64JsonSerializer, logger: { warn: (line) => lines.push(line) } })
    const raw = new RawClient(server.address)
    try {
      const deep = `{"cookie":{},"a":${'['.repeat(600)}${']'.repeat(600)}}`
      await raw.set(`${store.prefix}deep-sid`, Buffer.from(deep).toString('base64'), { expires: 60 })
      assert.equal(await store.get('deep-sid'), null)
      assert.match(lines[0] ?? '', /nests deeper than 512 levels/)

      const wide = { cookie: {}, rows: Array.from({ length: 700 }, (_, i) => [{ i }]) }
      await raw.set(`${store.prefix}wide-sid`, JSON.stringify(wide), { expires: 60 })
      const plain = stores.create({ prefix: store.prefix })
      const served = (await plain.get('wide-sid')) as unknown as typeof wide | null
      assert.equal(served?.rows.length, 700, 'over 1,400 brackets, 3 levels deep: served')
      assert.equal(lines.length, 1, lines.join('\n'))
    } finally {
      raw.close()
    }
  })

  it('is no session (one warning), and a request carrying its cookie is answered', async () => {
    const lines: string[] = []
    const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
    const raw = new RawClient(server.address)
    try {
      const app = testApp(store)
      const agent = request.agent(app)
      const { id } = (await agent.post('/set').send({ user: 'ada' }).expect(200)).body as { id: string }
      assert.equal((await agent.get('/read').expect(200)).body.user, 'ada')
      const deep = `{"cookie":{},"a":${'['.repeat(5000)}${']'.repeat(5000)}}`
      await raw.set(store.prefix + id, deep, { expires: 60 })

      assert.equal(await store.get(id), null)
      assert.equal(lines.length, 1, lines.join('\n'))
      assert.match(lines[0], /nests deeper than 512 levels/)
      assert.ok(!lines[0].includes(id), 'the log line does not carry the whole session ID')

      const res = await agent.get('/read').timeout(5000)
      assert.equal(res.status, 200)
      assert.equal(res.body.user, null, 'a fresh session')
      assert.notEqual(res.body.id, id)
      assert.equal(app.errors.length, 0)
      assert.equal(lines.length, 1, 'one line per burst')
    } finally {
      raw.close()
    }
  })
})
