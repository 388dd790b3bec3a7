// Starts the example app. memcached: MEMCACHE_SERVERS if set, else a local memcached on a free port.

import { createApp } from '../examples/app.ts'
import { MemcacheStore } from '../lib/index.ts'
import { MemcachedServer } from '../spec/harness/memcached.ts'

let local: MemcachedServer | undefined
if (process.env.MEMCACHE_SERVERS) {
  console.log(`Using memcached at ${process.env.MEMCACHE_SERVERS} (MEMCACHE_SERVERS)`)
} else {
  local = await MemcachedServer.start()
  console.log(`Started memcached on ${local.address} (set MEMCACHE_SERVERS to use your own)`)
}
const store = new MemcacheStore({ servers: process.env.MEMCACHE_SERVERS ?? local?.address })
await store.ready()
const port = Number(process.env.PORT ?? 3000)
const server = createApp(store).listen(port, '127.0.0.1', () => {
  console.log(`Demo app: http://localhost:${port}/  (Ctrl-C to stop)`)
})

async function shutdown(): Promise<void> {
  server.close()
  await store.close()
  await local?.stop()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
