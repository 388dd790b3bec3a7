import type { SessionData } from 'express-session'
import { UserCodeError } from './errors.js'
import { MAX_EXPIRY } from './memcached/index.js'

/** memcached reads an expiry above 30 days as an absolute Unix time, not as seconds from now. */
export const MAX_RELATIVE_EXPIRY = 30 * 24 * 60 * 60

export type TtlOption = number | ((sess: SessionData) => number)

/** A session's lifetime as one operation sees it, computed once. */
export interface Lifetime {
  /** Whole seconds; `0` means no expiry, a negative value that the session has already expired. */
  seconds: number
  /** When the cookie expires (ms since the epoch), undefined for a cookie without expiry. */
  expiresAt: number | undefined
}

/**
 * A session's lifetime: from the `ttl` function if given, else what remains of the cookie's expiry
 * (rounded up), else the `ttl` number.
 */
export function lifetimeOf(sess: SessionData, ttl: TtlOption, now = Date.now()): Lifetime {
  const expiresAt = cookieExpiry(sess)
  return { seconds: typeof ttl === 'function' ? callTtl(ttl, sess) : lifetimeUntil(expiresAt, ttl, now), expiresAt }
}

/** The `ttl` function's answer in whole seconds; the application's code, so whatever it does wrong is named as such. */
function callTtl(ttl: (sess: SessionData) => number, sess: SessionData): number {
  let seconds: unknown
  try {
    seconds = ttl(sess)
  } catch (err) {
    throw new UserCodeError('the `ttl` function threw', err)
  }
  if (typeof seconds !== 'number' || Number.isNaN(seconds)) {
    throw new UserCodeError(`expected the \`ttl\` function to return a number of seconds, got \`${String(seconds)}\` (${typeof seconds})`)
  }
  return Math.ceil(seconds)
}

/** A lifetime for a `ttl` number, from the cookie's expiry (ms since the epoch, undefined for none). */
function lifetimeUntil(expiresAt: number | undefined, ttl: number, now: number): number {
  if (expiresAt === undefined) return ttl
  const remainingMs = expiresAt - now
  // An expiry this very millisecond has passed (MemoryStore's rule: expires <= now is expired).
  return remainingMs <= 0 ? -1 : Math.ceil(remainingMs / 1000)
}

/**
 * The expiry field to send to memcached for a lifetime: `0` stays `0`; otherwise one second more
 * than the lifetime (memcached's clock ticks in whole seconds, so an item can vanish up to a second
 * early), as an absolute Unix time once that exceeds memcached's 30-day limit for relative values,
 * and never later than memcached can keep (MAX_EXPIRY, early 2038).
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
  if (typeof ttl === 'function') return callTtl(ttl, sess)
  const originalMaxAge = (sess as { cookie?: { originalMaxAge?: unknown } }).cookie?.originalMaxAge
  if (typeof originalMaxAge === 'number' && Number.isFinite(originalMaxAge))
    return originalMaxAge <= 0 ? -1 : Math.ceil(originalMaxAge / 1000)
  return lifetimeUntil(cookieExpiry(sess), ttl, now)
}

/** The cookie's `originalMaxAge` (ms), the lifetime express-session renews it with; null without one. */
export function originalMaxAge(sess: unknown): number | null {
  const value = (sess as { cookie?: { originalMaxAge?: unknown } } | null | undefined)?.cookie?.originalMaxAge
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

/** Whether lifetime `a` (seconds, 0 for none) keeps a session at least as long as `b`. */
export function outlasts(a: number, b: number): boolean {
  return a === 0 || (b !== 0 && a >= b)
}

/** `lifetimeOf(...).seconds`. */
export function lifetimeSeconds(sess: SessionData, ttl: TtlOption, now = Date.now()): number {
  return lifetimeOf(sess, ttl, now).seconds
}
