// Starts the example app. memcached: MEMCACHE_SERVERS if set, else a local memcached on a free port.
// When the app cannot start (port taken, memcached unreachable), it says why, stops the memcached it
// started and exits with 1.

import type { Server } from 'node:http'
import { createApp, demoSecret, listen } from '../examples/app.ts'
import { MemcacheStore } from '../lib/index.ts'
import { MemcachedServer } from '../spec/harness/memcached.ts'

let local: MemcachedServer | undefined
let store: MemcacheStore | undefined
let server: Server | undefined

async function stop(code: number): Promise<never> {
  server?.close()
  await store?.close()
  await local?.stop()
  process.exit(code)
}

process.on('SIGINT', () => void stop(0))
process.on('SIGTERM', () => void stop(0))

try {
  if (process.env.MEMCACHE_SERVERS) {
    console.log(`Using memcached at ${process.env.MEMCACHE_SERVERS} (MEMCACHE_SERVERS)`)
  } else {
    local = await MemcachedServer.start()
    console.log(`Started memcached on ${local.address} (set MEMCACHE_SERVERS to use your own)`)
  }
  store = new MemcacheStore({ servers: process.env.MEMCACHE_SERVERS ?? local?.address })
  await store.ready()
  const port = Number(process.env.PORT ?? 3000)
  server = await listen(createApp(store, demoSecret()), port, '127.0.0.1')
  console.log(`Demo app: http://localhost:${port}/  (Ctrl-C to stop)`)
} catch (err) {
  console.error(`Demo app not started: ${err instanceof Error ? err.message : String(err)}`)
  await stop(1)
}
