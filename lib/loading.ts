import type { SessionData } from 'express-session'
import type { SessionCodec } from './codec.js'
import { isCopy, readCopy } from './copies.js'
import type { BurstLog } from './log.js'
import type { Item, MemcachedClient, Receiver } from './memcached/index.js'
import { debug } from './observability.js'
import type { Origins } from './origins.js'
import { isMarker, isPlaceholder, RESERVATION_TTL_SECONDS } from './reservations.js'
import type { OperationContext } from './runner.js'
import { cookieExpiry, memcachedExpiry, originalMaxAge, outlasts, renewedLifetimeSeconds, type TtlOption } from './ttl.js'

/**
 * memcached keeps an item up to about two seconds past the cookie's expiry (its clock ticks in whole
 * seconds and the store adds one); this is that window, with a second of margin.
 */
const MEMCACHED_GRACE_MS = 3000

/**
 * Whether a loaded session has expired by its cookie, to the millisecond, while memcached still
 * holds it. memcached keeps an item up to about two seconds past the cookie's expiry; an item still
 * there later than that was extended by a touch (which moves memcached's expiry without rewriting the
 * stored cookie). memcached's remaining TTL (meta's `t`) cannot tell more: another process's
 * get-and-touch of the same expired session may have just extended it.
 */
export function hasExpired(sess: SessionData): boolean {
  return expiredAt(cookieExpiry(sess))
}

function expiredAt(expiresAt: number | undefined): boolean {
  if (expiresAt === undefined) return false
  const overdueMs = Date.now() - expiresAt
  return overdueMs >= 0 && overdueMs < MEMCACHED_GRACE_MS
}

export interface LoaderOptions {
  client: MemcachedClient
  codec: SessionCodec
  origins: Origins
  log: BurstLog
  ttl: TtlOption
  disableTouch: boolean
}

/**
 * A request an operation leaves to do, run by the store as an operation of its own (with its own
 * deadline, after the first one released the session): delete what a read found expired, correct
 * the expiry a read set, or write the collision marker a save could not write in time.
 */
export type FollowUp = { what: 'delete'; cas: bigint } | { what: 'touch'; expiry: number } | { what: 'mark'; expiry: number }

/** A read's outcome: the session (or null), and a follow-up request when one is needed. */
export interface Loaded {
  sess: SessionData | null
  followUp: FollowUp | undefined
}

/** How a read extended the session it found: until when (ms since the epoch) and by how much (seconds); both 0 without extension. */
export interface Extension {
  until: number
  seconds: number
}

const NOT_EXTENDED: Extension = { until: 0, seconds: 0 }

/**
 * How sessions are read. A read is a get-and-touch (GATK, `mg ... T`): it moves the session's expiry
 * to the lifetime express-session's touch is expected to ask for, so that a request that only reads
 * its session costs one memcached request. That lifetime is not known before the session is: the
 * read uses the longest any session was given, so that it never cuts one short, and a session
 * whose own lifetime is shorter is set back to it at once (a follow-up TOUCH). What a read finds is
 * parsed only when handed over (see docs/internals.md).
 */
export class SessionLoader {
  readonly #options: LoaderOptions
  /** The longest lifetime (seconds, 0 for none) of the sessions written or touched: what reads extend sessions by. */
  #longest: number | undefined
  /** The longest lifetime of the sessions read (for tombstones only). */
  #longestRead: number | undefined

  constructor(options: LoaderOptions) {
    this.#options = options
  }

