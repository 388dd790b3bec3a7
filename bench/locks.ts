// The per-session lock: lib/locks.ts (SessionLocks: a Map entry per held key, an async-mutex Mutex
// only once a second operation waits) against the table it replaced (KeyedLocks, commit 397c565,
// reproduced below as it was). Two cases, in interleaved rounds:
// - uncontended: acquire and release of distinct keys (what almost every store operation does);
// - contended: one holder and 10 waiters on one key, each taking its turn and releasing.
// Reports ns per acquire/release pair and allocations: bytes per pair from heapUsed over batches
// in which no collection ran, and young-generation collections (scavenges) per million pairs.
// Run: node --import tsx bench/locks.ts   (BENCH_ROUNDS, BENCH_PAIRS change the amounts)
import { PerformanceObserver } from 'node:perf_hooks'
import { SessionLocks } from '../lib/locks.ts'
import { summarize } from './stats.ts'

// ---- The previous table (397c565:lib/locks.ts), unchanged but for the export. ----

type Waiters = Array<() => void>

/** The entry of a key locked with nobody waiting: shared, never written to. */
const NO_WAITERS: Waiters = Object.freeze([]) as unknown as Waiters

class KeyedLocks {
  readonly #waiters = new Map<string, Waiters>()

  get size(): number {
    return this.#waiters.size
  }

  acquire(key: string, onTurn: () => void): void {
    const queue = this.#waiters.get(key)
    if (queue === undefined) {
      this.#waiters.set(key, NO_WAITERS)
      onTurn()
    } else if (queue === NO_WAITERS) this.#waiters.set(key, [onTurn])
    else queue.push(onTurn)
  }

  release(key: string): void {
    const waiting = this.#waiters.get(key)
    if (waiting === undefined) return
    if (waiting.length > 0) (waiting.shift() as () => void)()
    else this.#waiters.delete(key)
  }
}

// ---- The two, behind one interface: `pairs` acquire/release pairs, resolved when all are done. ----

interface Contender {
  name: string
  uncontended(keys: readonly string[], pairs: number): void
  contended(waiters: number, rounds: number): Promise<void>
}

const previous: Contender = {
  name: 'previous table (KeyedLocks, 397c565)',
  uncontended(keys, pairs) {
    const locks = new KeyedLocks()
    for (let i = 0; i < pairs; i++) {
      const key = keys[i % keys.length]
      // The runner's turn callback: a closure per operation, as the runner of that time made one.
      locks.acquire(key, () => locks.release(key))
    }
  },
  contended(waiters, rounds) {
    const locks = new KeyedLocks()
    for (let round = 0; round < rounds; round++) {
      let holder = () => {}
      locks.acquire('k', () => {
        holder = () => locks.release('k')
      })
      for (let w = 0; w < waiters; w++) locks.acquire('k', () => locks.release('k'))
      holder()
    }
    return Promise.resolve()
  },
}

const current: Contender = {
  name: 'SessionLocks (lib/locks.ts, async-mutex when contended)',
  uncontended(keys, pairs) {
    const locks = new SessionLocks()
    const waiter = { turn() {}, cancelled() {} }
    for (let i = 0; i < pairs; i++) {
      const key = keys[i % keys.length]
      // Free: the caller holds the lock at once (the runner then runs the work; no callback).
      if (locks.acquire(key, waiter)) locks.release(key)
    }
  },
  async contended(waiters, rounds) {
    const locks = new SessionLocks()
    for (let round = 0; round < rounds; round++) {
      let left = waiters
      let finished: () => void = () => {}
      const done = new Promise<void>((resolve) => {
        finished = resolve
      })
      const waiter = {
        turn() {
          locks.release('k')
          if (--left === 0) finished()
        },
        cancelled() {},
      }
      locks.acquire('k', waiter)
      for (let w = 0; w < waiters; w++) locks.acquire('k', waiter)
      locks.release('k')
      await done
    }
  },
}

// ---- Measurement ----

let scavenges = 0
const observer = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) if ((entry as { detail?: { kind?: number } }).detail?.kind === 1) scavenges++
})
observer.observe({ entryTypes: ['gc'] })

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9)
const PAIRS = Number(process.env.BENCH_PAIRS ?? 1_000_000)
const WAITERS = 10
const KEYS = Array.from({ length: 1000 }, (_, i) => `sess:${i.toString(36).padStart(32, 'x')}`)

/** ns per pair of one timed run, and scavenges during it (counted when the observer's entries arrive). */
async function timed(run: () => void | Promise<void>, pairs: number): Promise<{ ns: number; scavenges: number }> {
  const before = scavenges
  const start = process.hrtime.bigint()
  await run()
  const ns = Number(process.hrtime.bigint() - start) / pairs
  await new Promise((resolve) => setTimeout(resolve, 5))
  return { ns, scavenges: scavenges - before }
}

/** Bytes allocated per pair: heapUsed growth over small batches that ran without any collection (median). */
async function bytesPerPair(run: (pairs: number) => void | Promise<void>, pairs: number): Promise<number> {
  const samples: number[] = []
  for (let attempt = 0; attempt < 40 && samples.length < 9; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 2))
    const gcBefore = scavenges
    const heapBefore = process.memoryUsage().heapUsed
    await run(pairs)
    const heapAfter = process.memoryUsage().heapUsed
    await new Promise((resolve) => setTimeout(resolve, 2))
    if (scavenges === gcBefore && heapAfter >= heapBefore) samples.push((heapAfter - heapBefore) / pairs)
  }
  return summarize(samples).median
}

const contenders = [previous, current]
const cases = [
  { name: 'uncontended (distinct keys)', pairs: PAIRS, run: (c: Contender, pairs: number) => c.uncontended(KEYS, pairs) },
  {
    name: `contended (1 holder + ${WAITERS} waiters on one key)`,
    pairs: PAIRS / 10,
    run: (c: Contender, pairs: number) => c.contended(WAITERS, Math.max(1, Math.round(pairs / (WAITERS + 1)))),
  },
]
console.log(`Node ${process.version}; ${ROUNDS} interleaved rounds; median [min–max]`)
console.log('| case | implementation | ns per acquire/release | bytes per pair (no-GC batches) | scavenges per million pairs |')
console.log('| --- | --- | ---: | ---: | ---: |')
for (const c of cases) {
  // Warm-up: both, so that neither runs its first round unoptimized.
  for (const contender of contenders) await c.run(contender, c.pairs / 10)
  const ns: Record<string, number[]> = {}
  const gc: Record<string, number[]> = {}
  for (let round = 0; round < ROUNDS; round++) {
    for (const contender of round % 2 === 0 ? contenders : [...contenders].reverse()) {
      const result = await timed(() => c.run(contender, c.pairs), c.pairs)
      ns[contender.name] = [...(ns[contender.name] ?? []), result.ns]
      gc[contender.name] = [...(gc[contender.name] ?? []), (result.scavenges * 1e6) / c.pairs]
    }
  }
  for (const contender of contenders) {
    const time = summarize(ns[contender.name])
    const collections = summarize(gc[contender.name])
    const bytes = await bytesPerPair((pairs) => c.run(contender, pairs), 2_000)
    console.log(
      `| ${c.name} | ${contender.name} | ${time.median.toFixed(1)} [${time.min.toFixed(1)}–${time.max.toFixed(1)}] | ${bytes.toFixed(1)} | ${collections.median.toFixed(1)} [${collections.min.toFixed(1)}–${collections.max.toFixed(1)}] |`,
    )
  }
}
observer.disconnect()
