import session, { type SessionData } from 'express-session'
import memjs from 'memjs'
import { type Decoded, decodeSession, encodeSession, ITEM_OVERHEAD_BYTES } from './codec.js'
import { SessionCipher } from './crypto.js'
import { SessionEnumeration } from './enumeration.js'
import { MemcacheStoreError, redactId, toError } from './errors.js'
import { sessionKey } from './keys.js'
import { KeyedLocks } from './locks.js'
import { BurstLog } from './log.js'
import { type Item, Memcached } from './memcached/connection.js'
import { Deadlines } from './memcached/deadlines.js'
import { type MemjsClient, serverAddress } from './memcached/memjs-internals.js'
import { placeKeysByConsistentHashing } from './memcached/ring.js'
import { mergeSessions } from './merge.js'
import { type MemcacheStoreOptions, type ResolvedOptions, resolveOptions } from './options.js'
import { RecentTouches } from './recent-touches.js'
import { cookieExpiry, lifetimeSeconds, memcachedExpiry } from './ttl.js'

type Callback<T> = (err: unknown, value?: T) => void
type SessionObject = Record<string, unknown>

/** What the store remembers about a session it loaded or stored, for the session's next save. */
interface Origin {
  key: string
  /** The CAS of what is stored; undefined after a merged write, so the next save merges again. */
  cas: Buffer | undefined
  /** The session as this request last read or wrote it: the base of a three-way merge. */
  text: string
}

/** What a get read, before it is parsed. */
interface Loaded {
  item: Item
  key: string
  subject: string
}

interface InFlight {
  operation: string
  subject: string
  key: string
  reject(err: Error): void
}

/** A save that keeps losing CAS races gives up after this many merges rather than retry forever. */
const MAX_MERGES = 5

/** memcached errors that `failOpen` swallows; bad input, collisions and conflicts are always passed on. */
const SERVER_FAILURES = new Set(['ETIMEDOUT', 'ESERVERDOWN', 'ECONNCLOSED', 'ECONNECTION', 'EAUTH', 'ESERVER'])

const SILENT = { log() {} }

const FAIL_OPEN_CONSEQUENCE: Record<string, string> = {
  get: 'served as no session',
  set: 'session not saved',
  touch: 'expiry not extended',
  destroy: 'session not deleted',
}

/** An express-session store that keeps sessions in memcached. */
export class MemcacheStore extends session.Store {
  readonly prefix: string
  readonly #options: ResolvedOptions
  readonly #memcached: Memcached
  readonly #locks = new KeyedLocks()
  // A hidden property of the session object rather than a WeakMap entry: a young session keyed in a
  // long-lived WeakMap survived minor collections and was promoted (90 MB per 4,000 gets of 50 KB).
  // Per store, not enumerable: JSON, spreads, Object.assign and express-session's copies skip it.
  readonly #origin = Symbol('express-session-memcache origin')
  readonly #inFlight: Deadlines<InFlight>
  readonly #log: BurstLog
  readonly #cipher: SessionCipher | undefined
  readonly #enumeration: SessionEnumeration
  readonly #recentTouches: RecentTouches | undefined
  #nextId = 0

