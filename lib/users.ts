// Sessions by user (`userOf`): a user logged out everywhere at once, failing closed.
//
// Each user has a record in memcached (`<prefix>user:<hash of the user>`) holding a generation and
// the IDs of the user's sessions. A session that belongs to a user is stored with an owner header
// naming the user (hashed) and the generation it was written under. A read serves such a session
// only when the user's record holds that same generation: `destroySessionsOf` writes a new one, so
// every session of the user ends at once in every process, and a save still in flight, which writes
// the old generation, cannot bring one back. A record that is lost (evicted, or with a dead server)
// ends its user's sessions the same way: a new record has a new generation. Nothing can make a
// session valid again but a new login, which enrolls it in the record in use.
//
// The header is outside the codec (and encryption) so that a read sees the user's record key
// without decrypting; the hash reveals no user name. Records never expire (exptime 0): a record
// outliving every session of its user costs a few hundred bytes until memcached's LRU reclaims it,
// while one expiring before a session that reads keep extending would log its user out.
import type { SessionCipher } from './crypto.js'
import { describeThrown, MemcacheStoreError, type Operation } from './errors.js'
import type { SessionKeys } from './keys.js'
import type { Item, MemcachedClient, RequestScope, Server } from './memcached/index.js'
import { debug } from './observability.js'
import { readOwner } from './owner.js'

/** A user's record: the generation in use, the session kept by `except`, and the user's sessions. */
interface UserRecord {
  generation: number
  /** `destroySessionsOf(user, { except })`: that session's key and generation stay valid. */
  keep: { key: string; generation: number } | undefined
  /** Session IDs (or, with `hashIds` and no `secret`, their keys), oldest first. */
  sessions: string[]
}

/** Sessions listed in a record before its dead entries are looked for; at most MAX_LISTED are kept. */
const PRUNE_FROM = 64
const MAX_LISTED = 1000
/** Times an enrolment retries after another process changed the record meanwhile. */
const MAX_RETRIES = 5
/** Session keys whose record key a process remembers, so that a read asks for both at once. */
const REMEMBERED_KEYS = 10_000

export interface UserSessionsOptions {
  client: MemcachedClient
  keys: SessionKeys
  cipher: SessionCipher | undefined
  /** How many servers keep each record (1 + replicas). */
  copies: number
  userOf(sess: object): unknown
  /** While the server list changes: the previous servers that may hold a key. */
  previousCopiesOf(key: string): Server[]
}

export class UserSessions {
  readonly #options: UserSessionsOptions
  /** Session key → its user's record key, as last read here (most recent last). */
  readonly #recordKeys = new Map<string, string>()

  constructor(options: UserSessionsOptions) {
    this.#options = options
  }

  /** Whether records list session IDs (else keys: `hashIds` without `secret`, where IDs must not be stored). */
  get listsIds(): boolean {
    return !this.#options.keys.hashed || this.#options.cipher !== undefined
  }

  /** The user's hash (what a record key and an owner header hold). */
  hashOf(user: string | number): string {
    return this.#options.keys.hash(`user\u0000${user}`)
  }

  recordKeyOf(userHash: string): string {
    return `${this.#options.keys.prefix}user:${userHash}`
  }

  /** The user `userOf` gives a session; EUSERCODE when it throws or gives something else than a string or number. */
  userOf(sess: object, operation: Operation): string | number | undefined {
    let user: unknown
    try {
      user = this.#options.userOf(sess)
    } catch (err) {
      throw userCodeError(operation, `\`userOf\` threw: ${describeThrown(err)}`, err)
    }
    if (user === undefined || user === null || user === '') return undefined
    if (typeof user !== 'string' && !(typeof user === 'number' && Number.isFinite(user))) {
      throw userCodeError(operation, `\`userOf\` returned ${typeof user}, not a string, a number or undefined`)
    }
    return user
  }

  /** The record key to ask for beside a session read, when this process read that session before. */
  rememberedRecordKey(sessionKey: string): string | undefined {
    return this.#recordKeys.get(sessionKey)
  }

