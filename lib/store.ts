import session, { type SessionData } from 'express-session'
import { SessionCodec } from './codec.js'
import { type Copy, type CopyOutcome, newer, readCopy } from './copies.js'
import { idHashKey, SessionCipher } from './crypto.js'
import { Discovery, type DiscoveryState } from './discovery.js'
import { forEachLimited, isSessionKey, SessionEnumeration } from './enumeration.js'
import { describeThrown, MemcacheStoreError, type Operation, storeError } from './errors.js'
import { type GenidStats, type ReservedIds, reservedIdsOn } from './genid.js'
import { SessionKeys } from './keys.js'
import { type Extension, type FollowUp, SessionLoader } from './loading.js'
import { BurstLog } from './log.js'
import {
  createClient,
  type Item,
  type MemcachedClient,
  type MemcachedError,
  type Receiver,
  type RequestScope,
  type ServerState,
} from './memcached/index.js'
import { Migration, type MigrationState } from './migration.js'
import { Counters, debug, type StoreCounters, type WriteKind } from './observability.js'
import {
  checkServers,
  clientHints,
  type MemcacheStoreOptions,
  type ResolvedOptions,
  resolveOptions,
  type ServerOption,
  type WeightedServer,
} from './options.js'
import { type Origin, Origins } from './origins.js'
import { sameOwner, setGeneration } from './owner.js'
import { checkReady } from './readiness.js'
import { RecentTouches } from './recent-touches.js'
import { type CopyFix, copiesTrace, ReplicatedSessions, type ReplicationCounters } from './replicated.js'
import { COLLISION_MARKER, RESERVATION_TTL_SECONDS } from './reservations.js'
import { type Callback, checkCallback, type OperationContext, OperationRunner } from './runner.js'
import { type Encoded, SessionWriter } from './saving.js'
import { type Lifetime, lifetimeOf, memcachedExpiry, originalMaxAge } from './ttl.js'
import { UserSessions } from './users.js'

/** What lib/koa.ts reaches beyond the public methods (not exported from the package). */
export interface AdapterAccess {
  /** `get`, moving the expiry only when `extend` (and get-and-touch is on). */
  get(store: MemcacheStore, sid: string, extend: boolean): Promise<SessionData | null>
  /** The origin a session `get` handed out carries, or one this store added. */
  originOf(store: MemcacheStore, sess: object): Origin | undefined
  /** `set` of a session the adapter knows to be new (ADD, collision-checked) or loaded with `origin`. */
  save(store: MemcacheStore, sid: string, sess: SessionData, as: Origin | 'new'): Promise<void>
}

let adapterAccess: AdapterAccess | undefined

/** A usage error, as a rejection (and to the callback, if any). */
function rejectWith<T>(err: Error, callback: Callback<T> | undefined): Promise<T> {
  if (callback) process.nextTick(callback, err)
  return Promise.reject(err)
}

/** A session and its memcached key, as a follow-up operation needs them. */
type SessionRef = Pick<OperationContext, 'sid' | 'key'>

/** An express-session store that keeps sessions in memcached. */
export class MemcacheStore extends session.Store {
  static {
    adapterAccess = {
      get: (store, sid, extend) => store.#get(sid, undefined, extend && store.#getAndTouch),
      originOf: (store, sess) => store.#origins.of(sess),
      save: (store, sid, sess, as) => store.#set(sid, sess, undefined, as),
    }
  }

  readonly prefix: string
  readonly #options: ResolvedOptions
  readonly #client: MemcachedClient
  /** Session IDs to memcached keys (hashed with `hashIds`). */
  readonly #keys: SessionKeys
  readonly #runner: OperationRunner
  readonly #origins = new Origins()
  readonly #writer: SessionWriter
  readonly #loader: SessionLoader
  /** What every read needs (see Read). */
  readonly #reading: ReadParts
  /** With `replicas`: the copies of each session. */
  readonly #replicas: ReplicatedSessions | undefined
  /** With `userOf`: sessions by user, and their generations. */
  readonly #users: UserSessions | undefined
  readonly #log: BurstLog
  readonly #enumeration: SessionEnumeration
  readonly #recentTouches: RecentTouches | undefined
  #reservedIds: ReservedIds | undefined
  readonly #counters = new Counters()
  /** Whether reads move the expiry themselves (get-and-touch); a benchmark knob (docs/internals.md). */
  readonly #getAndTouch = process.env.EXPRESS_SESSION_MEMCACHE_GET_AND_TOUCH !== '0'
  /** Where sessions move when the server list changes. */
  readonly #migration: Migration
  /** With `discovery`: the configuration endpoint's poller. */
  readonly #discovery: Discovery | undefined
  #closing: Promise<void> | undefined

