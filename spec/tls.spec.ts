// TLS (memcached -Z) with the harness's test certificates, on BOTH protocols in this one file: every
// test runs once for 'binary' (memjs's Server with the store's TLS socket) and once for 'meta' (the
// store's own sockets), each store given its protocol explicitly. The TLS servers here are started
// with `-B auto`, so they accept both whatever TEST_PROTOCOL says. Verification is on by default:
// an unknown CA or a wrong host name fails every operation with ETLS naming the server; only
// `rejectUnauthorized: false` (the explicit opt-out) connects anyway. Nothing leaves in clear.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, it } from 'node:test'
import { MemcacheStore, type MemcacheStoreOptions } from '../lib/index.ts'
import { type CertificatePair, makeCertificates } from './harness/certs.ts'
import { freePort, type MemcachedOptions, MemcachedServer, sleep } from './harness/memcached.ts'
import {
  AFTER_BACKOFF,
  type Failed,
  failEveryOperation,
  failure,
  literally,
  load,
  type Outcome,
  roundTrip,
  tally,
} from './harness/outcomes.ts'
import { assertIdle, plainSession, randomId, uniquePrefix } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'
import { largest } from './harness/traffic.ts'

const PROTOCOLS = ['binary', 'meta'] as const
type Protocol = (typeof PROTOCOLS)[number]

const TIMEOUT_MS = 500
/** Every failure settles within the store's timeout plus this margin (a loaded 2-core machine's scheduling). */
const BOUND_MS = TIMEOUT_MS + 400

const certs = makeCertificates()
const ca = certs.ca.certPem
/** The client certificate a store presents for mutual TLS (PEM text, as Node's tls options take it). */
const clientCert = { cert: certs.client.certPem, key: certs.client.keyPem }

/** A -Z server presenting `pair`; `-B auto` keeps both protocols on even when TEST_PROTOCOL=meta. */
function tlsServer(pair: CertificatePair, extra: Partial<NonNullable<MemcachedOptions['tls']>> = {}): MemcachedOptions {
  return { args: ['-B', 'auto'], tls: { cert: pair.cert, key: pair.key, ...extra } }
}

let good: MemcachedServer
let untrusted: MemcachedServer
let wrongHost: MemcachedServer
let mutual: MemcachedServer
let plain: MemcachedServer
const stores: MemcacheStore[] = []
const figures: string[] = []

before(async () => {
  ;[good, untrusted, wrongHost, mutual, plain] = await Promise.all([
    MemcachedServer.start(tlsServer(certs.server)),
    MemcachedServer.start(tlsServer(certs.selfSigned)),
    MemcachedServer.start(tlsServer(certs.wrongHost)),
    MemcachedServer.start(tlsServer(certs.server, { ca: certs.ca.cert, verifyClient: true, client: certs.client })),
    MemcachedServer.start({ args: ['-B', 'auto'] }),
  ])
})
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all([good, untrusted, wrongHost, mutual, plain].map((server) => server?.stop()))
  if (figures.length > 0) console.log(`\nTLS figures (timeout ${TIMEOUT_MS} ms):\n${figures.map((f) => `  - ${f}`).join('\n')}`)
})

function create(protocol: Protocol, servers: string, options: MemcacheStoreOptions = {}): MemcacheStore {
  const store = new MemcacheStore({ protocol, servers, prefix: uniquePrefix(), timeout: TIMEOUT_MS, logger: false, ...options })
  stores.push(store)
  return store
}

/**
 * Every kind of operation (a fresh connection for the first, back-off refusals next, a fresh one again
 * after the back-off, ready() and ids() on their own connections) fails with `code` within the bound,
 * naming the server, with a reason matching `reason`. Returns the messages seen, for the report.
 */
