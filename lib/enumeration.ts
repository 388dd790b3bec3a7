import type { SessionData } from 'express-session'
import { MemcacheStoreError, type Operation, storeError } from './errors.js'
import { MemcachedError, metadump, type Server } from './memcached/index.js'
import { debug } from './observability.js'

export interface EnumerationSource {
  prefix: string
  /** Idle timeout of a dump, and how long a busy crawler is waited for. */
  timeoutMs: number
  /** The servers of the ring in use. */
  servers(): readonly Server[]
  /** The addresses of the servers that keep a key's copies (its own first; one without `replicas`). */
  copiesOf(key: string): string[]
  /**
   * With `replicas`, a key's newest copy may be a tombstone (a logout): a key is then counted without
   * reading it only when every copy listed is too large to be one.
   */
  replicated: boolean
  /**
   * True when memcached's expiry alone cannot tell a live session (a `ttl` function, or `userOf`:
   * a session its user was logged out of everywhere lives on in memcached): every value is then read.
   */
  readEveryValue: boolean
  /** With `hashIds`: keys hold a hash of the ID, so `ids()` and `all()` cannot say which IDs they list. */
  hashedIds: boolean
  /** How long `genid`'s placeholders live: keys expiring that soon are read, since they may be one. */
  placeholderSeconds: number
  /** The store's own get and destroy of a listed key, so expiry, decryption and locks apply as for any request. */
  get(key: string): Promise<SessionData | null>
  destroy(key: string): Promise<void>
}

interface Listed {
  key: string
  /** memcached's expiry in Unix seconds, -1 for none (the latest of its copies'). */
  exp: number
  /** Whether a copy listed is small enough to be a tombstone or a placeholder (replicas). */
  small: boolean
}

/**
 * An item this small (memcached's size: header, key and value) may hold a tombstone or a placeholder
 * rather than a session: its header takes about 56 bytes besides the key, a tombstone's value 10, a
 * placeholder's 35, and the smallest session's (its cookie alone) more than 80.
 */
const SMALL_ITEM_BYTES = 56 + 80

/** Sessions read or deleted at once; the rest wait, so that none of them times out in a queue. */
const CONCURRENCY = 64

/** A dump must end within this many times `timeout`, however steadily the server trickles keys. */
export const DUMP_DEADLINE_TIMEOUTS = 10

