// What the CAS merge costs when nothing conflicts: saves of sessions loaded from the store (a CAS
// SET, merge on) against the same saves with `merge: false` (REPLACE) and against plain upserts
// (SET of data the store did not load, no CAS). 50 saves in flight, 2 KB sessions, rounds that
// alternate the three, ratios taken round by round.
// Run: npm run build && node --import tsx bench/cas.ts   (starts its own memcached, or uses MEMCACHE_SERVERS)
import type { SessionData } from 'express-session'
import { MemcachedServer } from '../spec/harness/memcached.ts'
import { MemcacheStore } from './package.ts'
import { sessionPayload } from './payload.ts'
import { pairedRatios, rotation, summarize } from './stats.ts'

const POOL = 500
const IN_FLIGHT = 50
const SAMPLE_MS = Number(process.env.BENCH_SAMPLE_MS ?? 1000)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9)

interface Variant {
  name: string
  save(n: number): Promise<void>
  close(): Promise<void>
}

async function variant(name: string, servers: string, merge: boolean, loaded: boolean): Promise<Variant> {
  const store = new MemcacheStore({ servers, prefix: `cas-bench-${name.split(' ')[0]}-${merge}-${loaded}:`, merge, logger: false })
  const payload = sessionPayload(2_000) as unknown as SessionData
  const sessions: SessionData[] = []
  for (let n = 0; n < POOL; n++) {
    await store.set(`s${n}`, payload)
    // A session returned by get remembers its CAS: saving it is the loaded-session (CAS) path.
    sessions.push(loaded ? ((await store.get(`s${n}`)) as SessionData) : payload)
  }
  return { name, save: (n) => store.set(`s${n % POOL}`, sessions[n % POOL]), close: () => store.close() }
}

async function savesPerSecond(v: Variant, ms: number): Promise<number> {
  const end = performance.now() + ms
  const start = performance.now()
  let next = 0
  let done = 0
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < end) {
        await v.save(next++)
        done++
      }
    }),
  )
  return (done * 1000) / (performance.now() - start)
}

const local = process.env.MEMCACHE_SERVERS ? undefined : await MemcachedServer.start({ memoryMb: 256 })
const servers = process.env.MEMCACHE_SERVERS ?? (local as MemcachedServer).address
const variants = [
  await variant('CAS save (merge on)', servers, true, true),
  await variant('REPLACE save (merge off)', servers, false, true),
  await variant('plain SET (no CAS)', servers, true, false),
]
for (const v of variants) await savesPerSecond(v, 500) // warm-up
const samples: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]))
for (let round = 0; round < ROUNDS; round++) {
  for (const v of rotation(variants, round)) samples[v.name].push(await savesPerSecond(v, SAMPLE_MS))
}
console.log(`\nSaves per second, ${IN_FLIGHT} in flight, 2 KB sessions, ${ROUNDS} rounds of ${SAMPLE_MS} ms (median, min-max):`)
for (const v of variants) {
  const s = summarize(samples[v.name])
  console.log(`  ${v.name.padEnd(26)} ${Math.round(s.median)} (${Math.round(s.min)}-${Math.round(s.max)})`)
}
const [cas, replace, plain] = variants.map((v) => samples[v.name])
for (const [label, against] of [
  ['CAS / plain SET', plain],
  ['CAS / REPLACE', replace],
] as const) {
  const r = summarize(pairedRatios(cas, against))
  console.log(`  ${label.padEnd(26)} ${r.median.toFixed(3)} (${r.min.toFixed(3)}-${r.max.toFixed(3)})`)
}
await Promise.all(variants.map((v) => v.close()))
await local?.stop()
