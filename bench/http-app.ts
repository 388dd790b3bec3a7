// One Express + express-session app, on the store named by BENCH_STORE; started as a child process
// by the HTTP benchmark, which loads it from another process. Routes:
//   GET /login  creates a session of about 2 KB (the cookie pool is made with it; loaded without a
//               cookie, every request creates one)
//   GET /read   reads the session: express-session then calls get + touch
//   GET /write  changes the session: get + set
import diagnosticsChannel from 'node:diagnostics_channel'
import { readFileSync, writeFileSync } from 'node:fs'
import { createHistogram } from 'node:perf_hooks'
import connectMemcached from 'connect-memcached'
import connectMemjs from 'connect-memjs'
import { RedisStore } from 'connect-redis'
import express from 'express'
import session from 'express-session'
import { createClient } from 'redis'
import { MemcacheStore } from './package.ts'
import { sessionPayload } from './payload.ts'

/** The store's tracing channel (lib/observability.ts), subscribed to by 'this store, traced'. */
const TRACING_CHANNEL = 'express-session-memcache:operation'

async function createStore(name: string): Promise<session.Store> {
  const servers = process.env.BENCH_MEMCACHE_SERVERS ?? ''
  const prefix = `http${process.pid}:`
  switch (name) {
    case 'MemoryStore':
      return new session.MemoryStore()
    case 'this store':
    case 'this store, genid':
    // Get-and-touch off: the parent starts this process with EXPRESS_SESSION_MEMCACHE_GET_AND_TOUCH=0.
    case 'this store, no get-and-touch':
      return new MemcacheStore({ servers, prefix, logger: false })
    case 'this store, traced':
      traceLatencies()
      return new MemcacheStore({ servers, prefix, logger: false })
    case 'this store (meta)':
      return new MemcacheStore({ servers, prefix, logger: false, protocol: 'meta' })
    case 'this store, TLS':
      return new MemcacheStore({
        servers: process.env.BENCH_MEMCACHE_TLS_SERVERS,
        prefix,
        logger: false,
        tls: { ca: readFileSync(process.env.BENCH_TLS_CA ?? '') },
      })
    case 'this store, touchAfter 60':
      return new MemcacheStore({ servers, prefix, logger: false, touchAfter: 60 })
    case 'this store, 3 servers':
      return new MemcacheStore({ servers: process.env.BENCH_MEMCACHE_CLUSTER, prefix, logger: false })
    case 'this store, 3 servers, replicas 1':
      return new MemcacheStore({ servers: process.env.BENCH_MEMCACHE_CLUSTER, prefix, logger: false, replicas: 1 })
    case 'this store, encrypted':
      return new MemcacheStore({ servers, prefix, logger: false, secret: 'benchmark secret, 32 bytes or more!' })
    case 'connect-memjs':
      return new (connectMemjs(session))({ servers: servers.split(','), prefix, logger: { log() {} }, keepAlive: true })
    case 'connect-memjs, no-op touch': {
      const store = new (connectMemjs(session))({ servers: servers.split(','), prefix, logger: { log() {} }, keepAlive: true })
      return Object.assign(store, { touch: (_sid: string, _sess: unknown, callback?: (err?: unknown) => void) => callback?.() })
    }
    case 'connect-memcached':
      return new (connectMemcached(session))({ hosts: servers.split(','), prefix })
    case 'connect-redis': {
      const client = createClient({ url: process.env.BENCH_REDIS_URL })
      await client.connect()
      return new RedisStore({ client, prefix })
    }
    default:
      throw new Error(`unknown BENCH_STORE ${JSON.stringify(name)}`)
  }
}

/** What an APM would do: every operation's latency recorded in a histogram, from the tracing channel. */
function traceLatencies(): void {
  const histogram = createHistogram()
  const started = new WeakMap<object, number>()
  diagnosticsChannel.tracingChannel(TRACING_CHANNEL).subscribe({
    start: (trace) => void started.set(trace as object, performance.now()),
    end: () => {},
    asyncStart: () => {},
    asyncEnd: (trace) => {
      const at = started.get(trace as object)
      if (at !== undefined) histogram.record(Math.max(1, Math.round((performance.now() - at) * 1000)))
    },
    error: () => {},
  })
}

async function main(): Promise<void> {
  const store = await createStore(process.env.BENCH_STORE ?? '')
  const { cart } = sessionPayload(2_000)
  const app = express()
  let requests = 0
  app.use((_req, _res, next) => {
    requests++
    next()
  })
  const genid = process.env.BENCH_STORE === 'this store, genid' ? { genid: (store as InstanceType<typeof MemcacheStore>).genid } : {}
  app.use(session({ store, secret: 'benchmark secret', resave: false, saveUninitialized: false, cookie: { maxAge: 86_400_000 }, ...genid }))
  app.get('/login', (req, res) => {
    const sess = req.session as unknown as Record<string, unknown>
    sess.user = { id: 4242, name: 'Ada' }
    sess.cart = cart
    sess.count = 0
    res.send('ok')
  })
  app.get('/read', (req, res) => {
    res.send(String((req.session as unknown as Record<string, unknown>).count ?? 'none'))
  })
  app.get('/write', (req, res) => {
    const sess = req.session as unknown as Record<string, number>
    sess.count = (sess.count ?? 0) + 1
    res.send(String(sess.count))
  })
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address()
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 })
  })
  process.on('message', (message: { type?: string }) => {
    // CPU time this process used so far (user + system, microseconds): per request, it does not
    // depend on how much of the machine other processes took meanwhile.
    if (message.type === 'cpu') {
      const { user, system } = process.cpuUsage()
      process.send?.({ cpuMicros: user + system, requests })
    }
  })
  // BENCH_HEAP_PROFILE=file: allocation sites while the app runs (sampled, collected objects
  // included), written when the benchmark disconnects; for bench/profile.ts.
  const heapFile = process.env.BENCH_HEAP_PROFILE
  if (heapFile) {
    const inspector = new (await import('node:inspector')).Session()
    inspector.connect()
    inspector.post('HeapProfiler.startSampling', {
      samplingInterval: 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: !process.env.BENCH_HEAP_SURVIVORS,
    })
    process.on('disconnect', () =>
      inspector.post('HeapProfiler.stopSampling', (err, result) => {
        if (!err) writeFileSync(heapFile, JSON.stringify(result.profile))
        process.exit(0)
      }),
    )
  } else process.on('disconnect', () => process.exit(0))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
