import diagnosticsChannel from 'node:diagnostics_channel'
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks'
import createDebug from 'debug'
import { MemcacheStoreError, type Operation } from './errors.js'

/**
 * Every store operation, as a tracing channel (`node:diagnostics_channel`): `start` when it begins,
 * `end` when its synchronous part returns, then `asyncStart`/`asyncEnd` (and `error` on failure) when
 * it settles. Subscribers receive one context object per operation (see OperationTrace).
 */
export const TRACING_CHANNEL = 'express-session-memcache:operation'
export const operationChannel = diagnosticsChannel.tracingChannel(TRACING_CHANNEL)

/** The context object a tracing subscriber receives; fields are filled in as the operation goes. */
export interface OperationTrace {
  operation: Operation
  /** `host:port` of the server the session lives on; for listings, every server, comma-separated. */
  server: string
  /** The session ID shortened as in error messages; undefined for listings. */
  session: string | undefined
  /** `get`: whether a session was found. */
  hit?: boolean
  /** `set`: how it was written. */
  write?: WriteKind
  /** `get` with `replicas`: how many copies answered, were missing or older than the newest, and whether the newest is a tombstone (a logout). */
  copies?: CopiesTrace
  error?: unknown
}

export interface CopiesTrace {
  answered: number
  missing: number
  stale: number
  tombstone: boolean
}

/**
 * How a `set` ended up writing: a new session added, a CAS write, a merge, a plain upsert, a write
 * with `merge: false`, a delete (expired cookie); an unmodified loaded session only `touched` (its
 * expiry moved) or left `unchanged` (nothing sent: the read already moved it); `none`: not written
 * (the session was gone).
 */
export type WriteKind = 'added' | 'cas' | 'merged' | 'upserted' | 'replaced' | 'deleted' | 'touched' | 'unchanged' | 'none'

/** `DEBUG=express-session-memcache` prints what the store does; session IDs appear shortened. */
export const debug = createDebug('express-session-memcache')

export interface OperationCounts {
  calls: number
  successes: number
  /** Failures by error code. */
  errors: Record<string, number>
  /** `get` only: sessions found, and not. */
  hits?: number
  misses?: number
  /** Latency percentiles in milliseconds, over the store's lifetime. */
  p50: number
  p99: number
}

export interface StoreCounters {
  operations: Record<string, OperationCounts>
  /** Saves that lost a CAS race and merged. */
  merges: number
  /** New sessions whose ID was already taken. */
  collisions: number
  /** Bytes of session values written to memcached. */
  bytesWritten: number
}

interface Tally {
  calls: number
  successes: number
  errors: Record<string, number>
  hits: number
  misses: number
  histogram: RecordableHistogram
}

/** Counters for `diagnostics()`: calls, successes and errors per operation, get's hits and misses, latencies. */
export class Counters {
  readonly #tallies = new Map<Operation, Tally>()
  merges = 0
  collisions = 0
  bytesWritten = 0

  /** Records one settled operation; `hit` for gets. */
  record(operation: Operation, startedAt: number, error: unknown, hit?: boolean): void {
    const tally = this.#tally(operation)
    tally.calls++
    if (error === undefined) {
      tally.successes++
      if (hit === true) tally.hits++
      else if (hit === false) tally.misses++
    } else {
      const code = error instanceof MemcacheStoreError ? error.code : 'other'
      tally.errors[code] = (tally.errors[code] ?? 0) + 1
    }
    // Recorded in microseconds: the histogram takes integers of at least 1.
    tally.histogram.record(Math.max(1, Math.round((performance.now() - startedAt) * 1000)))
  }

  snapshot(): StoreCounters {
    const operations: Record<string, OperationCounts> = {}
    for (const [operation, tally] of this.#tallies) {
      const counts: OperationCounts = {
        calls: tally.calls,
        successes: tally.successes,
        errors: { ...tally.errors },
        p50: tally.histogram.percentile(50) / 1000,
        p99: tally.histogram.percentile(99) / 1000,
      }
      if (operation === 'get') Object.assign(counts, { hits: tally.hits, misses: tally.misses })
      operations[operation] = counts
    }
    return { operations, merges: this.merges, collisions: this.collisions, bytesWritten: this.bytesWritten }
  }

  #tally(operation: Operation): Tally {
    let tally = this.#tallies.get(operation)
    if (tally === undefined) {
      tally = { calls: 0, successes: 0, errors: {}, hits: 0, misses: 0, histogram: createHistogram() }
      this.#tallies.set(operation, tally)
    }
    return tally
  }
}