  constructor(options: MemcacheStoreOptions = {}) {
    super()
    const resolved = resolveOptions(options)
    this.#options = resolved
    this.prefix = resolved.prefix
    this.#log = new BurstLog(resolved.logger)
    this.#recentTouches = resolved.touchAfter > 0 ? new RecentTouches(resolved.touchAfter * 1000) : undefined
    this.#client = createClient({
      servers: resolved.servers,
      protocol: resolved.protocol,
      tls: resolved.tls,
      credentials: resolved.credentials,
      timeout: resolved.timeout,
      maxItemSize: resolved.maxItemSize,
      placement: resolved.placement,
      hints: clientHints(resolved),
      debug,
      // Never 'disconnect'/'connect': express-session would then serve requests without req.session,
      // which most apps do not expect; a server that is down fails fast instead (see docs/observability.md).
      onStateChange: (server, change, failure) => this.#serverChanged(server, change, failure),
    })
    this.#keys = new SessionKeys(
      resolved.prefix,
      resolved.hashIds,
      resolved.hashIds && resolved.secrets ? idHashKey(resolved.secrets, resolved.prefix) : undefined,
    )
    this.#runner = new OperationRunner({
      keys: this.#keys,
      timeoutMs: resolved.timeout,
      failOpen: resolved.failOpen,
      log: this.#log,
      counters: this.#counters,
      addressFor: (key) => this.#client.addressFor(key),
      gate: () => (this.#discovery === undefined || this.#discovery.answered ? undefined : this.#discovery.first),
    })
    const cipher = resolved.secrets && new SessionCipher(resolved.secrets, resolved.prefix)
    const codec = new SessionCodec(resolved.serializer, cipher, resolved.maxItemSize)
    this.#writer = new SessionWriter(this.#client, codec, this.#origins, this.#counters, resolved.merge, {
      ttl: resolved.ttl,
      markLater: (op, expiry) => this.#followUp(op, { what: 'mark', expiry }),
    })
    this.#writer.onMiss = async (op) => this.#migration.active && (await this.#migration.moveSingle(op)) !== undefined
    this.#loader = new SessionLoader({
      client: this.#client,
      codec,
      origins: this.#origins,
      log: this.#log,
      ttl: resolved.ttl,
      disableTouch: resolved.disableTouch,
    })
    this.#reading = { loader: this.#loader, followUp: (op, followUp) => this.#followUp(op, followUp) }
    const migration = () => this.#migration
    this.#replicas =
      resolved.replicas > 0
        ? new ReplicatedSessions({
            client: this.#client,
            copies: 1 + resolved.replicas,
            timeoutMs: resolved.timeout,
            loader: this.#loader,
            writer: this.#writer,
            origins: this.#origins,
            counters: this.#counters,
            merge: resolved.merge,
            ttl: resolved.ttl,
            migration: {
              get active() {
                return migration().active
              },
              previousCopiesOf: (key) => migration().previousCopiesOf(key),
              moved: () => migration().moved(),
            },
          })
        : undefined
    this.#migration = new Migration(
      {
        client: this.#client,
        copies: 1 + resolved.replicas,
        timeoutMs: resolved.timeout,
        log: this.#log,
        pull: (key) => this.#get(this.#keys.sidOf(key) ?? '', undefined, false, true, key),
        longestLifetime: () => this.#loader.tombstoneSeconds(),
        isSessionKey: (key) => isSessionKey(key, resolved.prefix),
        lifetimeOfStored: (value, op) => {
          const sess = this.#writer.peek(value, op)
          return sess === undefined ? -1 : lifetimeOf(sess, resolved.ttl).seconds
        },
      },
      resolved.servers,
    )
    this.#users =
      resolved.userOf === undefined
        ? undefined
        : new UserSessions({
            client: this.#client,
            keys: this.#keys,
            cipher,
            copies: 1 + resolved.replicas,
            userOf: resolved.userOf as (sess: object) => unknown,
            previousCopiesOf: (key) => this.#migration.previousCopiesOf(key),
          })
    this.#discovery = resolved.discovery
      ? new Discovery({
          ...resolved.discovery,
          timeoutMs: resolved.timeout,
          tls: resolved.tls,
          credentials: resolved.credentials,
          log: this.#log,
          apply: (nodes, version) => this.#changeServers(nodes, version),
        })
      : undefined
    this.#discovery?.start()
    this.#enumeration = new SessionEnumeration({
      prefix: this.prefix,
      timeoutMs: resolved.timeout,
      servers: () => this.#client.servers,
      copiesOf: (key) => this.#client.copiesOf(key, 1 + resolved.replicas).map((server) => server.address),
      replicated: resolved.replicas > 0,
      readEveryValue: typeof resolved.ttl === 'function' || resolved.userOf !== undefined,
      hashedIds: resolved.hashIds,
      placeholderSeconds: RESERVATION_TTL_SECONDS,
      // Listing reads sessions without extending them.
      get: (key) => this.#get(this.#keys.sidOf(key) ?? '', undefined, false, true, key),
      destroy: (key) => this.#destroy(this.#keys.sidOf(key) ?? '', undefined, true, key),
    })
  }

  /**
   * The session stored under `sid`, or null: none, expired by its cookie, unreadable, or an invalid
   * ID. The read also moves the session's expiry (get-and-touch), so that a request that only reads
   * its session costs one memcached request: express-session's `touch` then sends nothing.
   */
  get(sid: string, callback?: Callback<SessionData | null>): Promise<SessionData | null> {
    checkCallback('get', callback)
    return this.#get(sid, callback, this.#getAndTouch)
  }

  /** `get`; the store's own reads of a listed key (`key`, whose ID `hashIds` hides) are internal. */
  #get(
    sid: string,
    callback: Callback<SessionData | null> | undefined,
    extend: boolean,
    internal = false,
    key?: string,
  ): Promise<SessionData | null> {
    const lifetime = this.#loader.extension(extend)
    const replicas = this.#replicas
    const users = this.#users
    if (replicas === undefined) {
      const read = new Read(this.#reading, sid, callback, lifetime, internal, key)
      if (!this.#migration.active && users === undefined) return this.#runner.run(read)
      // The server list changed: a session that misses on its new server is looked for on the previous
      // ones. With `userOf`: a session of a user is served only while its generation is the user's.
      return this.#runner.run<Item | undefined, SessionData | null>({
        operation: 'get',
        sid,
        key,
        callback,
        internal,
        fallback: undefined,
        work: async (op) => {
          const early = this.#earlyRecord(op)
          let item = await new Promise<Item | undefined>((resolved, rejected) => read.send(op, { resolved, rejected }))
          if (item === undefined && this.#migration.active) item = await this.#migration.moveSingle(op)
          if (item !== undefined && users !== undefined && !(await users.admits(item.value, op.key, op.scope, early))) return undefined
          return item
        },
        finish: (item, op) => read.finish(item, op),
      })
    }
    let extension: Extension | undefined
    return this.#runner.run<CopyOutcome<Item | undefined>[] | undefined, SessionData | null>({
      operation: 'get',
      sid,
      key,
      callback,
      internal,
      fallback: undefined,
      work: async (op) => {
        if (lifetime !== undefined) extension = { until: Date.now() + lifetime * 1000, seconds: lifetime }
        const early = this.#earlyRecord(op)
        const outcomes = await replicas.read(op, lifetime)
        const newest = users && replicas.newestSession(outcomes)
        if (newest !== undefined && !(await (users as UserSessions).admits(newest, op.key, op.scope, early))) return undefined
        return outcomes
      },
      annotate: (trace, outcomes) => {
        if (outcomes) trace.copies = copiesTrace(outcomes)
      },
      finish: (outcomes, op) => {
        if (outcomes === undefined || op === undefined) return null
        const { sess, fixes } = replicas.toSession(outcomes, op, extension, !internal)
        if (fixes.length > 0) this.#fix(op, fixes)
        return sess
      },
    })
  }

  /**
   * Stores a session. A session express-session (or @fastify/session) just created is added
   * (failing on an ID collision); one loaded from the store is written only while it still exists
   * (merged with concurrent changes unless `merge` is false), or, saved as it was read (its cookie
   * aside), only has its expiry moved, as `touch` does; plain data is upserted. An expired cookie
   * deletes the session instead.
   */
  set(sid: string, sess: SessionData, callback?: Callback<void>): Promise<void> {
    checkCallback('set', callback)
    return this.#set(sid, sess, callback, undefined)
  }

  /** `set`, told by an adapter (lib/koa.ts) that the session is new, or loaded with `origin`; else the session object says. */
  #set(sid: string, sess: SessionData, callback: Callback<void> | undefined, as: Origin | 'new' | undefined): Promise<void> {
    return this.#runner.run<WriteKind, void>({
      operation: 'set',
      sid,
      callback,
      fallback: 'none',
      work: (op) => {
        const lifetime = lifetimeOf(sess, this.#options.ttl)
        const replicas = this.#replicas
        if (lifetime.seconds < 0) return replicas ? replicas.destroy(op).then(() => 'deleted') : this.#writer.remove(op)
        this.#loader.noteLifetime(sess, lifetime.seconds)
        const origin = as === undefined ? this.#origins.of(sess) : as === 'new' ? undefined : as
        const loaded = origin?.key === op.key ? origin : undefined
        // Synchronous unless the session's user has to be enrolled: the write goes out in this turn.
        const encoded = this.#encodeOwned(sess, op, lifetime, loaded)
        return encoded instanceof Promise
          ? encoded.then((ready) => this.#save(op, sess, ready, loaded, as === 'new'))
          : this.#save(op, sess, encoded, loaded, as === 'new')
      },
      finish: () => undefined,
      annotate: (trace, write) => {
        trace.write = write
      },
    })
  }

  /**
   * Extends a session's expiry. Nothing is sent when the read that loaded it already did (within a
   * second). A session whose stored cookie has less than half its lifetime left is rewritten instead
   * (a CAS write, merged like a save): TOUCH moves memcached's expiry but not the stored cookie, and
   * a session that is read must never look expired by a stale one.
   */
  override touch(sid: string, sess: SessionData, callback?: Callback<void>): Promise<void> {
    checkCallback('touch', callback)
    // Nothing to send (counted and traced all the same): disableTouch, touchAfter (only keys that
    // were sent once are remembered, so a hit is a valid key), or an ID genid handed out that was
    // never saved (a touch would only extend its placeholder).
    if (this.#options.disableTouch || this.#recentTouches?.isRecent(this.#keys.keyOf(sid)) || this.#reservedIds?.unsaved(sid))
      return this.#runner.nothingToDo('touch', sid, callback)
    let lifetime: Lifetime
    try {
      lifetime = lifetimeOf(sess, this.#options.ttl)
    } catch (err) {
      return this.#runner.run({ operation: 'touch', sid, callback, fallback: undefined, work: () => Promise.reject(err) })
    }
    // Or the read that loaded the session already set this expiry.
    if (this.#readCovers(sid, sess, lifetime.seconds)) return this.#runner.nothingToDo('touch', sid, callback)
    const origin = this.#origins.of(sess)
    if (lifetime.seconds >= 0 && origin?.key === this.#keys.keyOf(sid) && storedCookieIsOutdated(origin, sess, lifetime.seconds)) {
      return this.#runner.run<WriteKind, void>({
        operation: 'touch',
        sid,
        callback,
        fallback: 'none',
        work: (op) => {
          this.#loader.noteLifetime(sess, lifetime.seconds)
          return (this.#replicas ?? this.#writer).saveLoaded(op, origin, this.#writer.encode(sess, op, lifetime, origin.owner))
        },
        finish: () => undefined,
      })
    }
    const replicas = this.#replicas
    if (replicas !== undefined) {
      return this.#runner.run<boolean, void>({
        operation: 'touch',
        sid,
        callback,
        fallback: false,
        work: async (op) => {
          if (lifetime.seconds < 0) return false
          this.#loader.noteLifetime(sess, lifetime.seconds)
          return replicas.touch(op, memcachedExpiry(lifetime.seconds))
        },
        finish: (found, op) => {
          if (found && op) this.#recentTouches?.record(op.key)
        },
      })
    }
    return this.#runner.run<boolean, void>({
      operation: 'touch',
      sid,
      callback,
      fallback: false,
      send: (op, receiver) => {
        if (lifetime.seconds < 0) return receiver.resolved(false)
        this.#loader.noteLifetime(sess, lifetime.seconds)
        this.#client.touch(op.key, memcachedExpiry(lifetime.seconds), op.scope, receiver)
      },
      finish: (found, op) => {
        if (found && op) this.#recentTouches?.record(op.key)
      },
    })
  }

  /**
   * A save of a loaded session whose fields are as this request read (or last wrote) them: what
   * `touch` would do instead of a write. @fastify/session and koa-session's `rolling`, and
   * express-session's `resave: true`, save every request. Nothing is sent when the read's
   * get-and-touch already set this expiry, with `disableTouch`, or within `touchAfter`; a stored
   * cookie that is outdated (or whose lifetime changed) is rewritten.
   */
  async #saveUnchanged(op: OperationContext, sess: SessionData, origin: Origin, encoded: Encoded): Promise<WriteKind> {
    const { seconds } = encoded
    const replicas = this.#replicas
    if (storedCookieIsOutdated(origin, sess, seconds)) return (replicas ?? this.#writer).saveLoaded(op, origin, encoded)
    if (this.#options.disableTouch || this.#recentTouches?.isRecent(op.key) || this.#readCovers(op.sid, sess, seconds, origin))
      return 'unchanged'
    const touched = replicas ? await replicas.touch(op, encoded.expiry) : await this.#client.touch(op.key, encoded.expiry, op.scope)
    if (!touched) return 'none'
    this.#recentTouches?.record(op.key)
    return 'touched'
  }

  /** Whether the get-and-touch that loaded `sess` set the expiry this touch would (within a second), and its stored cookie is fresh. */
  #readCovers(sid: string, sess: SessionData, seconds: number, origin = this.#origins.of(sess)): boolean {
    if (origin === undefined || origin.extendedUntil === 0 || origin.key !== this.#keys.keyOf(sid)) return false
    if (seconds < 0 || storedCookieIsOutdated(origin, sess, seconds)) return false
    if (Math.abs(Date.now() + seconds * 1000 - origin.extendedUntil) >= 1000) return false
    this.#loader.noteLifetime(sess, seconds)
    return true
  }

  /** Deletes a session. Its failure is always passed on, even with `failOpen`: a logout must never be faked. */
  destroy(sid: string, callback?: Callback<void>): Promise<void> {
    checkCallback('destroy', callback)
    return this.#destroy(sid, callback, false)
  }

  #destroy(sid: string, callback: Callback<void> | undefined, internal: boolean, key?: string): Promise<void> {
    const replicas = this.#replicas
    if (replicas === undefined && this.#migration.active) {
      return this.#runner.run<void>({
        operation: 'destroy',
        sid,
        key,
        callback,
        internal,
        fallback: undefined,
        work: async (op) => {
          this.#recentTouches?.forget(op.key)
          await this.#migration.destroySingle(op, this.#loader.tombstoneSeconds())
        },
      })
    }
    if (replicas !== undefined) {
      return this.#runner.run<void>({
        operation: 'destroy',
        sid,
        key,
        callback,
        internal,
        fallback: undefined,
        work: (op) => {
          this.#recentTouches?.forget(op.key)
          return replicas.destroy(op)
        },
      })
    }
    return this.#runner.run<boolean, void>({
      operation: 'destroy',
      sid,
      key,
      callback,
      internal,
      fallback: false,
      send: (op, receiver) => {
        this.#recentTouches?.forget(op.key)
        this.#client.delete(op.key, op.scope, undefined, receiver)
      },
      finish: () => undefined,
    })
  }

  /**
   * Every live session of this store, keyed by ID, as MemoryStore yields them: the keys under this
   * store's prefix on every server (listed with `lru_crawler metadump`), each read like `get` does.
   */
  override all(callback?: Callback<Record<string, SessionData>>): Promise<Record<string, SessionData>> {
    checkCallback('all', callback)
    return this.#runner.list(
      'all',
      () => this.#serverList(),
      callback,
      () => this.#enumeration.all(),
    )
  }

  /** The IDs of this store's live sessions on every server (see docs/listing.md for which are read). */
  ids(callback?: Callback<string[]>): Promise<string[]> {
    checkCallback('ids', callback)
    return this.#runner.list(
      'ids',
      () => this.#serverList(),
      callback,
      () => this.#enumeration.ids(),
    )
  }

  /** How many live sessions this store holds: `ids().length`. */
  override length(callback?: Callback<number>): Promise<number> {
    checkCallback('length', callback)
    return this.#runner.list(
      'length',
      () => this.#serverList(),
      callback,
      () => this.#enumeration.length(),
    )
  }

  /** Deletes this store's sessions one by one; other keys on the servers are left alone (never `flush_all`). */
  override clear(callback?: Callback<void>): Promise<void> {
    checkCallback('clear', callback)
    return this.#runner.list(
      'clear',
      () => this.#serverList(),
      callback,
      () => this.#enumeration.clear().then(() => undefined),
    )
  }

  /** Resolves once every server answers; rejects with an Error naming each one that does not, why, and what to change. */
  ready(): Promise<void> {
    const discovery = this.#discovery
    if (discovery === undefined || discovery.answered)
      return checkReady(this.#client, this.#options.timeout, this.#options.tls !== undefined)
    // With discovery, ready once the endpoint gave a server list and those servers answer.
    const started = performance.now()
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const { endpoint, lastError } = discovery.state
        const reason = `the configuration endpoint ${endpoint} gave no server list within ${this.#options.timeout} ms${lastError ? ` (${lastError})` : ''}`
        reject(
          new MemcacheStoreError('ESERVERDOWN', 'ready', `memcached is not ready: ${reason}`, { server: endpoint, reason, sent: true }),
        )
      }, this.#options.timeout)
      void discovery.first.then(() => {
        clearTimeout(timer)
        resolve()
      })
    }).then(() =>
      checkReady(this.#client, Math.max(1, this.#options.timeout - (performance.now() - started)), this.#options.tls !== undefined),
    )
  }

  /**
   * A synchronous ID generator for express-session's `genid` option, `session({ store, genid:
   * store.genid })`: it hands out IDs that memcached already holds reserved for this store (the
   * seed's collision-checking generate_sid, done ahead of time), or a fresh random one when none is
   * ready. Reserving starts the first time this property is read.
   */
  get genid(): (req?: unknown) => string {
    this.#reservedIds ??= reservedIdsOn(this.#client, {
      prefix: this.prefix,
      keyOf: (sid) => this.#keys.keyOf(sid),
      timeoutMs: this.#options.timeout,
      generate: this.#options.generateId,
      log: this.#log,
      copies: 1 + this.#options.replicas,
    })
    const ids = this.#reservedIds
    return () => ids.take()
  }

  /**
   * What the store is doing, without I/O (cheap enough for a health route): operations and requests
   * in flight, sessions locked, each server's state, genid's pool, and counters per operation.
   */
  diagnostics(): StoreDiagnostics {
    return {
      operationsInFlight: this.#runner.inFlight,
      requestsInFlight: this.#client.inFlight,
      lockedSessions: this.#runner.lockedSessions,
      servers: this.#client.states(),
      genid: this.#reservedIds?.stats() ?? { pooled: 0, skipped: 0, fallbacks: 0, awaitingSave: 0 },
      ...this.#counters.snapshot(),
      ...(this.#replicas ? { replication: structuredClone(this.#replicas.counts) } : {}),
      migration: this.#migration.state,
      ...(this.#discovery ? { discovery: this.#discovery.state } : {}),
    }
  }

  /**
   * Stops accepting operations, lets those in flight settle (each within `timeout`), then closes
   * the connections. Operations still waiting for a session's lock are cancelled (ECLOSED).
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#enumeration.close()
      this.#migration.close()
      this.#discovery?.close()
      await this.#reservedIds?.close()
      await this.#runner.close()
      this.#client.close()
    })()
    return this.#closing
  }

  /**
   * Keeps what was loaded (its CAS and text) with the Session object express-session builds from it,
   * hidden: the loaded object gets its plain prototype back first (see origins.ts), so that
   * `req.session` shows nothing of the store's.
   */
  override createSession(req: Parameters<session.Store['createSession']>[0], sess: SessionData) {
    const origin = this.#origins.of(sess)
    this.#origins.release(sess)
    const created = super.createSession(req, sess)
    if (origin) this.#origins.keep(created, origin)
    return created
  }

  /** How `set` writes: over what the request loaded, as a new session, or as plain data. */
  #save(op: OperationContext, sess: SessionData, encoded: Encoded, loaded: Origin | undefined, isNew: boolean): Promise<WriteKind> {
    const replicas = this.#replicas
    if (loaded !== undefined) {
      return this.#writer.unchanged(loaded, encoded) && sameOwner(loaded.owner, encoded.owner)
        ? this.#saveUnchanged(op, sess, loaded, encoded)
        : (replicas ?? this.#writer).saveLoaded(op, loaded, encoded)
    }
    if (isNew || isNewSessionObject(sess, op.sid)) {
      const reservation = this.#reservedIds?.claim(op.sid)
      if (replicas === undefined) return this.#writer.saveNew(op, sess, encoded, reservation)
      return replicas
        .saveNew(op, sess, encoded, reservation?.copies)
        .then((written) => (written === 'collision' ? this.#collided(op) : written))
    }
    return (replicas ?? this.#writer).upsert(op, encoded)
  }

  /**
   * The session as it will be written. With `userOf`, a session of a user carries the user and a
   * generation: the one it was loaded with when its user is unchanged (a save after
   * `destroySessionsOf` stays ended), else the user's current one, enrolling it in the user's record.
   * Serialization fails (nothing sent) before the record is asked.
   */
  #encodeOwned(sess: SessionData, op: OperationContext, lifetime: Lifetime, loaded: Origin | undefined): Encoded | Promise<Encoded> {
    const users = this.#users
    const user = users?.userOf(sess, op.operation)
    if (users === undefined || user === undefined) return this.#writer.encode(sess, op, lifetime)
    const hash = users.hashOf(user)
    const kept = loaded?.owner?.user === hash ? loaded?.owner : undefined
    const encoded = this.#writer.encode(sess, op, lifetime, kept ?? { user: hash, generation: 0 })
    if (kept !== undefined) return encoded
    return users.enroll(hash, op.sid, op.key, op.scope).then((generation) => {
      setGeneration(encoded.value, generation)
      encoded.owner = { user: hash, generation }
      return encoded
    })
  }

  /** With `userOf`: the record of the session's user, asked at once when this process read the session before. */
  #earlyRecord(op: OperationContext): ReturnType<UserSessions['readEarly']> | undefined {
    const recordKey = this.#users?.rememberedRecordKey(op.key)
    return recordKey === undefined ? undefined : this.#users?.readEarly(recordKey, op.scope)
  }

  /**
   * The IDs of a user's live sessions (`userOf`): those its record lists, each read to check that it
   * is still the user's and of the generation in use. With `hashIds`, needs `secret` (the record
   * then keeps the IDs encrypted).
   */
  sessionsOf(user: string | number, callback?: Callback<string[]>): Promise<string[]> {
    checkCallback('sessionsOf', callback)
    const users = this.#usersFor('sessionsOf', user)
    if (users instanceof Error) return rejectWith(users, callback)
    return this.#runner.list(
      'sessionsOf',
      () => this.#serverList(),
      callback,
      async () => {
        if (!users.listsIds) {
          throw new MemcacheStoreError(
            'ENOTSUPPORTED',
            'sessionsOf',
            'sessionsOf() needs `secret` with `hashIds`: the IDs would otherwise be stored in clear beside their hashed keys. destroySessionsOf() works',
          )
        }
        const hash = users.hashOf(user)
        const live: string[] = []
        await forEachLimited(await users.listed(user, this.#scope()), async (sid) => {
          const sess = await this.#get(sid, undefined, false, true)
          if (sess !== null && this.#origins.of(sess)?.owner?.user === hash) live.push(sid)
        })
        return live
      },
    )
  }

  /**
   * Ends every session of a user (`userOf`), or all but `except`: once it resolves, no process
   * serves any of them, and a request in flight that saves one afterwards does not bring it back.
   * If the user's record is lost (evicted, or with a server), its sessions end too: this may log a
   * user out more than asked, never less.
   */
  destroySessionsOf(user: string | number, options?: { except?: string } | Callback<void>, callback?: Callback<void>): Promise<void> {
    const done = typeof options === 'function' ? options : callback
    const except = typeof options === 'function' ? undefined : options?.except
    checkCallback('destroySessionsOf', done)
    const users = this.#usersFor('destroySessionsOf', user)
    if (users instanceof Error) return rejectWith(users, done)
    return this.#runner.list(
      'destroySessionsOf',
      () => this.#serverList(),
      done,
      async () => {
        const scope = this.#scope()
        let keep: { key: string; value: Buffer | undefined } | undefined
        if (except !== undefined) {
          const key = this.#keys.checked(except, 'destroySessionsOf')
          keep = { key, value: await this.#newestValue(key, scope) }
        }
        const listed = await users.rotate(user, scope, keep)
        // Ended already (their generation is no longer the user's); deleted so that they take no room.
        await forEachLimited(listed, (entry) =>
          (users.listsIds ? this.#destroy(entry, undefined, true) : this.#destroy('', undefined, true, entry)).catch(() => {}),
        )
      },
    )
  }

  /** The users of sessions: a TypeError without `userOf`, and for a user that is not one. */
  #usersFor(operation: Operation, user: unknown): UserSessions | TypeError {
    if (this.#users === undefined) {
      return new TypeError(
        `${operation}() needs the \`userOf\` option: it says which user a session belongs to (e.g. (sess) => sess.passport?.user)`,
      )
    }
    if (!((typeof user === 'string' && user !== '') || (typeof user === 'number' && Number.isFinite(user)))) {
      return new TypeError(
        `Expected the user of ${operation}() to be a non-empty string or a number, got ${user === null ? 'null' : typeof user}`,
      )
    }
    return this.#users
  }

  /** A deadline of `timeout` from now, for requests outside an operation. */
  #scope(): RequestScope {
    return { deadline: performance.now() + this.#options.timeout, sent: false, answered: false }
  }

  /** What a key holds (the newest copy's payload with `replicas`), undefined when nothing. */
  async #newestValue(key: string, scope: RequestScope): Promise<Buffer | undefined> {
    if (this.#replicas === undefined) return (await this.#client.get(key, scope))?.value
    const copies = await Promise.allSettled(this.#client.copiesOf(key, 1 + this.#options.replicas).map((server) => server.get(key, scope)))
    let best: Copy | undefined
    for (const outcome of copies) {
      const copy = outcome.status === 'fulfilled' && outcome.value ? readCopy(outcome.value.value) : undefined
      if (copy && (best === undefined || newer(copy, best))) best = copy
    }
    return best?.kind === 'session' ? best.payload : undefined
  }

  /**
   * Replaces the server list; resolves once the new ring is in use (operations in flight finish on
   * the servers they were sent to). No session is lost to the change: one that misses on its new
   * server is looked for on the previous one and moved there, and every previous server that still
   * answers is drained in the background. Emits `serversChanged` with the servers added and removed.
   */
  setServers(servers: string | Array<string | WeightedServer>, version?: number): Promise<void> {
    try {
      if (this.#discovery) {
        throw new TypeError(
          'The server list comes from `discovery` (the configuration endpoint): setServers would be undone by its next poll',
        )
      }
      this.#changeServers(checkServers(servers, '`servers`'), version)
    } catch (err) {
      return Promise.reject(err)
    }
    return Promise.resolve()
  }

  /** Puts a checked server list in use (setServers, or discovery's). */
  #changeServers(list: ServerOption[], version?: number): void {
    if (this.#options.replicas > list.length - 1) {
      throw new TypeError(
        `Expected at least ${this.#options.replicas + 1} servers for \`replicas: ${this.#options.replicas}\`, got ${list.length}`,
      )
    }
    const { added, removed } = this.#migration.change(list)
    if (added.length > 0 || removed.length > 0) {
      debug('servers changed: added %o, removed %o', added, removed)
      this.#emitSafely('serversChanged', version === undefined ? { added, removed } : { added, removed, version })
    }
  }

  /** Every server's address, as listings report them. */
  #serverList(): string {
    return this.#client.servers.map((server) => server.address).join(',')
  }

  /**
   * A follow-up request (of a read, or a collided save's marker), run like an operation of its own:
   * its own deadline, the session's lock once the first operation released it. Its failure is
   * logged; the first operation's result stands.
   */
  #followUp({ sid, key }: SessionRef, followUp: FollowUp): void {
    const what = followUp.what
    this.#runner
      .run<unknown>({
        operation: what === 'delete' ? 'destroy' : what === 'mark' ? 'set' : 'touch',
        sid,
        key,
        callback: undefined,
        fallback: undefined,
        internal: true,
        work: (op) => {
          if (followUp.what === 'delete') return this.#client.delete(op.key, op.scope, followUp.cas)
          if (followUp.what === 'mark') return this.#client.store('set', op.key, COLLISION_MARKER, followUp.expiry, op.scope)
          return this.#client.touch(op.key, followUp.expiry, op.scope)
        },
      })
      .catch((err: Error) =>
        this.#log.report(
          'housekeeping',
          what === 'mark'
            ? `${err.message} (the marker that keeps a collided session ID refused; the colliding session may still be readable)`
            : `${err.message} (the ${what} that follows a read of an expired or mis-extended session)`,
        ),
      )
  }

  /** What a read left for the copies of a session (read repair and the like), done off the request's path; its failure is logged. */
  #fix({ sid, key }: SessionRef, fixes: CopyFix[]): void {
    const replicas = this.#replicas as ReplicatedSessions
    this.#runner
      .run<void>({
        operation: 'touch',
        sid,
        key,
        callback: undefined,
        fallback: undefined,
        internal: true,
        work: (op) => replicas.fix(op, fixes),
      })
      .catch((err: Error) => this.#log.report('housekeeping', `${err.message} (the repair of a session's copies after a read)`))
  }

  /**
   * A new session's ID was taken (replicas): every copy gets a tombstone, off the request's path and
   * with a deadline of its own (so that it is written even when this save's deadline has passed),
   * and the save fails. Neither holder of the ID can read the other's session, and a save retried
   * under it is refused again.
   */
  #collided(op: OperationContext): never {
    const replicas = this.#replicas as ReplicatedSessions
    this.#counters.collisions++
    debug('collision: %s already existed when a new session was saved under it', op.subject)
    this.#runner
      .run<void>({
        operation: 'destroy',
        sid: op.sid,
        callback: undefined,
        fallback: undefined,
        internal: true,
        work: (o) => replicas.bury(o),
      })
      .catch((err: Error) => this.#log.report('housekeeping', `${err.message} (the tombstone of a collided session ID)`))
    const reason = `${op.subject} already existed in memcached when a new session was saved under it (does a custom genid repeat IDs?); every copy of it was replaced by a tombstone so that neither holder can read the other's`
    throw new MemcacheStoreError('ECOLLISION', op.operation, `session ID collision: ${reason}`, {
      server: this.#client.addressFor(op.key),
      session: op.subject,
      reason,
      sent: true,
    })
  }

  /** A server started failing or answers again. */
  #serverChanged(server: string, change: 'down' | 'up', failure?: MemcachedError): void {
    if (change === 'down') this.#emitSafely('serverDown', { server, error: storeError(failure, 'ready', 'the server') })
    else this.#emitSafely('serverUp', { server })
  }

  /** Emits an event so that a listener that throws changes nothing else (it is logged). */
  #emitSafely(event: string, payload: object): void {
    try {
      this.emit(event, payload)
    } catch (err) {
      this.#log.report('listener', `a '${event}' listener threw (${describeThrown(err)}); the store carries on`)
    }
  }
}

