// A store speaking the other protocol than its server: each fails within the timeout, ready() says
// which `protocol` to use, and the server executes nothing it was sent. Every store here chooses its
// protocol explicitly, and every server its -B mode.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { MemcacheStore, type MemcacheStoreOptions } from '../lib/index.ts'
import { BACKOFF_MAX_MS } from '../lib/memcached/health.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import { failure, literally, withoutEnvCredentials } from './harness/outcomes.ts'
import { assertIdle, plainSession, randomId, uniquePrefix } from './harness/stores.ts'

const TIMEOUT_MS = 500
const BOUND_MS = TIMEOUT_MS + 400

let ascii: MemcachedServer
let binaryOnly: MemcachedServer
let tokens: MemcachedServer
const stores: MemcacheStore[] = []
const figures: string[] = []

before(async () => {
  ;[ascii, binaryOnly, tokens] = await Promise.all([
    MemcachedServer.start({ protocol: 'ascii' }),
    // Binary only, without SASL: readiness is a TCP connect (the harness's text check would hang).
    MemcachedServer.start({ args: ['-B', 'binary'], sasl: true }),
    MemcachedServer.start({ tokens: [['alice', 'pw']] }),
  ])
})
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all([ascii, binaryOnly, tokens].map((server) => server?.stop()))
  if (figures.length > 0)
    console.log(`\nProtocol mismatch figures (timeout ${TIMEOUT_MS} ms):\n${figures.map((f) => `  - ${f}`).join('\n')}`)
})

function create(options: MemcacheStoreOptions & Pick<Required<MemcacheStoreOptions>, 'protocol' | 'servers'>): MemcacheStore {
  const store = withoutEnvCredentials(() => new MemcacheStore({ prefix: uniquePrefix(), timeout: TIMEOUT_MS, logger: false, ...options }))
  stores.push(store)
  return store
}

/** set and get (the first on a new connection, after any back-off) fail within the bound naming the server. */
async function assertOperationsFail(store: MemcacheStore, server: MemcachedServer, codes: readonly string[]): Promise<string> {
  await sleep(BACKOFF_MAX_MS + 50)
  const sid = randomId()
  let first = ''
  for (const operation of [() => store.set(sid, plainSession()), () => store.get(sid), () => store.set(randomId(), plainSession())]) {
    const { err, ms } = await failure(operation())
    assert.ok(codes.includes(err.code), err.message)
    assert.equal(err.server, server.address)
    assert.ok(ms < BOUND_MS, `settled in ${Math.round(ms)} ms: ${err.message}`)
    first ||= `${err.code} (${Math.round(ms)} ms) ${err.message}`
  }
  assertIdle(store)
  return first
}

describe('binary store, text-only server (-B ascii)', () => {
  it('operations fail within the timeout; ready() says the server did not answer in binary and suggests protocol: meta', async () => {
    const store = create({ protocol: 'binary', servers: ascii.address })
    const { err, ms } = await failure(store.ready())
    figures.push(`binary store, -B ascii: ready() (${Math.round(ms)} ms): ${err.message}`)
    assert.ok(ms < BOUND_MS, `ready() settled in ${Math.round(ms)} ms`)
    assert.equal(err.server, ascii.address)
    // The no-op's opcode byte is 0x0a: memcached reads it as the end of a text line and answers ERROR,
    // which the binary reader refuses at its first byte; a request without that byte gets no answer.
    assert.match(
      err.message,
      new RegExp(
        `${literally(ascii.address).source} \\((no response within ${TIMEOUT_MS} ms|the reply starts with 0x45 \\('E'\\), text not binary)`,
      ),
    )
    assert.match(
      err.message,
      /accepts only text and meta commands \(memcached -B ascii.*\), use `protocol: 'meta'`|the server does not accept the binary protocol \(memcached -B ascii.*\); use `protocol: 'meta'`/,
    )
    figures.push(`binary store, -B ascii: ${await assertOperationsFail(store, ascii, ['ETIMEDOUT', 'ESERVERDOWN', 'EPROTOCOL'])}`)
    // memcached read the binary requests as an unfinished text line: nothing was executed.
    const stats = await ascii.command('stats')
    assert.match(stats, /STAT cmd_set 0\r\n/)
    assert.match(stats, /STAT cmd_get 0\r\n/)
  })

  it('with SASL credentials against a -Y server (text only): no answer to authentication, and the same hint', async () => {
    const store = create({ protocol: 'binary', servers: tokens.address, username: 'alice', password: 'pw' })
    const { err, ms } = await failure(store.ready())
    figures.push(`binary store with credentials, -Y server: ready() (${Math.round(ms)} ms): ${err.message}`)
    assert.ok(ms < BOUND_MS)
    assert.match(err.message, /no answer to authentication within \d+ ms/)
    assert.match(err.message, /use `protocol: 'meta'`/)
    assert.ok(!err.message.includes('pw)') && !err.message.includes(':pw'))
  })

  it('the same server with protocol: meta works (the control)', async () => {
    const store = create({ protocol: 'meta', servers: ascii.address })
    await store.ready()
    const sid = randomId()
    await store.set(sid, plainSession({ ok: true }))
    assert.equal(((await store.get(sid)) as unknown as Record<string, unknown>)?.ok, true)
  })
})

describe('meta store, binary-only server (-B binary)', () => {
  it('operations fail within the timeout; ready() suggests protocol: binary', async () => {
    const store = create({ protocol: 'meta', servers: binaryOnly.address })
    const { err, ms } = await failure(store.ready())
    figures.push(`meta store, -B binary: ready() (${Math.round(ms)} ms): ${err.message}`)
    assert.ok(ms < BOUND_MS, `ready() settled in ${Math.round(ms)} ms`)
    assert.equal(err.server, binaryOnly.address)
    assert.match(err.message, literally(binaryOnly.address))
    assert.match(err.message, /if it speaks only the binary protocol \(SASL, -B binary\), use `protocol: 'binary'`/)
    figures.push(`meta store, -B binary: ${await assertOperationsFail(store, binaryOnly, ['ECONNCLOSED', 'ESERVERDOWN', 'ETIMEDOUT'])}`)
    // The set's connection was closed by memcached (its first bytes are no binary header); ready() again says the same.
    const again = await failure(store.ready())
    figures.push(`meta store, -B binary: ready() after a request (${Math.round(again.ms)} ms): ${again.err.message}`)
    assert.match(again.err.message, /use `protocol: 'binary'`/)
    assert.ok(again.ms < BOUND_MS)
  })

  it('ids() says the server cannot list its keys in the text protocol', async () => {
    const store = create({ protocol: 'meta', servers: binaryOnly.address })
    const { err, ms } = await failure(store.ids())
    assert.equal(err.code, 'ECONNCLOSED')
    assert.match(err.message, /speaks only the binary protocol/)
    assert.ok(ms < BOUND_MS)
  })

  it('the same server with protocol: binary works (the control)', async () => {
    const store = create({ protocol: 'binary', servers: binaryOnly.address })
    await store.ready()
    const sid = randomId()
    await store.set(sid, plainSession({ ok: true }))
    assert.equal(((await store.get(sid)) as unknown as Record<string, unknown>)?.ok, true)
  })
})
