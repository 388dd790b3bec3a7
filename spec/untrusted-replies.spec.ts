// Replies the store cannot trust: swapped replies and replies for another key (never another
// session's value, EPROTOCOL naming the server, recovery once the peer behaves), a meta reply whose
// CAS or TTL is not a number, and the wrong protocol.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MemcacheStoreError } from '../lib/index.ts'
import { watchProcess } from './harness/faults.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import { storeError, timed, untilSent } from './harness/outcomes.ts'
import { keyRewritingProxy, malformedMetaPeer, swappingImpostor } from './harness/peers.ts'
import { createStore, PROTOCOL } from './harness/protocol.ts'
import { ownSession, plainSession, randomId, StoreFactory, sidOf } from './harness/stores.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)

before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await stores.closeAll()
  await server?.stop()
})

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
