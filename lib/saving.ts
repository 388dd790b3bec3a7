import type { SessionData } from 'express-session'
import type { SessionCodec } from './codec.js'
import { MemcacheStoreError } from './errors.js'
import type { Reservation } from './genid.js'
import { hasExpired } from './loading.js'
import type { MemcachedClient, Reply, StorageMode } from './memcached/index.js'
import { mergeSessions } from './merge.js'
import { type Counters, debug, type WriteKind } from './observability.js'
import type { Origin, Origins } from './origins.js'
import type { OperationContext } from './runner.js'
import { type Lifetime, memcachedExpiry, originalMaxAge } from './ttl.js'

/** A save that keeps losing CAS races gives up after this many merges rather than retry forever. */
export const MAX_MERGES = 5

/** What the ways of saving share: the bytes to write, their text, and memcached's expiry. */
export interface Encoded {
  value: Buffer
  text: string
  /** memcached's expiry field for the write. */
  expiry: number
  /** When the session's cookie expires (ms since the epoch), undefined without expiry. */
  cookieExpiry: number | undefined
  /** The cookie's `originalMaxAge` (ms), null without one. */
  cookieMaxAge: number | null
}

/**
 * How sessions are written: a new session is added (an ID that already exists is a collision); a
 * loaded one is written only while it still exists, with a CAS check and a three-way merge when
 * another request changed it meanwhile; plain data is upserted. Every write goes through `#write`,
 * which counts the bytes.
 */
export class SessionWriter {
  readonly #client: MemcachedClient
  readonly #codec: SessionCodec
  readonly #origins: Origins
  readonly #counters: Counters
  readonly #merge: boolean
  /**
   * Asked when a loaded session is missing where it is saved: true when it was found elsewhere and
   * moved there (the server list changed), so that the save merges with it instead of giving up.
   */
  onMiss: ((op: OperationContext) => Promise<boolean>) | undefined

  constructor(client: MemcachedClient, codec: SessionCodec, origins: Origins, counters: Counters, merge: boolean) {
    this.#client = client
    this.#codec = codec
    this.#origins = origins
    this.#counters = counters
    this.#merge = merge
  }

  /** The session as it will be written. Throws ESERIALIZE or ETOOLARGE (nothing sent). */
  encode(sess: SessionData, op: OperationContext, lifetime: Lifetime): Encoded {
    const { value, text } = this.#codec.encode(sess, op.key, op)
    return { value, text, expiry: memcachedExpiry(lifetime.seconds), cookieExpiry: lifetime.expiresAt, cookieMaxAge: originalMaxAge(sess) }
  }