  constructor(options: MemcacheStoreOptions = {}) {
    super()
    const resolved = resolveOptions(options)
    this.#options = resolved
    this.prefix = resolved.prefix
    this.#log = new BurstLog(resolved.logger)
    this.#recentTouches = resolved.touchAfter > 0 ? new RecentTouches(resolved.touchAfter * 1000) : undefined
    const seconds = resolved.timeout / 1000
    let client = resolved.client as unknown as MemjsClient | undefined
    if (client === undefined) {
      client = memjs.Client.create(resolved.servers, {
        logger: SILENT,
        timeout: seconds,
        conntimeout: seconds,
        keepAlive: true,
        ...resolved.credentials,
        ...resolved.memjs,
      }) as unknown as MemjsClient
      placeKeysByConsistentHashing(client, resolved.weights)
    }
    this.#memcached = new Memcached(client, resolved.timeout, resolved.client === undefined)
    this.#inFlight = new Deadlines(resolved.timeout, (_id, op) => op.reject(this.#timeoutError(op)))
    this.#cipher = resolved.secrets && new SessionCipher(resolved.secrets)
    this.#enumeration = new SessionEnumeration({
      prefix: this.prefix,
      timeoutMs: resolved.timeout,
      servers: () => this.#memcached.servers,
      addressFor: (key) => this.#memcached.addressFor(key),
      expiryIgnoresCookie: typeof resolved.ttl === 'function',
      get: (sid) => this.get(sid),
      destroy: (sid) => this.destroy(sid),
    })
  }

  /** The session stored under `sid`, or null: none, expired by its cookie, unreadable, or an invalid ID. */
  get(sid: string, callback?: Callback<SessionData | null>): Promise<SessionData | null> {
    return this.#run(
      'get',
      sid,
      callback,
      null,
      async (key, subject): Promise<Loaded | null> => {
        const item = await this.#memcached.get(key, subject)
        return item === undefined ? null : { item, key, subject }
      },
      // Parsed only when handed over: a session parsed earlier would ride the promise chain and
      // outlive young-generation collections (at 50 KB, most of it was promoted to the old space).
      (loaded) => loaded && this.#toSession(loaded),
    )
  }

  /**
   * Stores a session. A session express-session just created is added (failing on an ID collision);
   * one loaded from the store is written only while it still exists (merged with concurrent changes
   * unless `merge` is false); plain data is upserted. An expired cookie deletes the session instead.
   */
  set(sid: string, sess: SessionData, callback?: Callback<void>): Promise<void> {
    return this.#run('set', sid, callback, undefined, async (key, subject) => {
      const seconds = lifetimeSeconds(sess, this.#options.ttl)
      if (seconds < 0) {
        await this.#memcached.delete(key, subject)
        return
      }
      const expiry = memcachedExpiry(seconds)
      const { value, text } = this.#encode(sess, key, subject)
      const origin = this.#originOf(sess)
      if (origin?.key === key) return this.#saveLoaded(key, subject, origin, value, text, expiry)
      if (isExpressSessionObject(sess, sid)) return this.#saveNew(key, subject, sess, value, text, expiry)
      await this.#memcached.store('set', key, value, { expiry }, subject)
    })
  }

  /** Extends a session's expiry with memcached's TOUCH, without rewriting it. */
  override touch(sid: string, sess: SessionData, callback?: Callback<void>): Promise<void> {
    if (this.#options.disableTouch) return settle(Promise.resolve(), callback)
    // touchAfter: only keys that were sent once are remembered, so a hit is a valid key.
    if (this.#recentTouches?.isRecent(this.prefix + sid)) return settle(Promise.resolve(), callback)
    return this.#run('touch', sid, callback, undefined, async (key, subject) => {
      const seconds = lifetimeSeconds(sess, this.#options.ttl)
      if (seconds < 0) return
      const found = await this.#memcached.touch(key, memcachedExpiry(seconds), subject)
      if (found) this.#recentTouches?.record(key)
    })
  }

  destroy(sid: string, callback?: Callback<void>): Promise<void> {
    return this.#run('destroy', sid, callback, undefined, async (key, subject) => {
      this.#recentTouches?.forget(key)
      await this.#memcached.delete(key, subject)
    })
  }

  /**
   * Every live session of this store, keyed by ID, as MemoryStore yields them: the keys under this
   * store's prefix on every server (listed with `lru_crawler metadump`), each read like `get` does.
   */
  override all(callback?: Callback<Record<string, SessionData>>): Promise<Record<string, SessionData>> {
    return settle(this.#enumeration.all(), callback)
  }

  /** The IDs of this store's live sessions on every server; only sessions within seconds of expiry are read (see the README for the rule). */
  ids(callback?: Callback<string[]>): Promise<string[]> {
    return settle(this.#enumeration.ids(), callback)
  }

  /** How many live sessions this store holds: `ids().length`. */
  override length(callback?: Callback<number>): Promise<number> {
    return settle(this.#enumeration.length(), callback)
  }

  /** Deletes this store's sessions one by one; other keys on the servers are left alone (never `flush_all`). */
  override clear(callback?: Callback<void>): Promise<void> {
    return settle(
      this.#enumeration.clear().then(() => undefined),
      callback,
    )
  }

  /** Resolves once every server answers; rejects with an Error naming each one that does not. */
  async ready(): Promise<void> {
    const servers = this.#memcached.servers
    const results = await Promise.allSettled(servers.map((server) => this.#memcached.ping(server)))
    const failures = results.flatMap((result, i) =>
      result.status === 'rejected' ? [`${serverAddress(servers[i])} (${reasonOf(result.reason)})`] : [],
    )
    if (failures.length > 0) {
      const refused = results.every((result) => result.status === 'fulfilled' || (result.reason as MemcacheStoreError).code === 'EAUTH')
      throw new MemcacheStoreError(
        refused ? 'EAUTH' : 'ESERVERDOWN',
        'ready',
        `memcached is not ready: ${failures.length} of ${servers.length} server(s) did not answer: ${failures.join('; ')}`,
      )
    }
  }

  /** Counts for health checks and leak tests: store operations and memcached requests in flight, sessions locked. */
  diagnostics(): { operationsInFlight: number; requestsInFlight: number; lockedSessions: number } {
    return { operationsInFlight: this.#inFlight.size, requestsInFlight: this.#memcached.inFlight, lockedSessions: this.#locks.size }
  }

  /** Settles whatever is in flight with an error and closes the memjs client if the store created it. */
  async close(): Promise<void> {
    this.#enumeration.close()
    this.#memcached.close()
  }

  /** Keeps what was loaded (its CAS and text) with the Session object express-session builds from it. */
  override createSession(req: Parameters<session.Store['createSession']>[0], sess: SessionData) {
    const origin = this.#originOf(sess)
    const created = super.createSession(req, sess)
    if (origin) this.#remember(created, origin)
    return created
  }

  #originOf(sess: object): Origin | undefined {
    return (sess as Record<symbol, Origin | undefined>)[this.#origin]
  }

  #remember(sess: object, origin: Origin): void {
    Object.defineProperty(sess, this.#origin, { value: origin, writable: true, configurable: true, enumerable: false })
  }

  /** A loaded item as a session (remembering its CAS and text for the next save), or null when it is not a live one. */
  #toSession({ item, key, subject }: Loaded): SessionData | null {
    const decoded = this.#decode(item.value, key)
    if (!decoded.ok) {
      this.#log.report('decode', `the stored value of ${subject} is not a session (${decoded.reason}); it was treated as no session`)
      return null
    }
    if (hasExpired(decoded.sess)) return null
    this.#remember(decoded.sess, { key, cas: item.cas, text: decoded.text })
    return decoded.sess
  }

  async #saveNew(key: string, subject: string, sess: object, value: Buffer, text: string, expiry: number): Promise<void> {
    const added = await this.#memcached.store('add', key, value, { expiry }, subject)
    if (added.status === 'stored') {
      this.#remember(sess, { key, cas: added.cas, text })
      return
    }
    // express-session sent this ID in a Set-Cookie header before saving, so two clients now hold
    // it: deleting the stored session keeps either from reading the other's data.
    await this.#memcached.delete(key, subject)
    throw new MemcacheStoreError(
      'ECOLLISION',
      'set',
      `session ID collision: ${subject} already existed in memcached when a new session was saved under it (does a custom genid repeat IDs?); the stored session was deleted so that neither holder can read the other's`,
    )
  }

  /**
   * Saves a session that was loaded (or already saved) by this request. It is never re-created if it
   * disappeared meanwhile (a logout stays final). With `merge`, a CAS write; on a lost race, a
   * three-way merge with what is stored, then another CAS write.
   */
  async #saveLoaded(key: string, subject: string, origin: Origin, encoded: Buffer, text: string, expiry: number): Promise<void> {
    const memcached = this.#memcached
    if (!this.#options.merge) {
      const replaced = await memcached.store('replace', key, encoded, { expiry }, subject)
      if (replaced.status === 'stored') origin.text = text
      return
    }
    let value = encoded
    let cas = origin.cas
    for (let merges = 0; ; merges++) {
      if (cas !== undefined) {
        const written = await memcached.store('set', key, value, { expiry, cas }, subject)
        if (written.status === 'stored') {
          // After a merge the request's own session object lacks the other request's changes: its
          // next save must merge again rather than overwrite them.
          origin.cas = merges === 0 ? written.cas : undefined
          origin.text = text
          return
        }
        if (written.status === 'notFound') return
      }
      if (merges === MAX_MERGES) {
        throw new MemcacheStoreError(
          'ECONFLICT',
          'set',
          `memcached SET of ${subject} gave up after ${MAX_MERGES} merges: other requests kept changing the session; nothing was written`,
        )
      }
      const current = await memcached.get(key, subject)
      if (current === undefined) return
      const theirs = this.#decode(current.value, key)
      if (theirs.ok && hasExpired(theirs.sess)) return
      const parse = (source: string) => this.#options.serializer.parse(source) as SessionObject
      const merged = theirs.ok ? mergeSessions(parse(origin.text), parse(text), theirs.sess as unknown as SessionObject) : parse(text)
      value = this.#encode(merged as unknown as SessionData, key, subject).value
      cas = current.cas
    }
  }

  /** Serialized (and, with `secret`, encrypted) bytes to store, and the plain text: the base of a later merge. */
  #encode(sess: SessionData, key: string, subject: string): { value: Buffer; text: string } {
    let encoded: { text: string; value: Buffer }
    try {
      encoded = encodeSession(this.#options.serializer, sess)
    } catch (err) {
      throw new MemcacheStoreError('ESERIALIZE', 'set', `${subject} could not be serialized: ${toError(err).message}`, { cause: err })
    }
    const value = this.#cipher ? this.#cipher.seal(encoded.value, key) : encoded.value
    const limit = this.#options.maxItemSize - Buffer.byteLength(key) - ITEM_OVERHEAD_BYTES
    if (value.length > limit) {
      throw new MemcacheStoreError(
        'ETOOLARGE',
        'set',
        `${subject} is ${value.length} bytes serialized, over the ${limit} bytes a ${this.#options.maxItemSize}-byte memcached item leaves for it; it was not sent and the stored session is unchanged`,
      )
    }
    // The text as it will read back from memcached (lone surrogates become U+FFFD in UTF-8).
    return { value, text: encoded.text.isWellFormed() ? encoded.text : encoded.value.toString() }
  }

  /** Stored bytes back to a session and its plain text, decrypting first with `secret`; or why they are not one. */
  #decode(value: Buffer, key: string): (Decoded & { ok: false }) | { ok: true; sess: SessionData; text: string } {
    const opened = this.#cipher ? this.#cipher.open(value, key) : { ok: true as const, plain: value }
    if (!opened.ok) return opened
    const text = opened.plain.toString()
    const decoded = decodeSession(this.#options.serializer, text)
    return decoded.ok ? { ...decoded, text } : decoded
  }

  /**
   * One store operation: key checks, the session's lock, the deadline, failOpen and the optional
   * callback. `finish` turns what `work` (or failOpen) produced into the result, in the same step
   * that hands it over.
   */
  #run<T, R = T>(
    operation: string,
    sid: unknown,
    callback: Callback<R> | undefined,
    failOpenValue: T,
    work: (key: string, subject: string) => Promise<T>,
    finish?: (value: T) => R,
  ): Promise<R> {
    const subject = typeof sid === 'string' && sid !== '' ? `session ${redactId(sid)}` : 'a session'
    const attempt = async (): Promise<T> => {
      let key: string
      try {
        key = sessionKey(this.prefix, sid, operation)
      } catch (err) {
        // No session can be stored under a key memcached refuses.
        if (operation === 'get') return failOpenValue
        throw err
      }
      try {
        const value = await this.#withinDeadline(operation, subject, key, () => work(key, subject))
        this.#log.recovered('memcached')
        return value
      } catch (err) {
        if (!(this.#options.failOpen && SERVER_FAILURES.has((err as MemcacheStoreError).code))) throw err
        this.#log.report('memcached', `${(err as Error).message}; ${FAIL_OPEN_CONSEQUENCE[operation]} (failOpen)`)
        return failOpenValue
      }
    }
    return settle(attempt(), callback, finish)
  }

  /** `work` under the session's lock, settled with a timeout error if it has not settled within `timeout` (lock wait included). */
  #withinDeadline<T>(operation: string, subject: string, key: string, work: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const id = ++this.#nextId
      this.#inFlight.add(id, { operation, subject, key, reject })
      // The lock is taken with callbacks rather than an async helper: one promise less per operation.
      this.#locks.acquire(key, () => {
        let result: Promise<T>
        try {
          result = work()
        } catch (err) {
          result = Promise.reject(err)
        }
        result.then(
          (value) => {
            this.#locks.release(key)
            if (this.#inFlight.delete(id)) resolve(value)
          },
          (err) => {
            this.#locks.release(key)
            if (this.#inFlight.delete(id)) reject(err)
          },
        )
      })
    })
  }

  #timeoutError(op: InFlight): MemcacheStoreError {
    const address = this.#memcached.addressFor(op.key)
    return new MemcacheStoreError(
      'ETIMEDOUT',
      op.operation,
      `memcached ${op.operation} of ${op.subject} on ${address} timed out: not settled within ${this.#options.timeout} ms`,
      { server: address },
    )
  }
}

