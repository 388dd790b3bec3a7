// Messages that point the right way: an async serializer, a refused default address, an address
// from the environment.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { MemcacheStoreError } from '../lib/index.ts'
import { freePort } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { plainSession, randomId, useMemcached } from './harness/stores.ts'

const file = useMemcached()
const { stores } = file

describe('messages that say what to change', () => {
  it('a serializer whose parse returns a Promise: ESERIALIZE saying so, not "no cookie object"', async () => {
    const store = stores.create({ serializer: { stringify: JSON.stringify, parse: async (text: string) => JSON.parse(text) } })
    const sid = randomId()
    await store.set(sid, plainSession({ v: 1 }))
    await assert.rejects(store.get(sid), (err: MemcacheStoreError) => {
      assert.equal(err.code, 'ESERIALIZE')
      assert.match(err.message, /parse returned a Promise; it must return the session synchronously/)
      return true
    })
  })

  it('a refused address that came from MEMCACHE_SERVERS says so', async () => {
    const dead = `127.0.0.1:${await freePort()}`
    const saved = process.env.MEMCACHE_SERVERS
    const savedCachier = process.env.MEMCACHIER_SERVERS
    process.env.MEMCACHE_SERVERS = dead
    delete process.env.MEMCACHIER_SERVERS
    let store: ReturnType<typeof createStore>
    try {
      store = createStore({ logger: false, timeout: 500 })
    } finally {
      if (saved === undefined) delete process.env.MEMCACHE_SERVERS
      else process.env.MEMCACHE_SERVERS = saved
      if (savedCachier !== undefined) process.env.MEMCACHIER_SERVERS = savedCachier
    }
    try {
      await assert.rejects(store.get(randomId()), (err: MemcacheStoreError) => {
        assert.equal(err.code, 'ECONNECTION')
        assert.equal(err.server, dead)
        assert.match(err.message, /ECONNREFUSED.*the address came from the MEMCACHE_SERVERS environment variable/)
        return true
      })
    } finally {
      await store.close()
    }
  })

  it('the default address (no servers configured) says it was the default and how to change it', async () => {
    const { clientHints, resolveOptions } = await import('../lib/options.ts')
    const { createClient } = await import('../lib/memcached/index.ts')
    // The default is localhost:11211; to make it refuse reliably, the same hint is checked on a dead port.
    const options = resolveOptions({ timeout: 500 }, {})
    assert.equal(options.serversFrom, 'default')
    const client = createClient({
      ...options,
      servers: [{ host: '127.0.0.1', port: await freePort(), weight: 1, credentials: undefined }],
      hints: clientHints(options),
    })
    try {
      await assert.rejects(client.get('k', { deadline: performance.now() + 500, sent: false, answered: false }), (err: Error) =>
        /no servers were configured, so the default localhost:11211 was used: set the `servers` option or MEMCACHE_SERVERS/.test(
          err.message,
        ),
      )
    } finally {
      client.close()
    }
  })
})
