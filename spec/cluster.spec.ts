// Several memcached processes: ketama placement, keys kept when servers are added or removed, one
// server killed or frozen under traffic and brought back, and readiness reported per server.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import HashRing from 'hashring'
import memjs from 'memjs'
import type { MemcacheStore, MemcacheStoreError, MemcacheStoreOptions } from '../lib/index.ts'
import { type MemcachedServer, sleep, startMemcacheds } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { plainSession, randomId, uniquePrefix } from './harness/stores.ts'
import { inBatches, largest, percentile, type Request, runTraffic } from './harness/traffic.ts'

const SESSIONS = 10_000
const TIMEOUT_MS = 1000

let servers: MemcachedServer[]
const stores: MemcacheStore[] = []

before(async () => {
  servers = await startMemcacheds(4)
})
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all(servers.map((server) => server.stop()))
})

function create(members: readonly MemcachedServer[], options: MemcacheStoreOptions = {}): MemcacheStore {
  const store = createStore({ servers: members.map((server) => server.address), logger: false, timeout: TIMEOUT_MS, ...options })
  stores.push(store)
  return store
}

/** ketama as any ketama client computes it, independently of the store. */
function ketama(members: readonly MemcachedServer[], weights?: readonly number[]): (key: string) => string {
  const ring = new HashRing(Object.fromEntries(members.map((server, i) => [server.address, { weight: weights?.[i] ?? 1 }])), 'md5', {
    'default port': 11211,
  })
  return (key) => ring.get(key)
}

/** The keys with `prefix` that memcached holds, read with lru_crawler metadump. */
async function keysOn(server: MemcachedServer, prefix: string): Promise<Set<string>> {
  for (let attempt = 0; ; attempt++) {
    const dump = await server.command('lru_crawler metadump hash')
    if (dump.startsWith('BUSY') && attempt < 50) {
      await sleep(50)
      continue
    }
    const keys = new Set<string>()
    for (const line of dump.split(/\r?\n/)) {
      const key = /^key=(\S+)/.exec(line)?.[1]
      if (key === undefined) continue
      const decoded = decodeURIComponent(key)
      if (decoded.startsWith(prefix)) keys.add(decoded)
    }
    return keys
  }
}

function newSids(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${randomId()}-${i}`)
}

async function writeSessions(store: MemcacheStore, countOrSids: number | string[]): Promise<string[]> {
  const sids = typeof countOrSids === 'number' ? newSids(countOrSids) : countOrSids
  await inBatches(sids, 64, (sid) => store.set(sid, plainSession({ sid })))
  return sids
}

/**
 * The share a server gets on a ketama ring depends on its name, here `127.0.0.1:<random test port>`.
 * Simulated over 3,000 random port draws, a fourth server's share has a median of 25% and exceeds
 * 30% in about 1 draw in 200 (a ketama fact about those names, whatever the store does). So that
 * the grow test does not fail on such a draw, a fourth server whose name alone would give it over
 * 30% of these keys is replaced by one on another port before any session is written.
 */
async function fourthServerOfTypicalShare(keys: readonly string[]): Promise<void> {
  for (let draw = 1; ; draw++) {
    const placeOf = ketama(servers)
    const share = keys.filter((key) => placeOf(key) === servers[3].address).length / keys.length
    if (share <= 0.3 || draw > 10) return
    console.log(
      `the fourth server's name ${servers[3].address} gives it ${percent(share * keys.length, keys.length)} of the ring: drawing another port`,
    )
    const [replacement] = await startMemcacheds(1)
    await servers[3].stop()
    servers[3] = replacement
  }
}

async function readable(store: MemcacheStore, sids: readonly string[]): Promise<Set<string>> {
  const found = await inBatches(sids, 64, async (sid) => ((await store.get(sid)) === null ? undefined : sid))
  return new Set(found.filter((sid): sid is string => sid !== undefined))
}