/** What `diagnostics()` returns. */
export interface StoreDiagnostics extends StoreCounters {
  operationsInFlight: number
  requestsInFlight: number
  lockedSessions: number
  servers: ServerState[]
  genid: GenidStats
  /** With `replicas`: what reads found of the copies and rewrote (read repair), in all and per server. */
  replication?: ReplicationCounters
  /** Sessions moved after changes of the server list, and the previous servers still consulted or drained. */
  migration: MigrationState
  /** With `discovery`: the endpoint, the configuration version in use, the last poll and its error. */
  discovery?: DiscoveryState
}

/**
 * A stored cookie a touch must rewrite rather than only move memcached's expiry: one with less than
 * half its lifetime left (a session read in time would soon look expired by it), or one whose
 * lifetime the request changed ("remember me" set on `req.session.cookie.maxAge` alone, which
 * express-session saves with a touch: without the rewrite the next request would renew the old one).
 */
function storedCookieIsOutdated(origin: Origin, sess: SessionData, seconds: number): boolean {
  const { storedExpiry } = origin
  if (storedExpiry !== undefined && seconds > 0 && storedExpiry - Date.now() < (seconds * 1000) / 2) return true
  return !sameLifetime(origin.storedMaxAge, originalMaxAge(sess))
}

/**
 * Whether two cookies' `originalMaxAge` (ms) are one lifetime. express-session recomputes it on every
 * `resetMaxAge` as the time left until the new expiry, which a clock tick in between makes a
 * millisecond shorter now and then: that is no change (memcached counts whole seconds anyway).
 */
