// The store's counters as Prometheus metrics, and two health routes: a cheap one from diagnostics()
// (no I/O: for liveness probes hit every few seconds) and a deep one from ready() (a round trip to
// every memcached: for readiness). prom-client is the example's dependency, not the package's.
import express from 'express'
import session from 'express-session'
import client from 'prom-client'
import { MemcacheStore } from '../lib/index.ts'

export function createMonitoredApp(store: MemcacheStore, secret: string) {
  const registry = new client.Registry()
  const operations = new client.Gauge({
    name: 'session_store_operations_total',
    help: 'Store operations by operation and outcome (success, or the error code)',
    labelNames: ['operation', 'outcome'],
    registers: [registry],
  })
  const lookups = new client.Gauge({
    name: 'session_store_get_total',
    help: 'Session lookups by result (hit or miss)',
    labelNames: ['result'],
    registers: [registry],
  })
  const latency = new client.Gauge({
    name: 'session_store_latency_ms',
    help: 'Store operation latency percentiles in milliseconds',
    labelNames: ['operation', 'quantile'],
    registers: [registry],
  })
  const serverUp = new client.Gauge({
    name: 'session_store_server_up',
    help: '1 while a memcached server answers, 0 while it is down or being probed',
    labelNames: ['server'],
    registers: [registry],
  })
  for (const [name, help] of [
    ['session_store_merges_total', 'Saves that lost a CAS race and merged'],
    ['session_store_collisions_total', 'New sessions whose ID was already taken'],
    ['session_store_bytes_written_total', 'Bytes of sessions written to memcached'],
  ] as const) {
    new client.Gauge({ name, help, registers: [registry] })
  }

  // Collected when Prometheus scrapes: the store keeps the counts, the gauges only mirror them.
  const collect = () => {
    const diagnostics = store.diagnostics()
    for (const [operation, counts] of Object.entries(diagnostics.operations)) {
      operations.set({ operation, outcome: 'success' }, counts.successes)
      for (const [code, count] of Object.entries(counts.errors)) operations.set({ operation, outcome: code }, count)
      latency.set({ operation, quantile: '0.5' }, counts.p50)
      latency.set({ operation, quantile: '0.99' }, counts.p99)
      if (operation === 'get') {
        lookups.set({ result: 'hit' }, counts.hits ?? 0)
        lookups.set({ result: 'miss' }, counts.misses ?? 0)
      }
    }
    for (const server of diagnostics.servers) serverUp.set({ server: server.address }, server.state === 'up' ? 1 : 0)
    ;(registry.getSingleMetric('session_store_merges_total') as client.Gauge).set(diagnostics.merges)
    ;(registry.getSingleMetric('session_store_collisions_total') as client.Gauge).set(diagnostics.collisions)
    ;(registry.getSingleMetric('session_store_bytes_written_total') as client.Gauge).set(diagnostics.bytesWritten)
  }

  const app = express()
  app.get('/metrics', async (_req, res) => {
    collect()
    res.type(registry.contentType).send(await registry.metrics())
  })
  // Liveness: cheap, no I/O. Unhealthy only when every server is down.
  app.get('/healthz', (_req, res) => {
    const { servers, operationsInFlight } = store.diagnostics()
    const up = servers.filter((server) => server.state === 'up').length
    res.status(up > 0 ? 200 : 503).json({ up, servers, operationsInFlight })
  })
  // Readiness: a round trip to every server.
  app.get('/readyz', async (_req, res) => {
    try {
      await store.ready()
      res.json({ ready: true })
    } catch (err) {
      res.status(503).json({ ready: false, error: (err as Error).message })
    }
  })
  app.use(session({ store, secret, resave: false, saveUninitialized: false }))
  app.get('/', (req, res) => {
    const views = ((req.session as { views?: number }).views ?? 0) + 1
    ;(req.session as { views?: number }).views = views
    res.send(`${views} views`)
  })
  return app
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const secret = process.env.SESSION_SECRET
  if (!secret) throw new Error('SESSION_SECRET is not set')
  const store = new MemcacheStore()
  createMonitoredApp(store, secret).listen(Number(process.env.PORT ?? 3000), () => {
    console.log('http://localhost:3000/  /metrics  /healthz  /readyz')
  })
}
