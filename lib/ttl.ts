import type { SessionData } from 'express-session'

/** memcached reads an expiry above 30 days as an absolute Unix time, not as seconds from now. */
export const MAX_RELATIVE_EXPIRY = 30 * 24 * 60 * 60

/** The largest expiry the binary protocol's 32-bit field can carry. */
const MAX_EXPIRY = 0xffffffff

export type TtlOption = number | ((sess: SessionData) => number)

/**
 * A session's lifetime in whole seconds: from the `ttl` function if given, else what remains of the
 * cookie's expiry (rounded up), else the `ttl` number. `0` means "no expiry"; a negative value
 * means the session has already expired.
 */
export function lifetimeSeconds(sess: SessionData, ttl: TtlOption, now = Date.now()): number {
  if (typeof ttl === 'function') {
    const seconds = ttl(sess)
    if (typeof seconds !== 'number' || Number.isNaN(seconds)) {
      throw new TypeError(`Expected the \`ttl\` function to return a number of seconds, got \`${String(seconds)}\` (${typeof seconds})`)
    }
    return Math.ceil(seconds)
  }
  return lifetimeUntil(cookieExpiry(sess), ttl, now)
}

/** `lifetimeSeconds` for a `ttl` number, from the cookie's expiry already read (ms since the epoch, undefined for none). */
export function lifetimeUntil(expiresAt: number | undefined, ttl: number, now = Date.now()): number {
  if (expiresAt === undefined) return ttl
  const remainingMs = expiresAt - now
  // An expiry this very millisecond has passed (MemoryStore's rule: expires <= now is expired).
  return remainingMs <= 0 ? -1 : Math.ceil(remainingMs / 1000)
}

/**
 * The expiry field to send to memcached for a lifetime: `0` stays `0`; otherwise one second more
 * than the lifetime (memcached's clock ticks in whole seconds, so an item can vanish up to a second
 * early), as an absolute Unix time once that exceeds memcached's 30-day limit for relative values.
 */
export function memcachedExpiry(seconds: number, now = Date.now()): number {
  if (seconds <= 0) return 0
  const relative = seconds + 1
  if (relative <= MAX_RELATIVE_EXPIRY) return relative
  return Math.min(Math.floor(now / 1000) + relative, MAX_EXPIRY)
}

/** The cookie's expiry in ms since the epoch, or undefined when the cookie has none (a browser-session cookie). */
export function cookieExpiry(sess: unknown): number | undefined {
  const cookie = (sess as { cookie?: { expires?: unknown } } | null | undefined)?.cookie
  const expires = cookie?.expires
  if (expires instanceof Date) return validTime(expires.getTime())
  if (typeof expires === 'string') return validTime(Date.parse(expires))
  if (typeof expires === 'number') return validTime(new Date(expires).getTime())
  return undefined
}

function validTime(ms: number): number | undefined {
  return Number.isFinite(ms) ? ms : undefined
}

/**
 * The lifetime express-session's next `touch` (or save) of this loaded session will ask for: it
 * first resets the cookie to `originalMaxAge` from now. A cookie with a fixed `expires` and no
 * `originalMaxAge` keeps its expiry; a cookie without expiry uses `ttl`.
 */
export function renewedLifetimeSeconds(sess: SessionData, ttl: TtlOption, now = Date.now()): number {
  if (typeof ttl === 'function') return lifetimeSeconds(sess, ttl, now)
  const originalMaxAge = (sess as { cookie?: { originalMaxAge?: unknown } }).cookie?.originalMaxAge
  if (typeof originalMaxAge === 'number' && Number.isFinite(originalMaxAge))
    return originalMaxAge <= 0 ? -1 : Math.ceil(originalMaxAge / 1000)
  return lifetimeSeconds(sess, ttl, now)
}