/**
 * Hands a result to express-session's callback (outside the promise chain) or to the caller's
 * await, through `finish` when given; what `finish` throws (a user's logger, say) goes to the callback.
 */
function settle<T, R = T>(result: Promise<T>, callback: Callback<R> | undefined, finish?: (value: T) => R): Promise<R> {
  const handOver = finish ?? ((value: T) => value as unknown as R)
  if (!callback) return finish ? result.then(handOver) : (result as unknown as Promise<R>)
  return result.then(
    (value) => {
      let out: R
      try {
        out = handOver(value)
      } catch (err) {
        process.nextTick(callback, err)
        return undefined as R
      }
      process.nextTick(callback, null, out)
      return out
    },
    (err) => {
      process.nextTick(callback, err)
      return undefined as R
    },
  )
}

/**
 * memcached keeps an item up to about two seconds past the cookie's expiry (its clock ticks in whole
 * seconds and the store adds one); this is that window, with a second of margin.
 */
const MEMCACHED_GRACE_MS = 3000

/**
 * Expired by its cookie, to the millisecond, while memcached may still hold it. An item still there
 * well after its stored cookie expired was extended by a TOUCH (which moves memcached's expiry
 * without rewriting the stored cookie): memcached's expiry then decides.
 */
function hasExpired(sess: SessionData): boolean {
  const expiresAt = cookieExpiry(sess)
  if (expiresAt === undefined) return false
  const overdueMs = Date.now() - expiresAt
  return overdueMs >= 0 && overdueMs < MEMCACHED_GRACE_MS
}

/** A Session object built by express-session for this ID (a new one unless the store loaded it). */
function isExpressSessionObject(sess: object, sid: string): boolean {
  const candidate = sess as { id?: unknown; save?: unknown; regenerate?: unknown }
  return candidate.id === sid && typeof candidate.save === 'function' && typeof candidate.regenerate === 'function'
}

function reasonOf(err: unknown): string {
  const error = toError(err)
  return error.cause instanceof Error ? error.cause.message : error.message.replace(/^.*? failed: /, '')
}