/**
 * A key whose memcached expiry is this close is read rather than counted: its cookie may have
 * expired (the store sets memcached's expiry to the cookie's, rounded up, plus a second of grace),
 * or it may be an ID reserved by `genid` (a placeholder that lives RESERVATION_TTL_SECONDS).
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
    this.#refuseHashed('all')
    const listed = await this.#list('all')
    const sessions: Record<string, SessionData> = {}
    const { prefix } = this.#source
    await forEachLimited(listed, async ({ key }) => {
      const sess = await this.#source.get(key)
      if (sess) sessions[key.slice(prefix.length)] = sess
    })
    return sessions
  }

  /**
   * IDs of the live sessions. memcached's expiry decides, without reading values, except for keys
   * whose expiry is within a few seconds (or, with a `ttl` function, all keys): their cookie is read.
   */
  async ids(): Promise<string[]> {
    this.#refuseHashed('ids')
    const { prefix } = this.#source
    return (await this.#live('ids')).map((key) => key.slice(prefix.length))
  }

  async length(): Promise<number> {
    return (await this.#live('length')).length
  }

  /** The keys of the live sessions (see `ids`). */
  async #live(operation: Operation): Promise<string[]> {
    const listed = await this.#list(operation)
    const now = Date.now() / 1000
    const horizon = Math.max(DOUBT_SECONDS, this.#source.placeholderSeconds + 1)
    const doubtful = ({ exp, small }: Listed) => this.#source.readEveryValue || small || (exp !== -1 && exp - now <= horizon)
    const live: string[] = []
    const toRead: string[] = []
    for (const item of listed) (doubtful(item) ? toRead : live).push(item.key)
    await forEachLimited(toRead, async (key) => {
      if (await this.#source.get(key)) live.push(key)
    })
    return live
  }

  /** `ids()` and `all()` under `hashIds`: the keys hold no ID to return. */
  #refuseHashed(operation: Operation): void {
    if (!this.#source.hashedIds) return
    throw new MemcacheStoreError(
      'ENOTSUPPORTED',
      operation,
      `${operation}() cannot list session IDs with \`hashIds\`: memcached holds only a hash of each ID, which is the point of the option. \`length()\` and \`clear()\` work; \`sessionsOf(user)\` lists one user's sessions (with \`secret\`)`,
    )
  }

  /** Deletes this store's sessions one by one (never flush_all). Sessions created meanwhile are kept. */
  async clear(): Promise<number> {
    const listed = await this.#list('clear', true)
    await forEachLimited(listed, ({ key }) => this.#source.destroy(key))
    return listed.length
  }

  /** Ends any dump in progress. */
  close(): void {
    this.#abort.abort('abandoned: the store was closed')
  }

  /** This store's keys on every server, live by memcached's clock (or every one, with `withExpired`). */
  async #list(operation: Operation, withExpired = false): Promise<Listed[]> {
    const { prefix } = this.#source
    if (prefix === '') {
      throw new MemcacheStoreError(
        'ENOPREFIX',
        operation,
        'listing sessions needs a non-empty `prefix`: with prefix "" every key on the server would be taken for a session',
      )
    }
    const servers = this.#source.servers()
    const perServer = await Promise.all(servers.map((server) => this.#queued(server, () => this.#dumpWhenFree(server, operation))))
    const now = Date.now() / 1000
    // Each key counts once: a key has a copy on several servers (replicas), and memcached does not
    // promise that a crawl visits an item only once.
    const byKey = new Map<string, Listed>()
    for (const item of perServer.flat()) {
      const seen = byKey.get(item.key)
      if (seen === undefined) byKey.set(item.key, item)
      else {
        seen.exp = seen.exp === -1 || item.exp === -1 ? -1 : Math.max(seen.exp, item.exp)
        seen.small ||= item.small
      }
    }
    return [...byKey.values()].filter(({ exp }) => withExpired || exp === -1 || exp > now)
  }

  async #dumpWhenFree(server: Server, operation: Operation): Promise<Listed[]> {
    const started = performance.now()
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#dump(server, operation)
      } catch (err) {
        if (!(err instanceof MemcachedError) || err.code !== 'EBUSY') throw storeError(err, operation, undefined)
        const waited = performance.now() - started
        const pause = BUSY_RETRY_MS[Math.min(attempt, BUSY_RETRY_MS.length - 1)]
        if (waited + pause > this.#source.timeoutMs) {
          const busy = storeError(err, operation, undefined)
          throw new MemcacheStoreError('EBUSY', operation, `${busy.message}; still busy after ${Math.round(waited)} ms of retries`, {
            server: busy.server,
            command: busy.command,
            reason: busy.reason,
            sent: true,
          })
        }
        await new Promise((resolve) => setTimeout(resolve, pause))
      }
    }
  }

  async #dump(server: Server, operation: Operation): Promise<Listed[]> {
    const { prefix, timeoutMs } = this.#source
    const address = server.address
    const { replicated } = this.#source
    const single = this.#source.servers().length === 1
    const listed: Listed[] = []
    await metadump({
      transport: server.lister,
      idleTimeoutMs: timeoutMs,
      deadlineMs: DUMP_DEADLINE_TIMEOUTS * timeoutMs,
      signal: this.#abort.signal,
      onKey: ({ key, exp, size }) => {
        if (!isSessionKey(key, prefix)) return
        // A copy left on a server that keeps none of the key's copies (the server list changed) is
        // invisible to get and destroy: it is not a session of this store.
        if (!single && !this.#source.copiesOf(key).includes(address)) return
        listed.push({
          key,
          exp,
          small: replicated && size > 0 && size - Buffer.byteLength(key) < SMALL_ITEM_BYTES,
        })
      },
    })
    debug('%s: %s found %d key(s) of this store', address, operation, listed.length)
    return listed
  }

  #queued<T>(server: Server, work: () => Promise<T>): Promise<T> {
    const address = server.address
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

/**
 * Whether a listed key is one of this store's sessions: the prefix, then an ID without `:`.
 * Prefixes nest (`app:` and `app:admin:` on one server): without this rule the first store would
 * list, read and clear the second's sessions. express-session's IDs never contain `:`; sessions
 * whose custom IDs do still work, but cannot be listed.
 */
export function isSessionKey(key: string, prefix: string): boolean {
  return key.length > prefix.length && key.startsWith(prefix) && !key.includes(':', prefix.length)
}

/** Runs `work` on every item with at most CONCURRENCY at once; rejects with the first failure. */
export async function forEachLimited<T>(items: readonly T[], work: (item: T) => Promise<unknown>): Promise<void> {
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
