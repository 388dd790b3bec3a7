// Per-operation overhead of the store: get, set and touch of 200 B sessions at 1 and 50 in flight,
// against raw memjs and the minimal pipelined client (bench/pipelined-client.ts, the client-side
// limit), in interleaved rounds (ratios to the pipelined client, round by round). For working on
// the hot path:
//   npm run build && node --import tsx bench/overhead.ts
// BENCH_BASELINE=path/to/index.js adds an older build (e.g. `git worktree` + `npm run build`, or a
// copy of dist/ made before a change) as "baseline build", measured in the same rounds: before/after
// figures of one run. BENCH_PROFILE=get:1 (or set:50, ...) runs only the store in a loop for
// BENCH_SECONDS (default 10), for `node --cpu-prof --import tsx bench/overhead.ts`.
// Starts its own memcached (-t 2, the harness's default), or uses MEMCACHE_SERVERS.
import { pathToFileURL } from 'node:url'
import type { SessionData } from 'express-session'
import memjs from 'memjs'
import type * as Package from '../lib/index.ts'
import { MemcachedServer } from '../spec/harness/memcached.ts'
import { MemcacheStore } from './package.ts'
import { sessionPayload } from './payload.ts'
import { PipelinedClient } from './pipelined-client.ts'
import { pairedRatios, rotation, summarize } from './stats.ts'

type Done = (err?: unknown) => void
interface Variant {
  name: string
  get(id: string, done: Done): void
  set(id: string, sess: Record<string, unknown>, done: Done): void
  touch(id: string, sess: Record<string, unknown>, done: Done): void
  close(): Promise<void>
}

const POOL = 500
const SAMPLE_MS = Number(process.env.BENCH_SAMPLE_MS ?? 300)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9)
const SIZE = Number(process.env.BENCH_BYTES ?? 200)
const TTL = 86_400

function storeVariant(name: string, Store: typeof Package.MemcacheStore, servers: string, protocol: 'binary' | 'meta'): Variant {
  const store = new Store({ servers, prefix: `ovh:${name.replace(/\W/g, '')}:`, logger: false, protocol })
  return {
    name,
    get: (id, done) => store.get(id, done),
    set: (id, sess, done) => store.set(id, sess as unknown as SessionData, done),
    touch: (id, sess, done) => store.touch(id, sess as unknown as SessionData, done),
    close: () => store.close(),
  }
}

function rawVariant(servers: string): Variant {
  const client = memjs.Client.create(servers, { logger: { log() {} }, keepAlive: true })
  return {
    name: 'raw memjs',
    get: (id, done) =>
      client.get(`ovh:raw:${id}`, (err, value) => {
        if (value) JSON.parse(value.toString())
        done(err ?? undefined)
      }),
    set: (id, sess, done) => client.set(`ovh:raw:${id}`, JSON.stringify(sess), { expires: TTL }, (err) => done(err ?? undefined)),
    touch: (id, _sess, done) => client.touch(`ovh:raw:${id}`, TTL, (err) => done(err ?? undefined)),
    close: async () => client.close(),
  }
}

function pipelinedVariant(servers: string): Variant {
  const client = new PipelinedClient(servers.split(',')[0])
  return {
    name: 'pipelined client',
    get: (id, done) => client.get(`ovh:pip:${id}`, done),
    set: (id, sess, done) => client.set(`ovh:pip:${id}`, sess, TTL, done),
    touch: (id, _sess, done) => client.touch(`ovh:pip:${id}`, TTL, done),
    close: async () => client.close(),
  }
}

function loop(op: (n: number, done: Done) => void, inFlight: number, ms: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now()
    const end = start + ms
    let started = 0
    let completed = 0
    let active = inFlight
    const done: Done = (err) => {
      if (err) return reject(err)
      completed++
      if (performance.now() < end) return op(started++, done)
      if (--active === 0) resolve((completed * 1000) / (performance.now() - start))
    }
    for (let i = 0; i < inFlight; i++) op(started++, done)
  })
}

