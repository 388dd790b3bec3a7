import type { SessionData } from 'express-session'
import { MemcacheStoreError } from './errors.js'
import { metadump } from './memcached/crawler.js'
import { type MemjsServer, serverAddress } from './memcached/memjs-internals.js'

export interface EnumerationSource {
  prefix: string
  /** Idle timeout of a dump, and how long a busy crawler is waited for. */
  timeoutMs: number
  servers(): readonly MemjsServer[]
  /** The address of the server that owns a key (where get and destroy go). */
  addressFor(key: string): string
  /** True when memcached's expiry does not follow the cookie (a `ttl` function): every value is then read. */
  expiryIgnoresCookie: boolean
  /** The store's own get and destroy, so expiry, decryption and locks apply as for any request. */
  get(sid: string): Promise<SessionData | null>
  destroy(sid: string): Promise<void>
}

interface Listed {
  sid: string
  /** memcached's expiry in Unix seconds, -1 for none. */
  exp: number
}

/** Sessions read or deleted at once; the rest wait, so that none of them times out in a queue. */
const CONCURRENCY = 64

/**
 * A key whose memcached expiry is this close is read to decide whether its cookie has expired: the
 * store sets memcached's expiry to the cookie's, rounded up to the second, plus a second of grace.
 */
const DOUBT_SECONDS = 3

/** Pauses between attempts while a server answers BUSY (another crawl, or memcached's own background crawler). */
const BUSY_RETRY_MS = [20, 50, 100, 200, 400]

/**
 * `all`, `ids`, `length` and `clear`: this store's sessions, found by dumping every server's keys
 * and keeping those under the store's prefix. Keys of other applications are never read or deleted.
 */
export class SessionEnumeration {
  readonly #source: EnumerationSource
  readonly #abort = new AbortController()
  /** This store's crawls of one server run one after the other: memcached allows one at a time. */
  readonly #queues = new Map<string, Promise<unknown>>()

  constructor(source: EnumerationSource) {
    this.#source = source
  }

  /** Every live session, keyed by ID, read through the store's get (expired and unreadable ones left out). */
  async all(): Promise<Record<string, SessionData>> {
    const listed = await this.#list()
    const sessions: Record<string, SessionData> = {}
    await forEachLimited(listed, async ({ sid }) => {
      const sess = await this.#source.get(sid)
      if (sess) sessions[sid] = sess
    })
    return sessions
  }

  /**
   * IDs of the live sessions. memcached's expiry decides, without reading values, except for keys
   * whose expiry is within a few seconds (or, with a `ttl` function, all keys): their cookie is read.
   */
  async ids(): Promise<string[]> {
    const listed = await this.#list()
    const now = Date.now() / 1000
    const doubtful = (exp: number) => this.#source.expiryIgnoresCookie || (exp !== -1 && exp - now <= DOUBT_SECONDS)
    const live: string[] = []
    const toRead: string[] = []
    for (const { sid, exp } of listed) (doubtful(exp) ? toRead : live).push(sid)
    await forEachLimited(toRead, async (sid) => {
      if (await this.#source.get(sid)) live.push(sid)
    })
    return live
  }

  async length(): Promise<number> {
    return (await this.ids()).length
  }

  /** Deletes this store's sessions one by one (never flush_all). Sessions created meanwhile are kept. */
  async clear(): Promise<number> {
    const listed = await this.#list(true)
    await forEachLimited(listed, ({ sid }) => this.#source.destroy(sid))
    return listed.length
  }

  /** Ends any dump in progress. */
  close(): void {
    this.#abort.abort()
  }

  /** This store's keys on every server, live by memcached's clock (or every one, with `withExpired`). */
  async #list(withExpired = false): Promise<Listed[]> {
    const { prefix } = this.#source
    if (prefix === '') {
      throw new MemcacheStoreError(
        'ENOPREFIX',
        'metadump',
        'listing sessions needs a non-empty `prefix`: with prefix "" every key on the server would be taken for a session',
      )
    }
    const servers = this.#source.servers()
    const perServer = await Promise.all(servers.map((server) => this.#queued(server, () => this.#dumpWhenFree(server))))
    const now = Date.now() / 1000
    // Each key counts once: memcached does not promise that a crawl visits an item only once.
    const seen = new Set<string>()
    return perServer.flat().filter(({ sid, exp }) => {
      if (seen.has(sid)) return false
      seen.add(sid)
      return withExpired || exp === -1 || exp > now
    })
  }

  async #dumpWhenFree(server: MemjsServer): Promise<Listed[]> {
    const started = performance.now()
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#dump(server)
      } catch (err) {
        if (!(err instanceof MemcacheStoreError) || err.code !== 'EBUSY') throw err
        const waited = performance.now() - started
        const pause = BUSY_RETRY_MS[Math.min(attempt, BUSY_RETRY_MS.length - 1)]
        if (waited + pause > this.#source.timeoutMs) {
          throw new MemcacheStoreError('EBUSY', err.operation, `${err.message}; still busy after ${Math.round(waited)} ms of retries`, {
            server: err.server,
          })
        }
        await new Promise((resolve) => setTimeout(resolve, pause))
      }
    }
  }

  async #dump(server: MemjsServer): Promise<Listed[]> {
    const { prefix } = this.#source
    const address = serverAddress(server)
    const single = this.#source.servers().length === 1
    const listed: Listed[] = []
    await metadump({
      host: server.host,
      port: server.port,
      idleTimeoutMs: this.#source.timeoutMs,
      signal: this.#abort.signal,
      onKey: ({ key, exp }) => {
        if (!key.startsWith(prefix) || key.length === prefix.length) return
        // A copy left on a server that no longer owns the key (the server list changed) is
        // invisible to get and destroy: it is not a session of this store.
        if (!single && this.#source.addressFor(key) !== address) return
        listed.push({ sid: key.slice(prefix.length), exp })
      },
    })
    return listed
  }

  #queued<T>(server: MemjsServer, work: () => Promise<T>): Promise<T> {
    const address = serverAddress(server)
    const previous = this.#queues.get(address) ?? Promise.resolve()
    const next = previous.then(work, work)
    const tail = next.catch(() => {})
    this.#queues.set(address, tail)
    tail.then(() => {
      if (this.#queues.get(address) === tail) this.#queues.delete(address)
    })
    return next
  }
}

/** Runs `work` on every item with at most CONCURRENCY at once; rejects with the first failure. */
async function forEachLimited<T>(items: readonly T[], work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0
  let failed = false
  const worker = async () => {
    try {
      while (!failed && next < items.length) await work(items[next++])
    } catch (err) {
      failed = true
      throw err
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker))
}