function percent(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(1)}%`
}

describe('placement', () => {
  it('puts each session on the server ketama names, about a third each', async () => {
    const members = servers.slice(0, 3)
    const store = create(members, { prefix: uniquePrefix() })
    const sids = await writeSessions(store, 3000)
    const placeOf = ketama(members)
    const held = await Promise.all(members.map((server) => keysOn(server, store.prefix)))
    const shares: string[] = []
    for (const [i, server] of members.entries()) {
      const expected = sids.map((sid) => store.prefix + sid).filter((key) => placeOf(key) === server.address)
      assert.deepEqual([...held[i]].sort(), expected.sort(), `the keys on ${server.address}`)
      assert.ok(expected.length > 0.2 * sids.length && expected.length < 0.47 * sids.length, `${server.address} holds ${expected.length}`)
      shares.push(percent(expected.length, sids.length))
    }
    console.log(`placement over 3 servers of ${sids.length} sessions: ${shares.join(', ')}`)
  })

  it('gives a server of weight 2 about twice the share of a server of weight 1', async () => {
    const members = servers.slice(0, 3)
    const weights = [2, 1, 1]
    const store = create([], {
      servers: members.map((server, i) => ({ address: server.address, weight: weights[i] })),
      prefix: uniquePrefix(),
    })
    const sids = await writeSessions(store, 3000)
    const held = await Promise.all(members.map((server) => keysOn(server, store.prefix)))
    const placeOf = ketama(members, weights)
    for (const [i, server] of members.entries()) {
      assert.ok(
        [...held[i]].every((key) => placeOf(key) === server.address),
        `every key on ${server.address} is where weighted ketama puts it`,
      )
    }
    assert.equal(
      held.reduce((sum, keys) => sum + keys.size, 0),
      sids.length,
    )
    const heavy = held[0].size / sids.length
    console.log(`weights 2:1:1 over ${sids.length} sessions: ${held.map((keys) => percent(keys.size, sids.length)).join(', ')}`)
    assert.ok(heavy > 0.4 && heavy < 0.6, `the weight-2 server holds ${percent(held[0].size, sids.length)}`)
  })

  it("leaves a given client's own getServer in charge", async () => {
    const members = servers.slice(0, 3)
    const client = memjs.Client.create(members.map((server) => server.address).join(','), { logger: { log() {} } })
    // @types/memjs declares getServer as returning a string; memjs uses it as an index.
    ;(client as unknown as { getServer(key: string): number }).getServer = () => 1
    const store = createStore({ client, prefix: uniquePrefix(), logger: false })
    await writeSessions(store, 20)
    const held = await Promise.all(members.map((server) => keysOn(server, store.prefix)))
    assert.deepEqual(
      held.map((keys) => keys.size),
      [0, 20, 0],
    )
    await store.close()
    client.close()
  })

  it('refuses a server listed twice and weights that are not positive numbers', () => {
    const address = servers[0].address
    assert.throws(() => createStore({ servers: [address, servers[1].address, address] }), /listed twice/)
    for (const weight of [0, -1, Number.NaN, '2', Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => createStore({ servers: [{ address, weight: weight as number }, servers[1].address] }),
        (err: Error) => err instanceof TypeError && err.message.includes(`weight of server "${address}"`),
      )
    }
    assert.throws(() => createStore({ servers: [{ address, wieght: 2 } as never] }), /Unknown field `wieght`/)
    assert.throws(() => createStore({ memjs: { failover: true } } as never), /Unknown option `memjs`: .*failover are unsafe/)
  })
})

describe('changing the number of servers', () => {
  it(`growing from 3 to 4 servers keeps at least 70% of ${SESSIONS} sessions readable`, async () => {
    const prefix = uniquePrefix()
    const sids = newSids(SESSIONS)
    await fourthServerOfTypicalShare(sids.map((sid) => prefix + sid))
    const three = create(servers.slice(0, 3), { prefix })
    const four = create(servers, { prefix })
    await writeSessions(three, sids)
    const kept = await readable(four, sids)
    // Consistent hashing moves keys only onto the new server: what is lost is exactly its share.
    const placeOf = ketama(servers)
    const onNewServer = sids.filter((sid) => placeOf(prefix + sid) === servers[3].address)
    assert.equal(kept.size, SESSIONS - onNewServer.length)
    assert.ok(onNewServer.every((sid) => !kept.has(sid)))
    const moduloClient = [3, 4].map((n) =>
      memjs.Client.create(
        servers
          .slice(0, n)
          .map((server) => server.address)
          .join(','),
      ),
    )
    const moduloKept = sids.filter((sid) => moduloClient[0].getServer(prefix + sid) === moduloClient[1].getServer(prefix + sid)).length
    console.log(
      `grow 3 -> 4: ${percent(kept.size, SESSIONS)} of ${SESSIONS} sessions still readable (${kept.size}); memjs's hash % servers would have kept ${percent(moduloKept, SESSIONS)}`,
    )
    assert.ok(kept.size >= 0.7 * SESSIONS, `only ${percent(kept.size, SESSIONS)} kept`)
  })

  it('shrinking from 4 to 3 servers loses only the sessions of the removed server', async () => {
    const prefix = uniquePrefix()
    const four = create(servers, { prefix })
    const three = create(servers.slice(0, 3), { prefix })
    const sids = await writeSessions(four, SESSIONS)
    const onRemoved = await keysOn(servers[3], prefix)
    const kept = await readable(three, sids)
    for (const sid of sids) assert.equal(kept.has(sid), !onRemoved.has(prefix + sid), `session ${sid.slice(0, 6)}…`)
    console.log(
      `shrink 4 -> 3: ${percent(kept.size, SESSIONS)} of ${SESSIONS} sessions still readable (${kept.size}); lost ${onRemoved.size}, all of them on the removed server`,
    )
  })
})

