// The server list changing while the app runs: `setServers` growing and shrinking the ring under
// Express load (sessions move as they are read and as the previous servers are drained: no counter
// resets), and ElastiCache auto discovery from a configuration endpoint of the harness's own (a
// higher version applied within an interval; a lower one, an empty list, ERROR and a closed
// connection ignored; a node replaced without losing a session). Both protocols, with and without
// replicas.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { type MemcacheStore, MemcacheStoreError, type MemcacheStoreOptions } from '../lib/index.ts'
import { countingClients } from './harness/app.ts'
import { makeCertificates } from './harness/certs.ts'
import { type ConfigEndpoint, configEndpoint, type EndpointOptions } from './harness/config-endpoint.ts'
import { type MemcachedOptions, type MemcachedServer, sleep, startMemcacheds } from './harness/memcached.ts'
import { failure } from './harness/outcomes.ts'
import { createStore, PROTOCOL } from './harness/protocol.ts'
import { plainSession, randomId, readSession, uniquePrefix } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const started: MemcachedServer[] = []
const stores: MemcacheStore[] = []
const endpoints: ConfigEndpoint[] = []
const figures: string[] = []
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all(endpoints.map((endpoint) => endpoint.close()))
  await Promise.all(started.map((server) => server.stop()))
  if (figures.length) console.log(`\nTopology figures (${PROTOCOL}):\n${figures.map((f) => `  - ${f}`).join('\n')}`)
})

async function cluster(count: number, options?: MemcachedOptions): Promise<MemcachedServer[]> {
  const servers = await startMemcacheds(count, options)
  started.push(...servers)
  return servers
}

function create(options: MemcacheStoreOptions): MemcacheStore {
  const store = createStore({ timeout: 1000, logger: false, ...options })
  stores.push(store)
  return store
}

async function endpointAt(version: number, nodes: string[], options?: EndpointOptions): Promise<ConfigEndpoint> {
  const endpoint = await configEndpoint(version, nodes, options)
  endpoints.push(endpoint)
  return endpoint
}

const addresses = (servers: readonly MemcachedServer[]) => servers.map((server) => server.address)

