import type { SessionData } from 'express-session'
import { MemcacheStoreError } from './errors.js'
import type { Origin } from './origins.js'
import { describeSession } from './runner.js'
import { type MemcacheStore, storeAccess } from './store.js'
import { cookieExpiry, originalMaxAge } from './ttl.js'

/** koa-session's data: its fields, with `_expire` (ms since the epoch) and `_maxAge` (ms), or `_session` for a browser-session cookie. */
export type KoaSessionData = Record<string, unknown>

/** What koa-session passes besides the key: `{ rolling, ctx }` to `get`, `{ rolling, changed, ctx }` to `set`, `{ ctx }` to `destroy`. */
export interface KoaStoreOptions {
  rolling?: boolean
  changed?: boolean
  /** The request's Koa context: what the adapter keeps each request's loaded session with. */
  ctx?: object
}

/** koa-session's external store (its `store` option), as `koaStore` returns it. */
export interface KoaSessionStore {
  get(key: string, maxAge?: number | 'session', options?: KoaStoreOptions): Promise<KoaSessionData | null>
  set(key: string, sess: KoaSessionData, maxAge?: number | 'session', options?: KoaStoreOptions): Promise<void>
  destroy(key: string, options?: KoaStoreOptions): Promise<void>
}

/** The fields koa-session keeps its expiry in: the adapter turns them into the store's cookie and back. */
const KOA_EXPIRY_FIELDS = new Set(['_expire', '_maxAge', '_session'])

/** What one request loaded or added, kept on its Koa context. */
interface Loaded {
  key: string
  origin: Origin | undefined
}

/**
 * A koa-session external store over `store`, with the guarantees express-session gets:
 * - koa-session's `_expire`/`_maxAge` become the session's cookie, so memcached's expiry is the
 *   session's `maxAge` (+1 s); a browser-session cookie (`maxAge: 'session'`) gets the store's `ttl`.
 * - What a request loaded is kept on its `ctx` (each request its own, whatever runs at the same
 *   time): its saves are CAS writes merged with concurrent changes, never re-create a session
 *   logged out meanwhile, and, unmodified (koa-session's `rolling`, `changed: false`), only move the
 *   expiry, or send nothing when the read already did.
 * - A session the request did not load is new: it is added, collision-checked (with
 *   `genid: store.genid`, over its reservation).
 * - koa-session sees its own fields only: no `cookie`, nothing of the store's.
 *
 * Without `rolling`, reads do not move the expiry (koa-session's `_expire` stays the session's
 * end); with it, a read is one get-and-touch. A session field named `cookie` is refused
 * (`ESERIALIZE`): the store keeps the session's cookie there.
 */
export function koaStore(store: MemcacheStore): KoaSessionStore {
  const access = storeAccess()
  const loadedOn = Symbol('express-session-memcache koa session')

  function remember(ctx: object | undefined, key: string, origin: Origin | undefined): void {
    if (typeof ctx !== 'object' || ctx === null) return
    Object.defineProperty(ctx, loadedOn, { value: { key, origin } satisfies Loaded, writable: true, configurable: true, enumerable: false })
  }

  function loaded(ctx: object | undefined, key: string): Loaded | undefined {
    const found = (ctx as Record<symbol, Loaded | undefined> | undefined)?.[loadedOn]
    return found?.key === key ? found : undefined
  }

  return {
    async get(key, _maxAge, options) {
      const sess = await access.get(store, key, options?.rolling === true)
      remember(options?.ctx, key, sess === null ? undefined : access.originOf(store, sess))
      return sess === null ? null : toKoa(sess)
    },

    async set(key, data, maxAge, options) {
      const sess = fromKoa(key, data, maxAge)
      const ctx = options?.ctx
      const origin = loaded(ctx, key)?.origin
      if (origin) return access.save(store, key, sess, origin)
      // Without a context there is no telling a new session from a loaded one: plain data, upserted.
      if (ctx === undefined) return store.set(key, sess)
      await access.save(store, key, sess, 'new')
      remember(ctx, key, access.originOf(store, sess))
    },

    async destroy(key, options) {
      if (loaded(options?.ctx, key)) remember(options?.ctx, key, undefined)
      await store.destroy(key)
    },
  }
}

/** A stored session as koa-session's data: its fields without the cookie, and the cookie's expiry as koa-session keeps it. */
function toKoa(sess: SessionData): KoaSessionData {
  const data: KoaSessionData = {}
  const fields = sess as unknown as Record<string, unknown>
  for (const name of Object.keys(fields)) if (name !== 'cookie') data[name] = fields[name]
  const expires = cookieExpiry(sess)
  const maxAge = originalMaxAge(sess)
  if (expires === undefined && maxAge === null) {
    data._session = true
    return data
  }
  // A stored expiry that has passed while the store still serves the session means a touch moved
  // memcached's expiry since (an unmodified save does not rewrite the cookie): koa-session must not
  // take it for expired, and sets a fresh `_expire` on its next save.
  if (expires !== undefined && expires > Date.now()) data._expire = expires
  if (maxAge !== null) data._maxAge = maxAge
  return data
}

/** koa-session's data as the store keeps it: `{ cookie, ...fields }`, the cookie from `_expire`/`_maxAge` (or `maxAge`). */
function fromKoa(key: string, data: KoaSessionData, maxAge: number | 'session' | undefined): SessionData {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw refused(key, `could not be stored: koa-session gave ${Array.isArray(data) ? 'an array' : typeof data}, not an object`)
  }
  if (Object.hasOwn(data, 'cookie')) {
    throw refused(key, 'could not be stored: its field `cookie` is where the store keeps the session cookie; rename the field')
  }
  let expires: string | null = null
  let lifetime: number | null = null
  if (data._session === true) {
    // A browser-session cookie: the store's `ttl`.
  } else if (typeof data._expire === 'number') {
    expires = new Date(data._expire).toISOString()
    lifetime = typeof data._maxAge === 'number' ? data._maxAge : null
  } else if (typeof maxAge === 'number') {
    expires = new Date(Date.now() + maxAge).toISOString()
    lifetime = maxAge
  }
  const sess: Record<string, unknown> = { cookie: { originalMaxAge: lifetime, expires } }
  for (const name of Object.keys(data)) if (!KOA_EXPIRY_FIELDS.has(name)) sess[name] = data[name]
  return sess as unknown as SessionData
}

function refused(key: string, reason: string): MemcacheStoreError {
  const subject = describeSession(key)
  return new MemcacheStoreError('ESERIALIZE', 'set', `${subject} ${reason}`, { session: subject, reason, sent: false })
}