interface Summary {
  requests: number
  errors: number
  p50: number
  p99: number
  max: number
}

function summarize(requests: readonly Request[]): Summary {
  const ms = requests.map((request) => request.ms)
  return {
    requests: requests.length,
    errors: requests.filter((request) => request.code !== undefined).length,
    p50: Math.round(percentile(ms, 0.5) * 10) / 10,
    p99: Math.round(percentile(ms, 0.99) * 10) / 10,
    max: Math.round(largest(ms)),
  }
}

function byCode(requests: readonly Request[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const { code } of requests) if (code !== undefined) counts[code] = (counts[code] ?? 0) + 1
  return counts
}

/** Sessions spread over three servers, with the sessions of the third (the victim) set apart. */
async function clusterWithTraffic() {
  const members = servers.slice(0, 3)
  const victim = members[2]
  const store = create(members, { prefix: uniquePrefix() })
  const sids = await writeSessions(store, 1500)
  const placeOf = ketama(members)
  const onVictim = new Set(sids.filter((sid) => placeOf(store.prefix + sid) === victim.address))
  return { members, victim, store, sids, onVictim, placeOf }
}

async function waitUntil(what: string, withinMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = performance.now()
  while (!(await check())) {
    if (performance.now() - started > withinMs) assert.fail(`${what}: not within ${withinMs} ms`)
    await sleep(20)
  }
  return Math.round(performance.now() - started)
}

/**
 * 16 workers of traffic on the cluster's sessions; after 500 ms `fault` hits the victim and the
 * traffic goes on for `lastsMs` more. `recover` runs once the traffic has stopped, even when it
 * failed. Returns what started after the fault, split by whether its session lives on the victim.
 */
async function trafficThroughFault(
  { store, sids, onVictim }: Awaited<ReturnType<typeof clusterWithTraffic>>,
  fault: () => unknown,
  lastsMs: number,
  recover: () => void = () => {},
) {
  let faultAt = 0
  const stop = (async () => {
    await sleep(500)
    faultAt = performance.now()
    await fault()
    await sleep(lastsMs)
  })()
  let requests: Request[]
  try {
    requests = await runTraffic(store, sids, 16, stop)
  } finally {
    recover()
  }
  const after = requests.filter((request) => request.startedAt > faultAt)
  return {
    faultAt,
    after,
    others: after.filter((request) => !onVictim.has(request.sid)),
    victims: after.filter((request) => onVictim.has(request.sid)),
  }
}

/**
 * Runs a test that kills or freezes `server`, then brings the server back whatever happened: thawed,
 * and restarted (empty, on its port) if it is down. A failed test then leaves the cluster whole for
 * the next ones instead of failing them too.
 */
async function bringingBack(server: MemcachedServer, test: () => Promise<void>): Promise<void> {
  try {
    await test()
  } finally {
    server.thaw()
    if (!server.running) await server.restart()
  }
}

