import type { SessionData } from 'express-session'
import type { SessionCodec } from './codec.js'
import { MemcacheStoreError } from './errors.js'
import type { Reservation } from './genid.js'
import type { Memcached } from './memcached/memcached.js'
import { mergeSessions } from './merge.js'
import { type Counters, debug } from './observability.js'
import type { Origin, Origins } from './origins.js'
import type { OperationContext } from './runner.js'

/** A save that keeps losing CAS races gives up after this many merges rather than retry forever. */
const MAX_MERGES = 5

/** What the three ways of saving share: the bytes to write, their text, and memcached's expiry. */
export interface Encoded {
  value: Buffer
  text: string
  /** memcached's expiry field for the write. */
  expiry: number
  /** When the session's cookie expires (ms since the epoch), undefined without expiry. */
  cookieExpiry: number | undefined
}

/**
 * How sessions are written: a new session is added (an ID that already exists is a collision); a
 * loaded one is written only while it still exists, with a CAS check and a three-way merge when
 * another request changed it meanwhile; plain data is upserted.
 */
export class SessionWriter {
  readonly #memcached: Memcached
  readonly #codec: SessionCodec
  readonly #origins: Origins
  readonly #counters: Counters
  readonly #merge: boolean
  /** Whether a loaded session's stored cookie decides its expiry near memcached's (see `isExpired`). */
  readonly #isExpired: (sess: SessionData) => boolean

  constructor(
    memcached: Memcached,
    codec: SessionCodec,
    origins: Origins,
    counters: Counters,
    merge: boolean,
    isExpired: (sess: SessionData) => boolean,
  ) {
    this.#memcached = memcached
    this.#codec = codec
    this.#origins = origins
    this.#counters = counters
    this.#merge = merge
    this.#isExpired = isExpired
  }

  /**
   * ADD: fails with ECOLLISION (after deleting what was there) when the ID is taken. An ID that
   * `genid` reserved writes over its own placeholder instead, with the CAS its reservation returned.
   */
  async saveNew(context: OperationContext, sess: object, encoded: Encoded, reservation?: Reservation): Promise<void> {
    let added = reservation
      ? await this.#memcached.store('set', context.key, encoded.value, encoded.expiry, context, reservation.cas)
      : await this.#memcached.store('add', context.key, encoded.value, encoded.expiry, context)
    // The placeholder expired before the first save (a very slow request): the ID is checked with ADD after all.
    if (reservation && added.status === 'miss')
      added = await this.#memcached.store('add', context.key, encoded.value, encoded.expiry, context)
    this.#counters.bytesWritten += encoded.value.length
    if (added.status === 'ok') {
      context.write = 'added'
      this.#origins.remember(sess, this.#originOf(context.key, added.cas, encoded))
      return
    }
    this.#counters.collisions++
    debug('collision: %s already existed when a new session was saved under it', context.subject)
    // express-session sent this ID in a Set-Cookie header before saving, so two clients now hold
    // it: deleting the stored session keeps either from reading the other's data.
    await this.#memcached.delete(context.key, context)
    const reason = `${context.subject} already existed in memcached when a new session was saved under it (does a custom genid repeat IDs?); the stored session was deleted so that neither holder can read the other's`
    throw new MemcacheStoreError('ECOLLISION', context.operation, `session ID collision: ${reason}`, {
      server: this.#memcached.addressFor(context.key),
      session: context.subject,
      reason,
      sent: true,
    })
  }

  /** SET, whatever is stored: for plain session data that did not come from this store. */
  async upsert(context: OperationContext, encoded: Encoded): Promise<void> {
    context.write = 'upserted'
    this.#counters.bytesWritten += encoded.value.length
    await this.#memcached.store('set', context.key, encoded.value, encoded.expiry, context)
  }

  /**
   * Saves a session loaded (or already saved) by this request. It is never re-created if it
   * disappeared meanwhile (a logout stays final). With `merge`, a CAS write; on a lost race, a
   * three-way merge with what is stored, then another CAS write.
   */
  async saveLoaded(context: OperationContext, origin: Origin, encoded: Encoded): Promise<void> {
    const { key } = context
    const memcached = this.#memcached
    if (!this.#merge) {
      this.#counters.bytesWritten += encoded.value.length
      const replaced = await memcached.store('replace', key, encoded.value, encoded.expiry, context)
      context.write = replaced.status === 'ok' ? 'replaced' : 'none'
      if (replaced.status === 'ok') this.#update(origin, replaced.cas, encoded, true)
      return
    }
    let value = encoded.value
    let cas = origin.cas
    for (let merges = 0; ; merges++) {
      if (cas !== undefined) {
        this.#counters.bytesWritten += value.length
        const written = await memcached.store('set', key, value, encoded.expiry, context, cas)
        if (written.status === 'ok') {
          context.write = merges === 0 ? 'cas' : 'merged'
          // After a merge the request's own session object lacks the other request's changes: its
          // next save must merge again rather than overwrite them.
          this.#update(origin, written.cas, encoded, merges === 0)
          return
        }
        if (written.status === 'miss') {
          context.write = 'none'
          return
        }
        debug('cas retry: %s changed since this request read it (attempt %d)', context.subject, merges + 1)
      }
      if (merges === MAX_MERGES) {
        const reason = `gave up after ${MAX_MERGES} merges: other requests kept changing the session; nothing was written`
        throw new MemcacheStoreError('ECONFLICT', context.operation, `memcached cas of ${context.subject} ${reason}`, {
          server: memcached.addressFor(key),
          session: context.subject,
          reason,
          sent: true,
        })
      }
      const current = await memcached.get(key, context)
      context.write = 'none'
      if (current === undefined) return
      const theirs = this.#codec.decode(current.value, key, context)
      // The other writer's session expired meanwhile: it is gone, and this save must not revive it.
      if (theirs.ok && this.#isExpired(theirs.sess)) return
      this.#counters.merges++
      debug('merge: %s is saved over the changes of another request', context.subject)
      const mine = this.#codec.parseFields(encoded.text)
      const merged = theirs.ok
        ? mergeSessions(this.#codec.parseFields(origin.text), mine, theirs.sess as unknown as Record<string, unknown>)
        : mine
      value = this.#codec.encode(merged as unknown as SessionData, key, context).value
      cas = current.cas
    }
  }

  #update(origin: Origin, cas: bigint, encoded: Encoded, keepCas: boolean): void {
    origin.cas = keepCas ? cas : undefined
    origin.text = encoded.text
    origin.storedExpiry = encoded.cookieExpiry
  }

  #originOf(key: string, cas: bigint, encoded: Encoded): Origin {
    return { key, cas, text: encoded.text, storedExpiry: encoded.cookieExpiry, extendedUntil: 0 }
  }
}