async function assertEveryOperationFails(store: MemcacheStore, address: string, code: string, reason: RegExp): Promise<Failed[]> {
  const seen = await failEveryOperation(store)
  for (const { name, err, ms } of seen) {
    assert.equal(err.code, code, `${name}: ${err.message}`)
    assert.equal(err.server, address, `${name} names the server in \`server\``)
    assert.ok(err.message.includes(address), `${name} names the server in its message: ${err.message}`)
    assert.match(err.message, reason, name)
    assert.ok(ms < BOUND_MS, `${name} settled in ${Math.round(ms)} ms`)
    if (name === AFTER_BACKOFF) assert.doesNotMatch(err.message, /next attempt in/, 'a fresh attempt, not a refusal')
  }
  assertIdle(store)
  return seen
}

/** A failure as the printed figures show it. */
function shown({ name, err, ms }: Failed): string {
  return `${name} (${Math.round(ms)} ms): ${err.code} ${err.message}`
}

/** A TCP listener in place of memcached: records every byte each connection sends and never answers. */
async function recordingListener(): Promise<{ address: string; received(): Buffer[]; close(): Promise<void> }> {
  const port = await freePort()
  const connections: Buffer[][] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    const chunks: Buffer[] = []
    connections.push(chunks)
    sockets.add(socket)
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${port}`,
    received: () => connections.map((chunks) => Buffer.concat(chunks)),
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/** The content types of the TLS records `data` consists of, or why it is not a sequence of TLS records. */
function tlsRecordTypes(data: Buffer): number[] | string {
  const types: number[] = []
  let offset = 0
  while (offset < data.length) {
    if (offset + 5 > data.length) return `a cut record header at byte ${offset}`
    // type, legacy version 3.x, length: a ClientHello record says 3.1 (TLS 1.0) for compatibility.
    if (data[offset + 1] !== 3 || data[offset + 2] > 4)
      return `no TLS record header at byte ${offset}: ${data.subarray(offset, offset + 5).toString('hex')}`
    types.push(data[offset])
    offset += 5 + data.readUInt16BE(offset + 3)
  }
  return offset === data.length ? types : 'a cut record'
}

/** The counters of the commands memcached ran (`stats`): all zero when it never read one. */
async function commandCounters(server: MemcachedServer): Promise<Record<string, number>> {
  const stats = await server.command('stats')
  const names = ['cmd_get', 'cmd_set', 'cmd_touch', 'get_misses', 'delete_misses', 'delete_hits', 'touch_misses']
  return Object.fromEntries(names.map((name) => [name, Number(new RegExp(`STAT ${name} (\\d+)`).exec(stats)?.[1])]))
}

for (const protocol of PROTOCOLS) {
  describe(`${protocol} protocol over TLS`, () => {
    describe('a verified connection', () => {
      it('tls: { ca } round-trips sessions (set/get/touch/destroy), ready() and ids() by IP address and by host name', async () => {
        for (const host of ['127.0.0.1', 'localhost']) {
          const store = create(protocol, `${host}:${good.port}`, { tls: { ca } })
          await store.ready()
          await roundTrip(store, good)
          for (let i = 0; i < 20; i++) await roundTrip(store, good)
          assertIdle(store)
        }
      })

      it("servername: 'wrong.example' accepts the CA's certificate issued to that name, whatever address is dialled", async () => {
        const store = create(protocol, wrongHost.address, { tls: { ca, servername: 'wrong.example' } })
        await store.ready()
        await roundTrip(store, wrongHost)
      })

      it('bursts of concurrent saves followed by silence all complete: memcached’s TLS read stall is nudged', async () => {
        // memcached 1.6 can leave the last request of a TLS record holding several unread until
        // more bytes arrive; without the store's no-op nudge some of these saves waited for the timeout.
        const store = create(protocol, good.address, { tls: { ca } })
        const sess = plainSession({ data: 'x'.repeat(2000) })
        let worst = 0
        for (let round = 0; round < 5; round++) {
          await Promise.all(
            Array.from({ length: 50 }, async (_, i) => {
              const started = performance.now()
              await store.set(`burst-${i}`, sess)
              worst = Math.max(worst, performance.now() - started)
            }),
          )
          await sleep(50)
        }
        assert.ok(worst < TIMEOUT_MS / 2, `the slowest save of a burst took ${worst.toFixed(0)} ms`)
        assert.equal(store.diagnostics().requestsInFlight, 0)
      })

      it('mutual TLS: a client certificate signed by the CA (tls: { ca, cert, key }) is accepted', async () => {
        const store = create(protocol, mutual.address, { tls: { ca, ...clientCert } })
        await store.ready()
        await roundTrip(store, mutual)
      })
    })

    describe('verification failures: ETLS for every operation, within the timeout, naming the server', () => {
      it('an unknown CA (a self-signed server certificate, the store trusting the test CA)', async () => {
        const store = create(protocol, untrusted.address, { tls: { ca } })
        const seen = await assertEveryOperationFails(store, untrusted.address, 'ETLS', /self-signed certificate/)
        figures.push(`[${protocol}] unknown CA: ${shown(seen[0])}`, `[${protocol}] unknown CA: ${shown(seen[4])}`)
      })

      it("tls: true verifies against Node's own CA list, where the test CA is not: ETLS", async () => {
        const store = create(protocol, good.address, { tls: true })
        const { err, ms } = await failure(store.ready())
        assert.equal(err.code, 'ETLS', err.message)
        assert.match(err.message, /unable to (get local issuer|verify the first) certificate/)
        assert.ok(ms < BOUND_MS)
      })

      it('a wrong host name, dialled by IP address (127.0.0.1) and by name (localhost)', async () => {
        const byIp = create(protocol, wrongHost.address, { tls: { ca } })
        const ipSeen = await assertEveryOperationFails(
          byIp,
          wrongHost.address,
          'ETLS',
          /Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list/,
        )
        const named = `localhost:${wrongHost.port}`
        const byName = create(protocol, named, { tls: { ca } })
        const nameSeen = await assertEveryOperationFails(
          byName,
          named,
          'ETLS',
          /Hostname\/IP does not match certificate's altnames: Host: localhost\. is not in the cert's altnames: DNS:wrong\.example/,
        )
        figures.push(`[${protocol}] wrong host (IP): ${shown(ipSeen[0])}`, `[${protocol}] wrong host (name): ${shown(nameSeen[4])}`)
      })

      it('rejectUnauthorized: false is the explicit opt-out: it connects to the unknown CA and to the wrong host alike', async () => {
        // Nothing else turns verification off: the same stores without it fail above. The opt-out
        // keeps the channel encrypted but no longer knows who is at the other end.
        for (const server of [untrusted, wrongHost]) {
          const store = create(protocol, server.address, { tls: { rejectUnauthorized: false } })
          await store.ready()
          await roundTrip(store, server)
        }
      })

      it('mutual TLS without a client certificate: ETLS "certificate required", deterministically', async () => {
        // With TLS 1.3 the client finishes its side of the handshake before the server checks the
        // (empty) client certificate: the store's socket is already "secure" and the request written
        // when memcached's alert 116 (certificate required) arrives. Node reports that alert on the
        // socket as ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED every time (memcached sends it before
        // closing, so no RST or bare close wins the race): ETLS, not ECONNCLOSED, and the request
        // counts as not sent (the server never accepted the handshake, so it read none of it).
        const before = await commandCounters(mutual)
        const store = create(protocol, mutual.address, { tls: { ca } })
        const seen = await assertEveryOperationFails(
          store,
          mutual.address,
          'ETLS',
          /requires a client certificate .*set `tls.cert` and `tls.key`/,
        )
        assert.equal(seen[0].err.sent, false, seen[0].err.message)
        figures.push(`[${protocol}] mutual TLS without a client certificate: ${shown(seen[0])}`)
        // The harness's own connection presents the client certificate: no request reached memcached.
        assert.deepEqual(await commandCounters(mutual), before, 'no get, set, touch or delete was executed')
      })
    })

    describe('nothing in clear when tls is set', () => {
      it('against a listener that records bytes: ETLS within the timeout, and it only ever received TLS handshake records', async () => {
        const listener = await recordingListener()
        try {
          const store = create(protocol, listener.address, { tls: { ca } })
          const sid = randomId()
          const seen = await assertEveryOperationFails(store, listener.address, 'ETLS', /TLS handshake/)
          figures.push(...[0, 4, 5].map((i) => `[${protocol}] TLS store, silent plain listener: ${shown(seen[i])}`))
          await store.set(sid, plainSession({ secret: 'in-clear?' })).catch(() => {})
          await sleep(50)
          const received = listener.received()
          assert.ok(received.length >= 2, `the store connected (${received.length} connections)`)
          for (const bytes of received) {
            assert.ok(bytes.length > 0, 'each connection sent its ClientHello')
            assert.equal(bytes[0], 0x16, `the first byte is a TLS handshake record, not ${bytes.subarray(0, 8).toString('hex')}`)
            const types = tlsRecordTypes(bytes)
            assert.ok(Array.isArray(types), `${types}`)
            assert.deepEqual(new Set(types), new Set([0x16]), 'handshake records only: no application data, nothing else')
            // Every byte is inside a handshake record (above), so no command went out in clear. Only
            // long markers are searched for besides: a ClientHello's random and key shares can hold
            // a short one such as "md " by chance (it happened once in a few hundred runs).
            const text = bytes.toString('latin1')
            for (const clear of ['lru_crawler', sid, store.prefix, 'in-clear?']) {
              assert.ok(!text.includes(clear), `${JSON.stringify(clear)} went out in clear`)
            }
          }
        } finally {
          await listener.close()
        }
      })

      it('against a plain memcached: ETLS within the timeout, and memcached ran no command', async () => {
        const before = await commandCounters(plain)
        const store = create(protocol, plain.address, { tls: { ca } })
        const sid = randomId()
        const seen = await assertEveryOperationFails(store, plain.address, 'ETLS', /wrong version number|TLS handshake/)
        figures.push(`[${protocol}] TLS store, plain memcached: ${shown(seen[0])}`)
        await store.set(sid, plainSession()).catch(() => {})
        assert.deepEqual(await commandCounters(plain), before, 'no get, set, touch or delete reached memcached')
        assert.equal(await plain.inspect(store.prefix + sid), undefined)
      })

      it('a plain store against a TLS port fails within the timeout, and ready() says to set `tls`', async () => {
        const store = create(protocol, good.address)
        const { err, ms } = await failure(store.ready())
        figures.push(`[${protocol}] plain store, TLS port, ready(): ${err.message}`)
        assert.ok(ms < BOUND_MS, `ready() settled in ${Math.round(ms)} ms`)
        assert.match(err.message, literally(good.address))
        assert.match(err.message, /set `tls`/)
        for (const operation of [() => store.set(randomId(), plainSession()), () => store.get(randomId())]) {
          const failed = await failure(operation())
          assert.ok(failed.ms < BOUND_MS)
          assert.equal(failed.err.server, good.address)
        }
      })
    })

    it('kill + restart and freeze + thaw of a TLS server under load: failures come fast, recovery within seconds', async () => {
      const server = await MemcachedServer.start(tlsServer(certs.server))
      try {
        const store = create(protocol, server.address, { tls: { ca } })
        const sids = Array.from({ length: 16 }, randomId)
        await Promise.all(sids.map((sid) => store.set(sid, plainSession({ sid }))))
        const traffic = load(6, (i) => {
          const sid = sids[i % sids.length]
          return i % 3 === 0 ? store.set(sid, plainSession({ i })) : i % 3 === 1 ? store.get(sid) : store.touch(sid, plainSession())
        })
        await eventually('60 operations settled before the faults', () => traffic.outcomes.length > 60, 10_000)

        const killedAt = performance.now()
        await server.kill()
        await sleep(700)
        const restartingAt = performance.now()
        await server.restart()
        const restartedAt = performance.now()
        const killRecovery = await recovery(traffic.outcomes, restartedAt)
        await sleep(300)

        const frozenAt = performance.now()
        server.freeze()
        await sleep(2000)
        server.thaw()
        const thawedAt = performance.now()
        const freezeRecovery = await recovery(traffic.outcomes, thawedAt)
        await sleep(300)
        const outcomes = await traffic.stop()

        const warm = outcomes.filter((o) => o.at + o.ms < killedAt)
        assert.ok(warm.length > 50 && warm.every((o) => o.code === undefined), `steady before the faults: ${tally(warm)}`)
        const killed = outcomes.filter((o) => o.at >= killedAt && o.at < restartingAt)
        // Ops written to a frozen server just before the thaw may still be answered after it.
        const frozen = outcomes.filter((o) => o.at >= frozenAt && o.at < thawedAt - TIMEOUT_MS - 50)
        for (const [fault, window, codes] of [
          ['kill', killed, ['ECONNECTION', 'ECONNCLOSED', 'ESERVERDOWN', 'ETIMEDOUT']],
          // Not ETLS: a handshake that stalls on a server that answered before is a stopped server, not a TLS problem.
          ['freeze', frozen, ['ETIMEDOUT', 'ESERVERDOWN']],
        ] as const) {
          assert.ok(window.length > 10, `${fault}: load ran during the fault (${window.length})`)
          for (const o of window) {
            assert.ok(o.code !== undefined, `${fault}: nothing succeeds while the server is down`)
            assert.ok((codes as readonly string[]).includes(o.code), `${fault}: ${o.error?.message}`)
            assert.equal(o.error?.server, server.address)
          }
          figures.push(`[${protocol}] ${fault}: ${window.length} operations during the fault, worst ${worst(window)} ms; ${tally(window)}`)
        }
        const slowest = worst(outcomes)
        assert.ok(slowest < BOUND_MS, `every operation settled within ${BOUND_MS} ms (worst ${slowest} ms)`)
        // Once one request succeeded the server is up again: everything started later succeeds.
        for (const [fault, recoveredAt] of [
          ['kill', killRecovery.at],
          ['freeze', freezeRecovery.at],
        ] as const) {
          const later = outcomes.filter((o) => o.at > recoveredAt + 50 && (fault === 'freeze' || o.at + o.ms < frozenAt))
          assert.ok(later.length > 10 && later.every((o) => o.code === undefined), `${fault}: steady after recovery: ${tally(later)}`)
        }
        figures.push(
          `[${protocol}] recovery: ${Math.round(killRecovery.ms)} ms after the restart, ${Math.round(freezeRecovery.ms)} ms after the thaw`,
        )
        assert.ok(killRecovery.ms < 3000 && freezeRecovery.ms < 3000)
        assertIdle(store)
      } finally {
        await server.stop()
      }
    })
  })
}

function worst(outcomes: readonly Outcome[]): number {
  return Math.round(largest(outcomes.map((o) => Math.max(0, o.ms))))
}

/** When (performance.now()) the first operation succeeded after `since`, and how long after `since`; waits up to 5 s. */
async function recovery(outcomes: readonly Outcome[], since: number): Promise<{ at: number; ms: number }> {
  for (;;) {
    const first = outcomes.find((o) => o.code === undefined && o.at + o.ms >= since)
    if (first) return { at: first.at + first.ms, ms: first.at + first.ms - since }
    if (performance.now() - since > 5000) throw new Error(`no success within 5 s: ${tally(outcomes.filter((o) => o.at >= since))}`)
    await sleep(5)
  }
}
