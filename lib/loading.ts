import type { SessionData } from 'express-session'
import type { SessionCodec } from './codec.js'
import type { BurstLog } from './log.js'
import type { Item, Memcached } from './memcached/memcached.js'
import { debug } from './observability.js'
import type { Origins } from './origins.js'
import { isPlaceholder } from './reservations.js'
import type { OperationContext } from './runner.js'
import { cookieExpiry, memcachedExpiry, renewedLifetimeSeconds, type TtlOption } from './ttl.js'

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
  memcached: Memcached
  codec: SessionCodec
  origins: Origins
  log: BurstLog
  ttl: TtlOption
  disableTouch: boolean
  /** Runs a follow-up request of a read (a delete, a corrective touch) as an operation of its own. */
  followUp(what: 'delete' | 'touch', sid: string, request: (context: OperationContext) => Promise<unknown>): void
}

/**
 * How sessions are read. A read is a get-and-touch (GATK, `mg ... T`): it moves the session's expiry
 * to the lifetime express-session's touch will ask for, so that a request that only reads its
 * session costs one memcached request. What a read finds is parsed only when handed over: parsed
 * earlier, it would ride the promise chain and outlive young-generation collections (see
 * bench/README.md).
 */
export class SessionLoader {
  readonly #options: LoaderOptions
  /** The lifetime (seconds) of the latest session written or touched: what a read extends sessions by. */
  #lifetimeHint: number | undefined

  constructor(options: LoaderOptions) {
    this.#options = options
  }

  /** Notes the lifetime a session was written or touched with: reads extend sessions by the latest. */
  noteLifetime(sess: SessionData, seconds: number): void {
    const { ttl } = this.#options
    this.#lifetimeHint = typeof ttl === 'function' ? seconds : renewedLifetimeSeconds(sess, ttl)
  }

  /**
   * GET, or get-and-touch with the lifetime express-session's touch is expected to ask for (noted on
   * the context: until when, and by how much, the read extends the session). `extend` false: a plain
   * GET (listings, and with `disableTouch`).
   */
  read(context: OperationContext, extend: boolean): Promise<Item | undefined> {
    const { memcached, disableTouch } = this.#options
    const lifetime = this.#lifetimeHint
    if (!extend || disableTouch || lifetime === undefined) return memcached.get(context.key, context)
    context.extendedUntil = Date.now() + lifetime * 1000
    context.extendedFor = lifetime
    return memcached.getAndTouch(context.key, memcachedExpiry(lifetime), context)
  }

  /**
   * A loaded item as a session (remembering its CAS and text for the next save), or null when it is
   * not a live one. A session found expired after a get-and-touch extended it is deleted (if still
   * unchanged), so that the read does not keep it alive; one extended by another session's lifetime
   * is corrected at once.
   */
  toSession(item: Item, context: OperationContext): SessionData | null {
    const { codec, origins, log, followUp, memcached, ttl } = this.#options
    const { extendedUntil, extendedFor } = context
    if (isPlaceholder(item.value)) return null
    const decoded = codec.decode(item.value, context.key, context)
    if (!decoded.ok) {
      debug('decode failure: %s is not a session (%s)', context.subject, decoded.reason)
      log.report('decode', `the stored value of ${context.subject} is not a session (${decoded.reason}); it was treated as no session`)
      return null
    }
    const storedExpiry = cookieExpiry(decoded.sess)
    if (expiredAt(storedExpiry)) {
      if (extendedUntil !== 0) followUp('delete', context.sid, (ctx) => memcached.delete(ctx.key, ctx, item.cas))
      return null
    }
    let extended = extendedUntil
    if (extended !== 0) {
      const lifetime = renewedLifetimeSeconds(decoded.sess, ttl)
      if (Math.abs(lifetime - extendedFor) > 1) {
        // A request that ends without a touch would leave the other session's lifetime in place.
        extended = 0
        if (lifetime >= 0) followUp('touch', context.sid, (ctx) => memcached.touch(ctx.key, memcachedExpiry(lifetime), ctx))
      }
    }
    origins.remember(decoded.sess, { key: context.key, cas: item.cas, text: decoded.text, storedExpiry, extendedUntil: extended })
    return decoded.sess
  }
}
