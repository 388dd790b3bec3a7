// Session traffic for the cluster tests: concurrent workers reading and touching sessions, each
// request recorded with when it started, how long it took and how it ended.
import type { MemcacheStore, MemcacheStoreError } from '../../lib/index.ts'
import { plainSession } from './stores.ts'

export interface Request {
  sid: string
  startedAt: number
  ms: number
  /** undefined when the request succeeded. */
  code: string | undefined
}

/** Runs `workers` loops of get-then-touch on random sessions of `sids` until `stop` resolves. */
export async function runTraffic(store: MemcacheStore, sids: readonly string[], workers: number, stop: Promise<void>): Promise<Request[]> {
  const requests: Request[] = []
  let stopped = false
  void stop.then(() => {
    stopped = true
  })
  const timed = async (sid: string, operation: () => Promise<unknown>) => {
    const startedAt = performance.now()
    let code: string | undefined
    try {
      await operation()
    } catch (err) {
      code = (err as MemcacheStoreError).code ?? 'unknown'
    }
    requests.push({ sid, startedAt, ms: performance.now() - startedAt, code })
  }
  const loop = async () => {
    while (!stopped) {
      const sid = sids[Math.floor(Math.random() * sids.length)]
      await timed(sid, () => store.get(sid))
      await timed(sid, () => store.touch(sid, plainSession()))
    }
  }
  await Promise.all(Array.from({ length: workers }, loop))
  return requests
}

/** The value below which `fraction` of `values` fall. */
export function percentile(values: readonly number[], fraction: number): number {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]
}

/**
 * The largest of `values`, or `empty` when there are none. A loop rather than Math.max(...values):
 * spreading a few hundred thousand timings overflows the stack.
 */
export function largest(values: Iterable<number>, empty = 0): number {
  let top = Number.NEGATIVE_INFINITY
  for (const value of values) if (value > top) top = value
  return top === Number.NEGATIVE_INFINITY ? empty : top
}

/** The smallest of `values`, or `empty` when there are none (see `largest`). */
export function smallest(values: Iterable<number>, empty = Number.POSITIVE_INFINITY): number {
  let bottom = Number.POSITIVE_INFINITY
  for (const value of values) if (value < bottom) bottom = value
  return bottom === Number.POSITIVE_INFINITY ? empty : bottom
}

/** Runs `task` over `items` with at most `concurrency` at a time. */
export async function inBatches<T, R>(items: readonly T[], concurrency: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await task(items[index])
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return results
}