describe('setServers', () => {
  for (const replicas of [0, 1]) {
    it(`3 -> 4 -> 3 servers under Express load (replicas ${replicas}): no counter resets; the removed server, once drained, is stopped and every session still reads back`, async () => {
      const servers = await cluster(4)
      const three = servers.slice(0, 3)
      const store = create({ servers: addresses(three), replicas, prefix: uniquePrefix() })
      const changes: unknown[] = []
      store.on('serversChanged', (change) => changes.push(change))
      // Sessions that are not read during the changes: they must move by draining.
      const idle = Array.from({ length: 100 }, () => randomId())
      for (const sid of idle) await store.set(sid, plainSession({ sid }))
      const load = countingClients(store, 12)
      await sleep(500)
      await store.setServers(addresses(servers))
      assert.deepEqual(
        store
          .diagnostics()
          .servers.map((server) => server.address)
          .sort(),
        addresses(servers).sort(),
      )
      await sleep(1000)
      await eventually('the grow is drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
      const removed = servers[1]
      await store.setServers(addresses(servers.filter((server) => server !== removed)))
      await sleep(1000)
      await eventually('the shrink is drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
      await removed.stop()
      await sleep(500)
      const { requests, failed, resets } = await load.stop()
      const lost = []
      for (const sid of idle) if ((await readSession(store, sid))?.sid !== sid) lost.push(sid)
      const { moved } = store.diagnostics().migration
      const { repairs } = store.diagnostics().replication ?? { repairs: 0 }
      figures.push(
        `3 -> 4 -> 3 (replicas ${replicas}): ${requests} requests, ${failed} failed, ${resets} counters reset, ${moved} sessions moved, ${lost.length} of ${idle.length} idle sessions lost`,
      )
      assert.equal(resets, 0, 'no counter went back')
      assert.deepEqual(lost, [], 'every idle session moved before its old server went away')
      // With replicas a moved session is written by read repair (counted as a repair).
      assert.ok(moved + repairs > 0, 'sessions moved')
      assert.equal(failed, 0)
      assert.deepEqual(
        changes.map((change) => {
          const { added, removed: gone } = change as { added: string[]; removed: string[] }
          return [added.length, gone.length]
        }),
        [
          [1, 0],
          [0, 1],
        ],
      )
      await removed.restart()
    })
  }

  it('a logout during the change is final: the session never comes back from its previous server', async () => {
    const servers = await cluster(4)
    const store = create({ servers: addresses(servers.slice(0, 3)), prefix: uniquePrefix() })
    const sids = Array.from({ length: 40 }, () => randomId())
    for (const sid of sids) await store.set(sid, plainSession({ sid }))
    await store.setServers(addresses(servers))
    // Logged out at once, before any read moved them (the drain may have moved some already).
    await Promise.all(sids.map((sid) => store.destroy(sid)))
    for (const sid of sids) assert.equal(await store.get(sid), null, sid)
    await eventually('drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
    for (const sid of sids) assert.equal(await store.get(sid), null, sid)
  })

  it('refuses a list it cannot use, and keeps the one in use', async () => {
    const servers = await cluster(2)
    const store = create({ servers: addresses(servers), replicas: 1, prefix: uniquePrefix() })
    await assert.rejects(store.setServers('not a host:port:list:'), TypeError)
    await assert.rejects(store.setServers(addresses(servers).slice(0, 1)), /at least 2 servers for `replicas: 1`/)
    assert.equal(store.diagnostics().servers.length, 2)
  })
})

describe('ElastiCache auto discovery', () => {
  it('operations before the first answer wait for it; a higher version with one more node is applied within an interval', async () => {
    const servers = await cluster(3)
    const endpoint = await endpointAt(1, addresses(servers.slice(0, 2)))
    endpoint.mode('close')
    const store = create({ discovery: { endpoint: endpoint.address, interval: 300 }, prefix: uniquePrefix(), timeout: 1500 })
    const changes: unknown[] = []
    store.on('serversChanged', (change) => changes.push(change))
    const sid = randomId()
    const saving = store.set(sid, plainSession({ sid }))
    await sleep(200)
    endpoint.mode('config')
    await saving
    await store.ready()
    assert.equal((await readSession(store, sid))?.sid, sid)
    assert.deepEqual(store.diagnostics().discovery?.version, 1)
    const sids = Array.from({ length: 40 }, () => randomId())
    for (const one of sids) await store.set(one, plainSession({ sid: one }))
    endpoint.set(2, addresses(servers))
    await eventually('version 2 applied', () => store.diagnostics().discovery?.version === 2, 2000)
    assert.deepEqual(
      store
        .diagnostics()
        .servers.map((server) => server.address)
        .sort(),
      addresses(servers).sort(),
    )
    assert.deepEqual(changes.at(-1), { added: [servers[2].address], removed: [], version: 2 })
    for (const one of sids) assert.equal((await readSession(store, one))?.sid, one)
  })

  it('a lower version, an empty list, ERROR and a closed connection are ignored: the store keeps serving, and says why', async () => {
    const servers = await cluster(2)
    const endpoint = await endpointAt(5, addresses(servers))
    const lines: string[] = []
    const store = create({
      discovery: { endpoint: endpoint.address, interval: 150 },
      prefix: uniquePrefix(),
      logger: { warn: (line) => lines.push(line) },
    })
    await store.ready()
    const sid = randomId()
    await store.set(sid, plainSession({ sid }))
    for (const [what, apply] of [
      ['a lower version', () => endpoint.set(4, addresses(servers).slice(0, 1))],
      ['an empty list', () => endpoint.set(9, [])],
      ['ERROR', () => endpoint.mode('error')],
      ['a closed connection', () => endpoint.mode('close')],
    ] as const) {
      const polls = endpoint.polls
      apply()
      await eventually(`${what}: polled again`, () => endpoint.polls >= polls + 2 || what === 'a closed connection', 3000)
      await sleep(400)
      const { discovery, servers: inUse } = store.diagnostics()
      assert.equal(discovery?.version, 5, what)
      assert.equal(inUse.length, 2, what)
      assert.equal((await readSession(store, sid))?.sid, sid, `${what}: still serving`)
    }
    assert.match(store.diagnostics().discovery?.lastError ?? '', /closed the connection/)
    assert.ok(
      lines.some((line) => /configuration endpoint .* failed .*not an ElastiCache configuration endpoint.*keeping version 5/.test(line)),
      lines.join('\n'),
    )
    assert.ok(lines.length <= 3, `one line per burst: ${lines.length}`)
  })

  it('a node replaced (one removed, one added in a new version) loses no session, with replicas: 1 too', async () => {
    for (const replicas of [0, 1]) {
      const servers = await cluster(4)
      const endpoint = await endpointAt(1, addresses(servers.slice(0, 3)))
      const store = create({ discovery: { endpoint: endpoint.address, interval: 150 }, replicas, prefix: uniquePrefix() })
      await store.ready()
      const sids = Array.from({ length: 60 }, () => randomId())
      for (const sid of sids) await store.set(sid, plainSession({ sid }))
      endpoint.set(2, addresses([servers[0], servers[1], servers[3]]))
      await eventually('version 2 applied', () => store.diagnostics().discovery?.version === 2, 2000)
      await eventually('drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
      await servers[2].stop()
      const lost = []
      for (const sid of sids) if ((await readSession(store, sid))?.sid !== sid) lost.push(sid)
      assert.deepEqual(lost, [], `replicas ${replicas}: no session lost`)
      await servers[2].restart()
    }
  })

  it('an engine before 1.4.14 (only get AmazonElastiCache:cluster) works; plain memcached is refused, saying why; discovery and servers together are a TypeError', async () => {
    const servers = await cluster(1)
    const legacy = await endpointAt(3, addresses(servers))
    legacy.mode('legacy')
    const store = create({ discovery: { endpoint: legacy.address }, prefix: uniquePrefix() })
    await store.ready()
    assert.equal(store.diagnostics().discovery?.version, 3)
    const plain = create({ discovery: { endpoint: servers[0].address }, prefix: uniquePrefix(), timeout: 500 })
    const { err } = await failure(plain.ready())
    assert.match(err.message, /not an ElastiCache configuration endpoint/)
    const { err: waited } = await failure(plain.get(randomId()))
    assert.equal(waited.code, 'ETIMEDOUT')
    assert.equal(waited.sent, false)
    assert.throws(() => create({ discovery: { endpoint: legacy.address }, servers: addresses(servers) }), /either `discovery` or `servers`/)
    assert.ok(err instanceof MemcacheStoreError)
  })

  it('TLS applies to the endpoint as to the nodes: nodes are reached by host name, certificates verified', async () => {
    const certs = makeCertificates()
    const servers = await cluster(2, { args: ['-B', 'auto'], tls: { cert: certs.server.cert, key: certs.server.key } })
    const endpoint = await endpointAt(1, addresses(servers), { tls: certs.server, hostName: 'localhost' })
    const store = create({
      discovery: { endpoint: `localhost:${endpoint.address.split(':')[1]}` },
      tls: { ca: certs.ca.certPem },
      prefix: uniquePrefix(),
    })
    await store.ready()
    assert.deepEqual(
      store
        .diagnostics()
        .servers.map((server) => server.address)
        .sort(),
      servers.map((server) => `localhost:${server.port}`).sort(),
    )
    const sid = randomId()
    await store.set(sid, plainSession({ sid }))
    assert.equal((await readSession(store, sid))?.sid, sid)
    // Without the CA the endpoint's certificate is refused, and the store says so.
    const untrusting = create({ discovery: { endpoint: endpoint.address }, tls: {}, prefix: uniquePrefix(), timeout: 500 })
    const { err } = await failure(untrusting.ready())
    assert.match(err.message, /certificate/)
  })
})
