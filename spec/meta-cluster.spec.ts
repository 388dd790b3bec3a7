// Three meta servers (memcached -B ascii), sessions placed by ketama, one killed under load: the
// sessions on the other two keep working without a single error, those on the dead one fail fast
// (ESERVERDOWN, or ECONNECTION for the probe that finds the port closed) naming it, and they work
// again soon after its restart. Every store here is `protocol: 'meta'`.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import HashRing from 'hashring'
import { MemcacheStore } from '../lib/index.ts'
import { type MemcachedServer, sleep, startMemcacheds } from './harness/memcached.ts'
import { failure, load, type Outcome, tally } from './harness/outcomes.ts'
import { assertIdle, plainSession, randomId, uniquePrefix } from './harness/stores.ts'
import { inBatches, percentile } from './harness/traffic.ts'

const TIMEOUT_MS = 500
const BOUND_MS = TIMEOUT_MS + 400
const SESSIONS = 300

let servers: MemcachedServer[]
let store: MemcacheStore

before(async () => {
  servers = await startMemcacheds(3, { protocol: 'ascii' })
  store = new MemcacheStore({
    protocol: 'meta',
    servers: servers.map((server) => server.address),
    prefix: uniquePrefix(),
    timeout: TIMEOUT_MS,
    logger: false,
  })
})
after(async () => {
  await store?.close()
  await Promise.all(servers.map((server) => server.stop()))
})

/** ketama as any ketama client computes it, independently of the store. */
function ketama(members: readonly MemcachedServer[]): (key: string) => string {
  const ring = new HashRing(Object.fromEntries(members.map((server) => [server.address, { weight: 1 }])), 'md5', { 'default port': 11211 })
  return (key) => ring.get(key)
}

describe('a cluster of three meta servers (-B ascii), one killed', () => {
  it('sessions on the live servers never fail, those on the dead one fail fast naming it, and recover after its restart', async () => {
    const placeOf = ketama(servers)
    const sids = Array.from({ length: SESSIONS }, (_, i) => `${randomId()}-${i}`)
    await inBatches(sids, 32, (sid) => store.set(sid, plainSession({ sid })))
    await store.ready()
    const home = new Map(sids.map((sid) => [sid, placeOf(store.prefix + sid)]))
    // Each session is on the server ketama names, and only there.
    await inBatches(sids, 16, async (sid) => {
      for (const server of servers) {
        const held = await server.inspect(store.prefix + sid)
        assert.equal(held !== undefined, server.address === home.get(sid), `${sid} on ${server.address}`)
      }
    })
    const victim = servers[1]
    const onVictim = sids.filter((sid) => home.get(sid) === victim.address)
    const elsewhere = sids.filter((sid) => home.get(sid) !== victim.address)
    assert.ok(onVictim.length > 30 && elsewhere.length > 100, `placement: ${onVictim.length} on the victim, ${elsewhere.length} elsewhere`)

    const traffic = load(
      8,
      (i) => {
        const sid = sids[(i * 7919) % SESSIONS]
        return i % 2 ? store.get(sid) : store.touch(sid, plainSession({ sid }))
      },
      (i) => sids[(i * 7919) % SESSIONS],
    )
    await sleep(300)
    const killedAt = performance.now()
    await victim.kill()

    // ready() names the dead server only.
    const ready = await failure(store.ready())
    assert.equal(ready.err.code, 'ESERVERDOWN')
    assert.match(ready.err.message, /1 of 3 server/)
    assert.ok(ready.err.message.includes(`${victim.address} (`), ready.err.message)
    for (const up of [servers[0], servers[2]]) assert.ok(!ready.err.message.includes(up.address))
    assert.ok(ready.ms < BOUND_MS)

    await sleep(1500)
    const restartingAt = performance.now()
    await victim.restart()
    const restartedAt = performance.now()
    const firstBack = await firstSuccessOn(traffic.outcomes, new Set(onVictim), restartedAt)
    await sleep(300)
    const outcomes = await traffic.stop()

    const isVictims = (o: Outcome) => home.get(o.label ?? '') === victim.address
    const others = outcomes.filter((o) => !isVictims(o))
    const down = outcomes.filter((o) => isVictims(o) && o.at >= killedAt && o.at < restartingAt)
    assert.ok(others.length > 200, `traffic on the live servers (${others.length})`)
    assert.deepEqual(tally(others), 'no failures', 'not one request for a live server failed')
    assert.ok(down.length > 50, `traffic for the dead server (${down.length})`)
    for (const o of down) {
      assert.ok(o.code === 'ESERVERDOWN' || o.code === 'ECONNECTION' || o.code === 'ECONNCLOSED', o.error?.message ?? 'succeeded')
      assert.equal(o.error?.server, victim.address)
      assert.ok(o.error?.message.includes(victim.address))
      assert.ok(o.ms < BOUND_MS, `settled in ${Math.round(o.ms)} ms`)
    }
    const p99 = percentile(
      down.map((o) => o.ms),
      0.99,
    )
    assert.ok(p99 < 50, `the dead server's requests fail fast: p99 ${p99.toFixed(1)} ms`)
    const recovered = outcomes.filter((o) => isVictims(o) && o.at > firstBack.at + 50)
    assert.ok(recovered.length > 10 && recovered.every((o) => o.code === undefined), `steady after the restart: ${tally(recovered)}`)
    console.log(
      `kill 1 of 3 meta servers under load: live servers ${others.length} requests, ${tally(others)}; ` +
        `dead server ${down.length} requests, p99 ${p99.toFixed(1)} ms, ${tally(down)}; ` +
        `its sessions answered again ${Math.round(firstBack.ms)} ms after the restart`,
    )
    assert.ok(firstBack.ms < 3000)

    // The restarted memcached is empty: its sessions are gone (null, not an error) and new ones are stored there.
    const lost = await inBatches(onVictim, 16, (sid) => store.get(sid))
    assert.ok(lost.every((sess) => sess === null))
    const fresh = Array.from({ length: 50 }, randomId).filter((sid) => placeOf(store.prefix + sid) === victim.address)
    await inBatches(fresh, 16, (sid) => store.set(sid, plainSession({ sid })))
    for (const sid of fresh) assert.ok(await victim.inspect(store.prefix + sid), `${sid} stored on the restarted server`)
    await store.ready()
    assertIdle(store)
  })
})

/** The first request for one of `sids` that succeeded after `since`: when, and how long after `since`. */
async function firstSuccessOn(outcomes: readonly Outcome[], sids: Set<string>, since: number): Promise<{ at: number; ms: number }> {
  for (;;) {
    const first = outcomes.find((o) => o.code === undefined && sids.has(o.label ?? '') && o.at + o.ms >= since)
    if (first) return { at: first.at + first.ms, ms: first.at + first.ms - since }
    if (performance.now() - since > 5000) throw new Error('the dead server did not come back within 5 s of its restart')
    await sleep(5)
  }
}