  /**
   * Whether a stored value may be served: true without an owner header; with one, when the user's
   * record holds the header's generation (or keeps this session). `early` is a record read at the
   * same time as the session (by `rememberedRecordKey`); otherwise the record is read now.
   */
  async admits(value: Buffer, sessionKey: string, scope: RequestScope, early?: { key: string; record: Promise<UserRecord | undefined> }) {
    const { owner } = readOwner(value)
    if (owner === undefined) return true
    const recordKey = this.recordKeyOf(owner.user)
    this.#remember(sessionKey, recordKey)
    const record = await (early?.key === recordKey ? early.record : this.#read(recordKey, scope))
    const valid =
      record !== undefined &&
      (record.generation === owner.generation || (record.keep?.key === sessionKey && record.keep.generation === owner.generation))
    if (!valid) debug('users: a session of an ended generation (%s) was not served', record === undefined ? 'no record' : 'a newer one')
    return valid
  }

  /** Starts reading a record (for `admits`' `early`); a failure surfaces where it is awaited. */
  readEarly(recordKey: string, scope: RequestScope): { key: string; record: Promise<UserRecord | undefined> } {
    const record = this.#read(recordKey, scope)
    record.catch(() => {})
    return { key: recordKey, record }
  }

  /**
   * Adds a session that gained a user to the user's record (made when missing): the generation it
   * is saved under. A session loaded under the same user keeps the generation it was read with
   * instead, so that a save after `destroySessionsOf` stays ended (see the store's `set`).
   */
  enroll(userHash: string, sid: string, sessionKey: string, scope: RequestScope): Promise<number> {
    return this.#enroll(userHash, this.listsIds ? sid : sessionKey, scope)
  }

  /**
   * Ends every session of a user: a new generation in the user's record (all copies). Returns what
   * the record listed, for the caller to delete. `keep`: a session key whose current generation
   * stays valid (`except`).
   */
  async rotate(user: string | number, scope: RequestScope, keep?: { key: string; value: Buffer | undefined }): Promise<string[]> {
    const hash = this.hashOf(user)
    const recordKey = this.recordKeyOf(hash)
    const read = await this.#readCopies(recordKey, scope)
    const current = newest(read)
    const keepOwner = keep?.value && readOwner(keep.value).owner
    const kept = keepOwner?.user === hash && keep ? { key: keep.key, generation: keepOwner.generation } : undefined
    const keptId = kept && current?.sessions.find((entry) => this.#keyOfEntry(entry) === kept.key)
    const record: UserRecord = {
      generation: Math.max(Date.now() * 1024, (current?.generation ?? 0) + 1),
      keep: kept,
      sessions: keptId ? [keptId] : [],
    }
    const value = this.#encode(record, recordKey)
    const written = await Promise.allSettled(read.map(({ server }) => server.store('set', recordKey, value, 0, scope)))
    if (!written.some((outcome) => outcome.status === 'fulfilled' && outcome.value.status === 'ok')) {
      throw (
        (written.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult | undefined)?.reason ?? new Error('not stored')
      )
    }
    debug('users: a user was logged out everywhere (generation %d, %d session(s) listed)', record.generation, current?.sessions.length ?? 0)
    return (current?.sessions ?? []).filter((entry) => entry !== keptId)
  }

  /** The entries of a user's record (session IDs, or keys), as listed; empty without a record. */
  async listed(user: string | number, scope: RequestScope): Promise<string[]> {
    return newest(await this.#readCopies(this.recordKeyOf(this.hashOf(user)), scope))?.sessions ?? []
  }

  /** The key of a listed entry. */
  #keyOfEntry(entry: string): string {
    return this.listsIds ? this.#options.keys.keyOf(entry) : entry
  }

  /** Adds a session to its user's record (made when missing); the generation in use. */
  async #enroll(userHash: string, entry: string, scope: RequestScope): Promise<number> {
    const recordKey = this.recordKeyOf(userHash)
    for (let attempt = 0; ; attempt++) {
      const read = await this.#readCopies(recordKey, scope)
      const current = newest(read)
      const record: UserRecord = current ?? { generation: Date.now() * 1024, keep: undefined, sessions: [] }
      if (!record.sessions.includes(entry)) record.sessions.push(entry)
      if (record.sessions.length > PRUNE_FROM) record.sessions = await this.#live(record.sessions, scope)
      const value = this.#encode(record, recordKey)
      // Each copy is written only if it is still what was read (CAS, or ADD where there was none), so
      // that an enrolment never writes over a new generation that `rotate` wrote meanwhile.
      const written = await Promise.allSettled(
        read.map(({ server, item }) =>
          item === undefined ? server.store('add', recordKey, value, 0, scope) : server.store('set', recordKey, value, 0, scope, item.cas),
        ),
      )
      const conflict = written.some((outcome) => outcome.status === 'fulfilled' && outcome.value.status !== 'ok')
      const stored = written.some((outcome) => outcome.status === 'fulfilled' && outcome.value.status === 'ok')
      if (!conflict && stored) return record.generation
      if (!conflict) throw (written[0] as PromiseRejectedResult).reason
      if (attempt === MAX_RETRIES) throw new Error(`the user's record kept changing (${MAX_RETRIES} retries)`)
    }
  }

  /** The entries whose sessions are still stored; the newest MAX_LISTED of them. */
  async #live(entries: string[], scope: RequestScope): Promise<string[]> {
    const { client } = this.#options
    const found = await Promise.all(entries.map((entry) => client.get(this.#keyOfEntry(entry), scope).catch(() => true)))
    return entries.filter((_, i) => found[i] !== undefined).slice(-MAX_LISTED)
  }

  /** The newest of a record's copies, or undefined when no copy holds one (fail closed: no session of the user is valid). */
  async #read(recordKey: string, scope: RequestScope): Promise<UserRecord | undefined> {
    return newest(await this.#readCopies(recordKey, scope))
  }

  /**
   * Every copy of a record: what each server that answered holds. Throws when none answered. While
   * the server list changes, a record found only on a previous server is copied to the new ones.
   */
  async #readCopies(
    recordKey: string,
    scope: RequestScope,
  ): Promise<Array<{ server: Server; item: Item | undefined; record: UserRecord | undefined }>> {
    const servers = this.#options.client.copiesOf(recordKey, this.#options.copies)
    const outcomes = await Promise.allSettled(servers.map((server) => server.get(recordKey, scope)))
    const read = outcomes.flatMap((outcome, i) =>
      outcome.status === 'fulfilled'
        ? [{ server: servers[i], item: outcome.value, record: outcome.value && this.#decode(outcome.value.value, recordKey) }]
        : [],
    )
    if (read.length === 0) throw (outcomes[0] as PromiseRejectedResult).reason
    const best = newest(read)
    if (best === undefined) {
      for (const server of this.#options.previousCopiesOf(recordKey)) {
        const item = await server.get(recordKey, scope).catch(() => undefined)
        const record = item && this.#decode(item.value, recordKey)
        if (item === undefined || record === undefined) continue
        await Promise.allSettled(read.map((copy) => copy.server.store('add', recordKey, item.value, 0, scope)))
        return this.#readCopies(recordKey, scope)
      }
    } else {
      // Copies that are missing or older are brought up to the newest (read repair), without waiting.
      const value = this.#encode(best, recordKey)
      for (const copy of read) {
        if (copy.record === undefined || copy.record.generation < best.generation) {
          const write =
            copy.item === undefined
              ? copy.server.store('add', recordKey, value, 0, scope)
              : copy.server.store('set', recordKey, value, 0, scope, copy.item.cas)
          write.catch(() => {})
        }
      }
    }
    return read
  }

  #encode(record: UserRecord, recordKey: string): Buffer {
    const text = Buffer.from(JSON.stringify({ g: record.generation, k: record.keep, s: record.sessions }))
    return this.#options.cipher ? this.#options.cipher.seal(text, recordKey) : text
  }

  /** A record's bytes, or undefined when they are not one (then, like a missing record, no session of its user is valid). */
  #decode(value: Buffer, recordKey: string): UserRecord | undefined {
    let text = value
    if (this.#options.cipher) {
      const opened = this.#options.cipher.open(value, recordKey)
      if (!opened.ok) return undefined
      text = opened.plain
    }
    try {
      const parsed = JSON.parse(text.toString()) as { g?: unknown; k?: unknown; s?: unknown }
      if (!Number.isSafeInteger(parsed.g) || !Array.isArray(parsed.s)) return undefined
      const keep = parsed.k as UserRecord['keep'] | undefined
      return { generation: parsed.g as number, keep, sessions: parsed.s.filter((entry): entry is string => typeof entry === 'string') }
    } catch {
      return undefined
    }
  }

  #remember(sessionKey: string, recordKey: string): void {
    const map = this.#recordKeys
    map.delete(sessionKey)
    map.set(sessionKey, recordKey)
    if (map.size > REMEMBERED_KEYS) map.delete(map.keys().next().value as string)
  }
}

/** The copy with the highest generation. */
function newest(read: Array<{ record: UserRecord | undefined }>): UserRecord | undefined {
  let best: UserRecord | undefined
  for (const { record } of read) if (record && (best === undefined || record.generation > best.generation)) best = record
  return best
}

function userCodeError(operation: Operation, reason: string, cause?: unknown): MemcacheStoreError {
  return new MemcacheStoreError('EUSERCODE', operation, reason, { reason, cause })
}
