// genid on the request path: what one call of `store.genid` costs (an ID taken from the pool that
// memcached already reserved) against express-session's default generator (uid-safe, 24 random
// bytes) and against the store's own fallback (a fresh random ID when the pool is empty). Calls
// are timed in batches of BATCH (the pool's minimum), the pool refilled between batches, rounds
// alternating the three. The reservation itself (an ADD per ID, ahead of the request) is measured
// at HTTP level, on /login.
import { randomBytes } from 'node:crypto'
import uid from 'uid-safe'
import { sleep } from '../spec/harness/memcached.ts'
import { MemcacheStore } from './package.ts'
import { rotation } from './stats.ts'

const BATCH = 16

export interface GenidMicro {
  /** Nanoseconds per call, one entry per round, per generator. */
  samples: Record<string, number[]>
  /** Calls of store.genid that found the pool empty (fell back to a random ID) while measured. */
  fallbacks: number
  batch: number
}

export async function runGenidMicro(servers: string, rounds: number): Promise<GenidMicro> {
  const store = new MemcacheStore({ servers, prefix: `genid${process.pid}:`, logger: false })
  const genid = store.genid
  const generators: Array<{ name: string; call: () => string }> = [
    { name: 'store.genid (reserved ID from the pool)', call: () => genid() },
    { name: "uid-safe sync(24) (express-session's default)", call: () => uid.sync(24) },
    { name: 'randomBytes(24) base64url (the fallback)', call: () => randomBytes(24).toString('base64url') },
  ]
  const samples: Record<string, number[]> = {}
  const poolReady = async () => {
    for (let waited = 0; store.diagnostics().genid.pooled < BATCH && waited < 2000; waited += 2) await sleep(2)
  }
  try {
    const warmup = Math.min(20, rounds)
    let fallbacksBefore = 0
    for (let round = 0; round < warmup + rounds; round++) {
      if (round === warmup) fallbacksBefore = store.diagnostics().genid.fallbacks
      for (const generator of rotation(generators, round)) {
        await poolReady()
        let sink = 0
        const start = process.hrtime.bigint()
        for (let i = 0; i < BATCH; i++) sink += generator.call().length
        const ns = Number(process.hrtime.bigint() - start) / BATCH
        if (sink === 0) throw new Error('no IDs generated')
        if (round >= warmup) samples[generator.name] = [...(samples[generator.name] ?? []), ns]
      }
    }
    return { samples, fallbacks: store.diagnostics().genid.fallbacks - fallbacksBefore, batch: BATCH }
  } finally {
    await store.close()
  }
}