  /** Notes the lifetime a session was written or touched with (`seconds`, for a `ttl` function) or will be renewed with. */
  noteLifetime(sess: SessionData, seconds: number): void {
    const { ttl } = this.#options
    const renewed = typeof ttl === 'function' ? seconds : renewedLifetimeSeconds(sess, ttl)
    if (renewed >= 0 && (this.#longest === undefined || !outlasts(this.#longest, renewed))) this.#longest = renewed
  }

  /**
   * How long a tombstone must live (seconds, 0 for ever): as long as any session it may stand for
   * could (the longest lifetime written, touched or read here, and the `ttl` option's).
   */
  tombstoneSeconds(): number {
    const { ttl } = this.#options
    let longest = typeof ttl === 'number' ? ttl : 86_400
    for (const seconds of [this.#longest, this.#longestRead]) {
      if (seconds !== undefined && !outlasts(longest, seconds)) longest = seconds
    }
    return longest
  }

  /** Notes the lifetime of a session read (for tombstones): its renewed lifetime. */
  #noteRead(sess: SessionData): void {
    const { ttl } = this.#options
    if (typeof ttl === 'function') return
    const renewed = renewedLifetimeSeconds(sess, ttl)
    if (renewed >= 0 && (this.#longestRead === undefined || !outlasts(this.#longestRead, renewed))) this.#longestRead = renewed
  }

  /** The lifetime a read extends sessions by, or undefined for a plain GET (listings, `disableTouch`, nothing written yet). */
  extension(extend: boolean): number | undefined {
    return extend && !this.#options.disableTouch ? this.#longest : undefined
  }

  /** GET, or get-and-touch by `lifetime` seconds; the item goes to `receiver`. */
  read(op: OperationContext, lifetime: number | undefined, receiver: Receiver<Item | undefined>): void {
    const { client } = this.#options
    if (lifetime === undefined) client.get(op.key, op.scope, receiver)
    else client.getAndTouch(op.key, memcachedExpiry(lifetime), op.scope, receiver)
  }

  /**
   * A loaded item as a session (remembering its CAS and text for the next save), or null when it is
   * not a live one. A session found expired after a get-and-touch extended it is deleted (if still
   * unchanged), so that the read does not keep it alive; one extended longer than its own lifetime
   * is set back to it. With replicas, `value` is the newest copy's payload and `copies` what the
   * next save needs of every copy. A session handed out to the application (`carry`) carries its
   * origin in a field that survives a framework's copy (see origins.ts); the store's own reads keep
   * it hidden.
   */
  toSession(
    value: Buffer,
    cas: bigint,
    op: OperationContext,
    extension: Extension = NOT_EXTENDED,
    carry = false,
    copies?: { cas: Array<bigint | undefined>; version: number },
  ): Loaded {
    const { codec, origins, log, ttl } = this.#options
    if (isMarker(value)) return { sess: null, followUp: placeholderReset(value, extension) }
    // A copy written with `replicas` (the option was turned off since, or a logout during a change of
    // the server list left a tombstone): its payload is the session, a tombstone is none.
    if (copies === undefined && isCopy(value)) {
      const copy = readCopy(value)
      if (copy.kind !== 'session') return { sess: null, followUp: undefined }
      value = copy.payload
    }
    const decoded = codec.decode(value, op.key, op)
    if (!decoded.ok) {
      debug('decode failure: %s is not a session (%s)', op.subject, decoded.reason)
      log.report('decode', `the stored value of ${op.subject} is not a session (${decoded.reason}); it was treated as no session`)
      return { sess: null, followUp: undefined }
    }
    const storedExpiry = cookieExpiry(decoded.sess)
    if (expiredAt(storedExpiry)) {
      return { sess: null, followUp: extension.until === 0 ? undefined : { what: 'delete', cas } }
    }
    let extendedUntil = extension.until
    let followUp: FollowUp | undefined
    if (extendedUntil !== 0) {
      const lifetime = renewedLifetimeSeconds(decoded.sess, ttl)
      if (lifetime < 0) {
        extendedUntil = 0
      } else if (differ(lifetime, extension.seconds)) {
        // Extended by another session's (longer) lifetime: set back to its own at once, so that a
        // request that ends without a touch does not leave it there.
        followUp = { what: 'touch', expiry: memcachedExpiry(lifetime) }
        extendedUntil = Date.now() + lifetime * 1000
      }
    }
    const storedMaxAge = originalMaxAge(decoded.sess)
    this.#noteRead(decoded.sess)
    const fields = {
      key: op.key,
      cas,
      text: decoded.text,
      storedExpiry,
      storedMaxAge,
      extendedUntil,
      copies: copies?.cas,
      version: copies?.version,
      owner: decoded.owner,
    }
    if (carry) origins.carry(decoded.sess, fields)
    else origins.remember(decoded.sess, fields)
    return { sess: decoded.sess, followUp }
  }
}

/** Whether two lifetimes (seconds, 0 for none) differ by more than memcached's one-second tick. */
function differ(a: number, b: number): boolean {
  return a !== b && (a === 0 || b === 0 || Math.abs(a - b) > 1)
}

/**
 * A reserved ID's placeholder that a get-and-touch extended to a session's lifetime is set back to
 * the reservation's: an ID handed out by `genid` and read before its first save stays a reservation
 * (never a session-long key that listings count).
 */
export function placeholderReset(value: Buffer, extension: Extension): FollowUp | undefined {
  if (extension.seconds === 0 || !isPlaceholder(value)) return undefined
  return { what: 'touch', expiry: memcachedExpiry(RESERVATION_TTL_SECONDS) }
}