  /**
   * ADD: fails with ECOLLISION when the ID is taken. An ID that `genid` reserved writes over its own
   * placeholder instead, with the CAS its reservation returned.
   */
  async saveNew(op: OperationContext, sess: object, encoded: Encoded, reservation?: Reservation): Promise<WriteKind> {
    let added = reservation
      ? await this.#write('set', op, encoded.value, encoded.expiry, reservation.copies[0])
      : await this.#write('add', op, encoded.value, encoded.expiry)
    // The placeholder expired before the first save (a very slow request): the ID is checked with ADD after all.
    if (reservation && added.status === 'miss') added = await this.#write('add', op, encoded.value, encoded.expiry)
    if (added.status === 'ok') {
      this.#origins.remember(sess, {
        key: op.key,
        cas: added.cas,
        text: encoded.text,
        storedExpiry: encoded.cookieExpiry,
        storedMaxAge: encoded.cookieMaxAge,
        extendedUntil: 0,
      })
      return 'added'
    }
    this.#counters.collisions++
    debug('collision: %s already existed when a new session was saved under it', op.subject)
    // express-session sent this ID in a Set-Cookie header before saving, so two clients now hold
    // it: deleting the stored session keeps either from reading the other's data.
    await this.#client.delete(op.key, op.scope)
    const reason = `${op.subject} already existed in memcached when a new session was saved under it (does a custom genid repeat IDs?); the stored session was deleted so that neither holder can read the other's`
    throw new MemcacheStoreError('ECOLLISION', op.operation, `session ID collision: ${reason}`, {
      server: this.#client.addressFor(op.key),
      session: op.subject,
      reason,
      sent: true,
    })
  }

  /** SET, whatever is stored: for plain session data that did not come from this store. */
  async upsert(op: OperationContext, encoded: Encoded): Promise<WriteKind> {
    await this.#write('set', op, encoded.value, encoded.expiry)
    return 'upserted'
  }

  /** DELETE: a save whose cookie has expired. */
  async remove(op: OperationContext): Promise<WriteKind> {
    await this.#client.delete(op.key, op.scope)
    return 'deleted'
  }

  /**
   * Saves a session loaded (or already saved) by this request. It is never re-created if it
   * disappeared meanwhile (a logout stays final). With `merge`, a CAS write; on a lost race, a
   * three-way merge with what is stored, then another CAS write.
   */
  async saveLoaded(op: OperationContext, origin: Origin, encoded: Encoded): Promise<WriteKind> {
    if (!this.#merge) {
      let replaced = await this.#write('replace', op, encoded.value, encoded.expiry)
      if (replaced.status === 'miss' && (await this.onMiss?.(op)))
        replaced = await this.#write('replace', op, encoded.value, encoded.expiry)
      if (replaced.status !== 'ok') return 'none'
      this.update(origin, replaced.cas, encoded, true)
      return 'replaced'
    }
    let value = encoded.value
    let cas = origin.cas
    for (let merges = 0; ; merges++) {
      if (cas !== undefined) {
        const written = await this.#write('set', op, value, encoded.expiry, cas)
        if (written.status === 'ok') {
          // After a merge the request's own session object lacks the other request's changes: its
          // next save must merge again rather than overwrite them.
          this.update(origin, written.cas, encoded, merges === 0)
          return merges === 0 ? 'cas' : 'merged'
        }
        if (written.status === 'miss') {
          // Moved from a previous server meanwhile: merged with what was moved, like another writer's save.
          if (await this.onMiss?.(op)) {
            cas = undefined
            continue
          }
          return 'none'
        }
        debug('cas retry: %s changed since this request read it (attempt %d)', op.subject, merges + 1)
      }
      if (merges === MAX_MERGES) throw this.conflict(op)
      const current = await this.#client.get(op.key, op.scope)
      if (current === undefined) return 'none'
      const merged = this.mergedWith(op, origin, encoded, current.value)
      if (merged === undefined) return 'none'
      value = merged
      cas = current.cas
    }
  }

  /**
   * What a save that lost a race writes next: its changes merged at the top level into what the
   * other writer stored (`theirs`, their bytes), or undefined when theirs has expired meanwhile (it
   * is gone, and this save must not revive it).
   */
  mergedWith(op: OperationContext, origin: Origin, encoded: Encoded, theirs: Buffer): Buffer | undefined {
    const stored = this.#codec.decode(theirs, op.key, op)
    if (stored.ok && hasExpired(stored.sess)) return undefined
    this.#counters.merges++
    debug('merge: %s is saved over the changes of another request', op.subject)
    const mine = this.#codec.parseFields(encoded.text)
    const merged = stored.ok
      ? mergeSessions(this.#codec.parseFields(origin.text), mine, stored.sess as unknown as Record<string, unknown>)
      : mine
    return this.#codec.encode(merged as unknown as SessionData, op.key, op).value
  }

  /** What stored bytes hold, as a session; undefined when they are not one. */
  peek(value: Buffer, op: OperationContext): SessionData | undefined {
    const decoded = this.#codec.decode(value, op.key, op)
    return decoded.ok ? decoded.sess : undefined
  }

  /** A save that kept losing races gives up. */
  conflict(op: OperationContext): MemcacheStoreError {
    const reason = `gave up after ${MAX_MERGES} merges: other requests kept changing the session; nothing was written`
    return new MemcacheStoreError('ECONFLICT', op.operation, `memcached cas of ${op.subject} ${reason}`, {
      server: this.#client.addressFor(op.key),
      session: op.subject,
      reason,
      sent: true,
    })
  }

  /** Every write of a session value: counted, then sent. */
  #write(mode: StorageMode, op: OperationContext, value: Buffer, expiry: number, cas?: bigint): Promise<Reply> {
    this.#counters.bytesWritten += value.length
    return this.#client.store(mode, op.key, value, expiry, op.scope, cas)
  }

  /** What the origin of a saved session says after the write: its new CAS (none after a merge: the next save merges again), text and cookie. */
  update(origin: Origin, cas: bigint, encoded: Encoded, keepCas: boolean): void {
    origin.cas = keepCas ? cas : undefined
    origin.text = encoded.text
    origin.storedExpiry = encoded.cookieExpiry
    origin.storedMaxAge = encoded.cookieMaxAge
  }
}