function sameLifetime(stored: number | null, current: number | null): boolean {
  if (stored === null || current === null) return stored === current
  return Math.abs(stored - current) < 1000
}

/**
 * A Session object that express-session (`id`) or @fastify/session (`sessionId`) built for this ID:
 * a new one, when it carries no origin of this store's.
 */
function isNewSessionObject(sess: object, sid: string): boolean {
  const candidate = sess as { id?: unknown; sessionId?: unknown; save?: unknown; regenerate?: unknown }
  return (
    (candidate.id === sid || candidate.sessionId === sid) &&
    typeof candidate.save === 'function' &&
    typeof candidate.regenerate === 'function'
  )
}

/** What every read needs: the loader, and where its follow-up requests go. */
interface ReadParts {
  loader: SessionLoader
  followUp(op: SessionRef, followUp: FollowUp): void
}

/**
 * A `get`, as the runner runs it: one request (GET, or get-and-touch by `lifetime`), whose reply is
 * parsed when handed over. One object per read and no closures: what the read extended stays here
 * from the request to the hand-over.
 */
class Read {
  readonly operation = 'get'
  readonly fallback = undefined
  readonly #parts: ReadParts
  readonly sid: string
  readonly key: string | undefined
  readonly callback: Callback<SessionData | null> | undefined
  readonly internal: boolean
  readonly #lifetime: number | undefined
  #extension: Extension | undefined = undefined

  constructor(
    parts: ReadParts,
    sid: string,
    callback: Callback<SessionData | null> | undefined,
    lifetime: number | undefined,
    internal: boolean,
    key?: string,
  ) {
    this.#parts = parts
    this.sid = sid
    this.key = key
    this.callback = callback
    this.#lifetime = lifetime
    this.internal = internal
  }

  send(op: OperationContext, receiver: Receiver<Item | undefined>): void {
    const lifetime = this.#lifetime
    if (lifetime !== undefined) this.#extension = { until: Date.now() + lifetime * 1000, seconds: lifetime }
    this.#parts.loader.read(op, lifetime, receiver)
  }

  finish(item: Item | undefined, op: OperationContext | undefined): SessionData | null {
    if (item === undefined || op === undefined) return null
    const { sess, followUp } = this.#parts.loader.toSession(item.value, item.cas, op, this.#extension, !this.internal)
    if (followUp) this.#parts.followUp(op, followUp)
    return sess
  }
}

/** The store's adapter access (for lib/koa.ts). */
export function storeAccess(): AdapterAccess {
  return adapterAccess as AdapterAccess
}