describe('losing one server of three', () => {
  it('killed under traffic: only its sessions fail, mostly without being sent; the others keep their latency; it works again after a restart', async () => {
    const cluster = await clusterWithTraffic()
    const { victim, store, sids, onVictim, placeOf } = cluster
    // Whatever fails below, the killed server is started again: later tests need all four.
    await bringingBack(victim, async () => {
      const { faultAt: killedAt, after, others, victims } = await trafficThroughFault(cluster, () => victim.kill(), 2500)
      const othersSummary = summarize(others)
      const victimsSummary = summarize(victims)
      const codes = byCode(victims)
      const notSent = (codes.ESERVERDOWN ?? 0) / victims.length
      console.log(
        `kill 1 of 3 under traffic (16 workers, ${Math.round((performance.now() - killedAt) / 100) / 10} s after the kill): ` +
          `other sessions ${JSON.stringify(othersSummary)}; the dead server's sessions ${JSON.stringify(victimsSummary)}, codes ${JSON.stringify(codes)}; ` +
          `error share of all requests ${percent(othersSummary.errors + victimsSummary.errors, after.length)}, dead server's share of sessions ${percent(onVictim.size, sids.length)}`,
      )
      assert.equal(othersSummary.errors, 0, 'no request for a session on a live server fails')
      assert.ok(others.length > 100, `traffic went on for the other sessions (${others.length} requests)`)
      assert.equal(victimsSummary.errors, victims.length, "every request for the dead server's sessions fails")
      assert.ok(
        notSent > 0.5,
        `most of them are refused by the back-off without being sent (${percent(codes.ESERVERDOWN ?? 0, victims.length)})`,
      )
      assert.ok(
        othersSummary.p99 < TIMEOUT_MS / 2,
        `other sessions' p99 latency ${othersSummary.p99} ms stays far below the ${TIMEOUT_MS} ms timeout`,
      )
      assert.ok(victimsSummary.p99 < TIMEOUT_MS / 2, `a refused connection fails fast (p99 ${victimsSummary.p99} ms)`)

      await victim.restart()
      let sid = randomId()
      while (placeOf(store.prefix + sid) !== victim.address) sid = randomId()
      const backAfter = await waitUntil('the restarted server takes sessions again', 5000, async () => {
        try {
          await store.set(sid, plainSession({ back: true }))
          return (await store.get(sid)) !== null
        } catch {
          return false
        }
      })
      console.log(`restart: the restarted server's share worked again ${backAfter} ms after it was up`)
      const [lost, kept] = [[...onVictim].slice(0, 50), sids.filter((sid) => !onVictim.has(sid)).slice(0, 50)]
      assert.equal((await readable(store, lost)).size, 0, 'its old sessions are gone (memcached restarts empty)')
      assert.equal((await readable(store, kept)).size, kept.length, 'the other sessions are all still there')
    })
  })

  it('frozen under traffic: after the first timeout its requests fail fast during the back-off, and the others never wait', async () => {
    const cluster = await clusterWithTraffic()
    const { victim, store, onVictim } = cluster
    await bringingBack(victim, async () => {
      const { others, victims } = await trafficThroughFault(
        cluster,
        () => victim.freeze(),
        3500,
        () => victim.thaw(),
      )
      const waited = victims.filter((request) => request.code === 'ETIMEDOUT')
      const fast = victims.filter((request) => request.code === 'ESERVERDOWN')
      const othersSummary = summarize(others)
      console.log(
        `freeze 1 of 3 under traffic (16 workers, 3.5 s): other sessions ${JSON.stringify(othersSummary)}; the frozen server's sessions ` +
          `${JSON.stringify(summarize(victims))}, codes ${JSON.stringify(byCode(victims))}: ${waited.length} waited for the ${TIMEOUT_MS} ms timeout, ` +
          `${fast.length} were refused at once (p99 ${
            Math.round(
              percentile(
                fast.map((request) => request.ms),
                0.99,
              ) * 10,
            ) / 10
          } ms)`,
      )
      assert.equal(othersSummary.errors, 0)
      assert.ok(othersSummary.p99 < TIMEOUT_MS / 2, `other sessions' p99 latency ${othersSummary.p99} ms`)
      assert.ok(victims.every((request) => request.code !== undefined))
      // Only the requests in flight when it froze and one probe per back-off period pay the timeout.
      assert.ok(fast.length > 4 * waited.length, `${fast.length} refused at once vs ${waited.length} timed out`)
      assert.ok(waited.length <= 16 + 10, `${waited.length} requests paid the timeout`)

      const backAfter = await waitUntil('the thawed server answers again', 5000, async () => {
        const sid = [...onVictim][Math.floor(Math.random() * onVictim.size)]
        try {
          return (await store.get(sid)) !== null
        } catch {
          return false
        }
      })
      console.log(`thaw: its sessions were readable again after ${backAfter} ms`)
    })
  })
})

describe('ready() on a cluster', () => {
  it('reports each server separately: names only the one that is down, and resolves once it is back', async () => {
    const members = servers.slice(0, 3)
    const store = create(members, { prefix: uniquePrefix() })
    await store.ready()
    const down = members[1]
    await down.kill()
    try {
      await assert.rejects(store.ready(), (err: MemcacheStoreError) => {
        assert.equal(err.code, 'ESERVERDOWN')
        assert.match(err.message, /1 of 3 server/)
        assert.ok(err.message.includes(`${down.address} (`), err.message)
        for (const up of [members[0], members[2]]) assert.ok(!err.message.includes(up.address), `${up.address} is not named`)
        return true
      })
    } finally {
      await down.restart()
    }
    await store.ready()
  })
})
