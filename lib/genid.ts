import { randomBytes } from 'node:crypto'
import { describeThrown, isServerFailure, MemcacheStoreError, redactId, storeError } from './errors.js'
import { keyProblem } from './keys.js'
import type { BurstLog } from './log.js'
import type { MemcachedClient } from './memcached/index.js'
import { debug } from './observability.js'
import { PLACEHOLDER, RESERVATION_TTL_SECONDS } from './reservations.js'

/** express-session's default: 24 random bytes (192 bits) in base64url, as uid-safe makes them. */
export function randomSessionId(): string {
  return randomBytes(24).toString('base64url')
}

/** IDs kept ready; the pool grows with the rate of new sessions up to MAX_POOL. */
const MIN_POOL = 16
const MAX_POOL = 1024
/** Reservations in flight at once while refilling. */
const REFILL_CONCURRENCY = 16
/** A pooled ID is dropped this long before its placeholder expires in memcached (a request may take a while). */
const STALE_MARGIN_MS = 15_000
/** After a failed reservation, refilling pauses this long (memcached is down: genid falls back meanwhile). */
const RETRY_AFTER_MS = 1000
/** Reserved IDs handed out and not yet saved, remembered at most this many (beyond, genid falls back). */
const MAX_HANDED_OUT = 100_000
/** This many taken candidates in a row means the ID space is (nearly) full: refilling pauses rather than spin. */
const MAX_TAKEN_IN_A_ROW = 64

/** What `diagnostics().genid` reports. */
export interface GenidStats {
  /** Reserved IDs ready to be handed out. */
  pooled: number
  /** Candidates skipped because memcached already held them. */
  skipped: number
  /** IDs handed out unreserved (the pool was empty): their first save's ADD still checks them. */
  fallbacks: number
  /** Reserved IDs handed out whose first save has not come yet (forgotten once their placeholder expires). */
  awaitingSave: number
}

export interface Reservation {
  sid: string
  /** The CAS of the placeholder on each copy (`replicas`), undefined where it could not be written; the first is the key's own server's. */
  copies: Array<bigint | undefined>
  /** When the placeholder was written (performance.now()). */
  at: number
}

export interface ReserverOptions {
  prefix: string
  /** A session ID's memcached key (hashed with `hashIds`). */
  keyOf(sid: string): string
  generate: () => string
  /** ADDs the placeholder under the ID's key on each copy: their CAS, 'taken' when the key exists, or a rejection. */
  reserve(sid: string, key: string): Promise<Array<bigint | undefined> | 'taken'>
  /** Deletes a placeholder that will not be used (on close). */
  release(sid: string, key: string, copies: Array<bigint | undefined>): Promise<unknown>
  log: BurstLog
}

/**
 * The seed's collision-checking `generate_sid`, done ahead of time: a small pool of IDs that
 * memcached has already reserved for this store (an ADD of a placeholder under each candidate, which
 * fails when the ID is taken), so that `genid` can hand one out synchronously, as express-session
 * requires. A candidate that is taken is skipped and counted. When the pool is empty (cold start, a
 * burst, memcached down), `genid` falls back to a fresh random ID; the save's ADD still checks it.
 */
export class ReservedIds {
  readonly #options: ReserverOptions
  readonly #pool: Reservation[] = []
  /** Reserved IDs handed out, by ID, until their first save claims them (or they go stale). */
  readonly #handedOut = new Map<string, Reservation>()
  #reserving = 0
  /** Reservations in flight: close() waits for them (each settles within the store's timeout). */
  readonly #inFlight = new Set<Promise<unknown>>()
  #pausedUntil = 0
  #retry: NodeJS.Timeout | undefined
  #closed = false
  #skipped = 0
  #takenInARow = 0
  #fallbacks = 0
  /** Hand-outs in the current and the previous second, to size the pool to the rate. */
  #rate = { second: 0, current: 0, previous: 0 }

  constructor(options: ReserverOptions) {
    this.#options = options
    this.#refill()
  }

  /** An ID for a new session: a reserved one when the pool has one, else a fresh unreserved one. */
  take(): string {
    this.#count()
    const now = performance.now()
    let reservation = this.#pool.shift()
    while (reservation !== undefined && isStale(reservation, now)) reservation = this.#pool.shift()
    this.#refill()
    this.#forgetStale(now)
    if (reservation === undefined || this.#handedOut.size >= MAX_HANDED_OUT) {
      this.#fallbacks++
      return this.#candidate()
    }
    this.#handedOut.set(reservation.sid, reservation)
    return reservation.sid
  }

  /** The reservation of an ID this pool handed out, removed: its first save writes over the placeholder. */
  claim(sid: string): Reservation | undefined {
    const reservation = this.#handedOut.get(sid)
    if (reservation === undefined) return undefined
    this.#handedOut.delete(sid)
    return isStale(reservation, performance.now()) ? undefined : reservation
  }

  /** Whether `sid` was handed out by this pool and has not been saved yet: its key holds only a placeholder. */
  unsaved(sid: string): boolean {
    const reservation = this.#handedOut.get(sid)
    return reservation !== undefined && !isStale(reservation, performance.now())
  }