const local = process.env.MEMCACHE_SERVERS ? undefined : await MemcachedServer.start({ memoryMb: 256 })
const servers = process.env.MEMCACHE_SERVERS ?? (local as MemcachedServer).address
const protocol = process.env.BENCH_PROTOCOL === 'meta' ? 'meta' : 'binary'
const sess = sessionPayload(SIZE)
const variants: Variant[] = [rawVariant(servers), pipelinedVariant(servers), storeVariant('this store', MemcacheStore, servers, protocol)]
if (process.env.BENCH_BASELINE) {
  const baseline = (await import(pathToFileURL(process.env.BENCH_BASELINE).href)) as typeof Package
  variants.push(storeVariant('baseline build', baseline.MemcacheStore, servers, protocol))
}
const id = (n: number) => `s${n % POOL}`
for (const v of variants) await loop((n, done) => v.set(id(n), sess, done), 50, 300)

const profile = process.env.BENCH_PROFILE
if (profile) {
  const [operation, inFlight] = profile.split(':')
  const ours = variants[process.env.BENCH_PROFILE_BASELINE === '1' ? 3 : 2]
  const op =
    operation === 'set'
      ? (n: number, done: Done) => ours.set(id(n), sess, done)
      : operation === 'touch'
        ? (n: number, done: Done) => ours.touch(id(n), sess, done)
        : (n: number, done: Done) => ours.get(id(n), done)
  // BENCH_HEAP_PROFILE=file.heapprofile: allocation sites over the loop (sampled, collected objects included).
  const heapFile = process.env.BENCH_HEAP_PROFILE
  const inspector = heapFile ? new (await import('node:inspector')).Session() : undefined
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => inspector?.post(method, params, (err, result) => (err ? reject(err) : resolve(result))))
  if (inspector) {
    inspector.connect()
    await post('HeapProfiler.startSampling', {
      samplingInterval: 512,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    })
  }
  if (process.env.BENCH_HEAP_SNAPSHOT) {
    const file = process.env.BENCH_HEAP_SNAPSHOT
    setTimeout(() => (async () => (await import('node:v8')).writeHeapSnapshot(file))(), 2000)
  }
  const rate = await loop(op, Number(inFlight), Number(process.env.BENCH_SECONDS ?? 10) * 1000)
  if (inspector && heapFile) {
    const { profile } = (await post('HeapProfiler.stopSampling')) as { profile: unknown }
    ;(await import('node:fs')).writeFileSync(heapFile, JSON.stringify(profile))
  }
  console.log(`${operation} x${inFlight}: ${Math.round(rate)} ops/s`)
} else {
  console.log(
    `${SIZE} B sessions, ${protocol}, ${ROUNDS} rounds of ${SAMPLE_MS} ms; ops/s median [min-max], ratio to the pipelined client round by round`,
  )
  const run = (v: Variant, operation: 'get' | 'set' | 'touch') => (n: number, done: Done) =>
    operation === 'get' ? v.get(id(n), done) : operation === 'set' ? v.set(id(n), sess, done) : v.touch(id(n), sess, done)
  for (const operation of ['get', 'set', 'touch'] as const) {
    for (const inFlight of [1, 50]) {
      // BENCH_CELLS="get:50,set:1" measures only those.
      if (process.env.BENCH_CELLS && !process.env.BENCH_CELLS.split(',').includes(`${operation}:${inFlight}`)) continue
      const samples: Record<string, number[]> = {}
      for (const v of variants) await loop(run(v, operation), inFlight, 100)
      for (let round = 0; round < ROUNDS; round++) {
        for (const v of rotation(variants, round)) {
          samples[v.name] = [...(samples[v.name] ?? []), await loop(run(v, operation), inFlight, SAMPLE_MS)]
        }
      }
      const line = variants.map((v) => {
        const s = summarize(samples[v.name])
        const r = summarize(pairedRatios(samples[v.name], samples['pipelined client']))
        return `${v.name} ${Math.round(s.median)} [${Math.round(s.min)}-${Math.round(s.max)}] ${r.median.toFixed(2)}x [${r.min.toFixed(2)}-${r.max.toFixed(2)}]`
      })
      if (samples['baseline build']) {
        const r = summarize(pairedRatios(samples['this store'], samples['baseline build']))
        line.push(`this/baseline ${r.median.toFixed(2)}x [${r.min.toFixed(2)}-${r.max.toFixed(2)}]`)
      }
      console.log(`${operation} x${inFlight}: ${line.join(' | ')}`)
    }
  }
}
await Promise.all(variants.map((v) => v.close()))
await local?.stop()
process.exit(0)