  /**
   * Forgets handed-out IDs whose placeholder has expired: never saved (an unmodified new session
   * with saveUninitialized: false is never stored). Handed out in about the order they were
   * reserved, so the stale ones are at the front.
   */
  #forgetStale(now: number): void {
    for (const [sid, reservation] of this.#handedOut) {
      if (!isStale(reservation, now)) return
      this.#handedOut.delete(sid)
    }
  }

  stats(): GenidStats {
    return { pooled: this.#pool.length, skipped: this.#skipped, fallbacks: this.#fallbacks, awaitingSave: this.#handedOut.size }
  }

  /** Stops refilling, lets reservations in flight settle, and deletes the placeholders of IDs never handed out. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#retry) clearTimeout(this.#retry)
    // A reservation that completes now deletes its own placeholder (see #reserveOne).
    await Promise.allSettled(this.#inFlight)
    const unused = this.#pool.splice(0)
    const { keyOf, release } = this.#options
    await Promise.allSettled(unused.map(({ sid, copies }) => release(sid, keyOf(sid), copies)))
  }

  #target(): number {
    const perSecond = Math.max(this.#rate.current, this.#rate.previous)
    return Math.min(MAX_POOL, Math.max(MIN_POOL, 2 * perSecond))
  }

  #count(): void {
    const second = Math.floor(performance.now() / 1000)
    const rate = this.#rate
    if (second !== rate.second) {
      rate.previous = second === rate.second + 1 ? rate.current : 0
      rate.current = 0
      rate.second = second
    }
    rate.current++
  }

  #refill(): void {
    if (this.#closed || performance.now() < this.#pausedUntil) return
    const target = this.#target()
    while (this.#reserving < REFILL_CONCURRENCY && this.#pool.length + this.#reserving < target) {
      if (!this.#reserveOne()) return
    }
  }

  /** Starts one reservation; false when the generator failed (refilling then pauses). */
  #reserveOne(): boolean {
    let sid: string
    try {
      sid = this.#candidate()
    } catch (err) {
      this.#options.log.report('genid', `${(err as Error).message}; genid falls back to generateId for every request`)
      this.#pause()
      return false
    }
    this.#reserving++
    const at = performance.now()
    const reserving: Promise<unknown> = this.#options.reserve(sid, this.#options.keyOf(sid)).then(
      (outcome) => {
        this.#reserving--
        if (outcome === 'taken') {
          this.#skipped++
          debug('genid: candidate %s is taken, skipped', redactId(sid))
          if (++this.#takenInARow >= MAX_TAKEN_IN_A_ROW) {
            this.#takenInARow = 0
            this.#options.log.report(
              'genid',
              `${MAX_TAKEN_IN_A_ROW} candidate session IDs in a row were taken: \`generateId\` draws from too small a space`,
            )
            return this.#pause()
          }
        } else {
          this.#takenInARow = 0
          if (this.#closed) return this.#options.release(sid, this.#options.keyOf(sid), outcome).catch(() => {})
          this.#pool.push({ sid, copies: outcome, at })
        }
        this.#refill()
      },
      (err: unknown) => {
        this.#reserving--
        if (this.#closed) return
        if (!isServerFailure(err)) {
          this.#options.log.report(
            'genid',
            `reserving a session ID failed: ${storeError(err, 'genid', `session ${redactId(sid)}`).message}`,
          )
        }
        this.#pause()
      },
    )
    this.#inFlight.add(reserving)
    void reserving.finally(() => this.#inFlight.delete(reserving))
    return true
  }

  #pause(): void {
    this.#pausedUntil = performance.now() + RETRY_AFTER_MS
    if (this.#retry || this.#closed) return
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      this.#refill()
    }, RETRY_AFTER_MS)
    this.#retry.unref()
  }

  /** A candidate from the generator, checked like any session ID; the generator is the application's code (EUSERCODE). */
  #candidate(): string {
    let sid: unknown
    try {
      sid = this.#options.generate()
    } catch (err) {
      throw userCodeError(`\`generateId\` threw: ${describeThrown(err)}`, err)
    }
    const problem = typeof sid !== 'string' || sid === '' ? 'is not a non-empty string' : keyProblem(this.#options.prefix + sid)
    if (problem !== undefined) throw userCodeError(`\`generateId\` returned an ID that cannot be a memcached key: its key ${problem}`)
    return sid as string
  }
}

function isStale(reservation: Reservation, now: number): boolean {
  return now - reservation.at > RESERVATION_TTL_SECONDS * 1000 - STALE_MARGIN_MS
}

/** A pool that reserves IDs under `prefix` on `memcached`: an ADD of the placeholder each, with the store's timeout. */
export function reservedIdsOn(
  client: MemcachedClient,
  options: { prefix: string; keyOf: (sid: string) => string; timeoutMs: number; generate: () => string; log: BurstLog; copies: number },
): ReservedIds {
  const scope = () => ({ deadline: performance.now() + options.timeoutMs, sent: false, answered: false })
  return new ReservedIds({
    prefix: options.prefix,
    keyOf: options.keyOf,
    generate: options.generate,
    log: options.log,
    reserve: async (_sid, key) => {
      const servers = client.copiesOf(key, options.copies)
      const added = await Promise.allSettled(
        servers.map((server) => server.store('add', key, PLACEHOLDER, RESERVATION_TTL_SECONDS, scope())),
      )
      if (added.some((result) => result.status === 'fulfilled' && result.value.status !== 'ok')) return 'taken'
      // With copies, a server that cannot be reached is no reason not to hand the ID out: the others hold it.
      if (added.every((result) => result.status === 'rejected')) throw (added[0] as PromiseRejectedResult).reason
      return added.map((result) => (result.status === 'fulfilled' ? result.value.cas : undefined))
    },
    release: (_sid, key, copies) => {
      const servers = client.copiesOf(key, options.copies)
      return Promise.allSettled(copies.map((cas, i) => (cas === undefined ? undefined : servers[i].delete(key, scope(), cas))))
    },
  })
}

function userCodeError(reason: string, cause?: unknown): MemcacheStoreError {
  return new MemcacheStoreError('EUSERCODE', 'genid', reason, { reason, cause })
}
