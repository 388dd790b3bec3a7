import type { SessionData } from 'express-session'
import type { SessionCodec } from './codec.js'
import { isTombstone } from './copies.js'
import { MemcacheStoreError } from './errors.js'
import type { Reservation } from './genid.js'
import { hasExpired } from './loading.js'
import type { MemcachedClient, Reply, StorageMode } from './memcached/index.js'
import { mergeSessions, sameFieldsButCookie } from './merge.js'
import { type Counters, debug, type WriteKind } from './observability.js'
import { type Origin, type Origins, withoutOriginField } from './origins.js'
import type { Owner } from './owner.js'
import { COLLISION_MARKER, isMarker } from './reservations.js'
import type { OperationContext } from './runner.js'
import { type Lifetime, memcachedExpiry, originalMaxAge, type TtlOption } from './ttl.js'

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
  /** The session's lifetime in seconds (0: no expiry). */
  seconds: number
  /** With `userOf`: the user and generation it is written under. */
  owner: Owner | undefined
}

/** How a collided ID's marker is written: the store's `ttl`, and where a marker goes that could not be written in time. */
export interface CollisionMarking {
  ttl: TtlOption
  /** Writes the marker as an operation of its own (its own deadline), once this one released the session. */
  markLater(op: OperationContext, expiry: number): void
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
  readonly #collisions: CollisionMarking
  /**
   * Asked when a loaded session is missing where it is saved: true when it was found elsewhere and
   * moved there (the server list changed), so that the save merges with it instead of giving up.
   */
  onMiss: ((op: OperationContext) => Promise<boolean>) | undefined

  constructor(
    client: MemcachedClient,
    codec: SessionCodec,
    origins: Origins,
    counters: Counters,
    merge: boolean,
    collisions: CollisionMarking,
  ) {
    this.#client = client
    this.#codec = codec
    this.#origins = origins
    this.#counters = counters
    this.#merge = merge
    this.#collisions = collisions
  }

  /** The session as it will be written. Throws ESERIALIZE or ETOOLARGE (nothing sent). */
  encode(sess: SessionData, op: OperationContext, lifetime: Lifetime, owner?: Owner): Encoded {
    const { value, text } = this.#codec.encode(withoutOriginField(sess), op.key, op, owner)
    return {
      value,
      text,
      expiry: memcachedExpiry(lifetime.seconds),
      cookieExpiry: lifetime.expiresAt,
      cookieMaxAge: originalMaxAge(sess),
      seconds: lifetime.seconds,
      owner,
    }
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
        owner: encoded.owner,
      })
      return 'added'
    }
    this.#counters.collisions++
    debug('collision: %s already existed when a new session was saved under it', op.subject)
    // The framework sent this ID to the client before saving, so two clients now hold it. The stored
    // session is overwritten with a marker rather than deleted: neither holder reads the other's data,
    // and a framework that saves again (Fastify sends its error reply through the hook that saves)
    // finds the ID still taken, where after a DELETE its ADD would succeed. The marker is written even
    // when this operation's time is up, as an operation of its own: the failure reported stays ECOLLISION.
    const expiry = markerExpiry(encoded.seconds, this.#collisions.ttl)
    if (!(await this.#mark(op, expiry))) this.#collisions.markLater(op, expiry)
    const reason = `${op.subject} already existed in memcached when a new session was saved under it (does a custom genid repeat IDs?); the stored session was replaced by a marker so that neither holder can read the other's, and the ID stays refused`
    throw new MemcacheStoreError('ECOLLISION', op.operation, `session ID collision: ${reason}`, {
      server: this.#client.addressFor(op.key),
      session: op.subject,
      reason,
      sent: true,
    })
  }

  /** Writes the collision marker within the operation's deadline; false when it could not (then it is left to a follow-up). */
  async #mark(op: OperationContext, expiry: number): Promise<boolean> {
    if (performance.now() >= op.scope.deadline) return false
    try {
      await this.#client.store('set', op.key, COLLISION_MARKER, expiry, op.scope)
      return true
    } catch {
      return false
    }
  }

  /**
   * Whether a loaded session is saved as it was read or last written, its cookie aside: then only
   * its expiry needs to move (the store's `set` touches instead of writing).
   */
  unchanged(origin: Origin, encoded: Encoded): boolean {
    if (origin.text === encoded.text) return true
    return sameFieldsButCookie(this.#codec.parseFields(origin.text), this.#codec.parseFields(encoded.text))
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
   * Saves a session loaded (or already saved) by this request: a CAS write, so it is never
   * re-created if it disappeared meanwhile (a logout stays final). On a lost race, with `merge`, a
   * three-way merge with what is stored, then another CAS write; without, this request's session is
   * written again with the new CAS (last write wins). Either way a collision marker found in its
   * place is left there: the ID was taken, and this session is over.
   */
  async saveLoaded(op: OperationContext, origin: Origin, encoded: Encoded): Promise<WriteKind> {
    let value = encoded.value
    let cas = origin.cas
    for (let merges = 0; ; merges++) {
      if (cas !== undefined) {
        const written = await this.#write('set', op, value, encoded.expiry, cas)
        if (written.status === 'ok') {
          // After a merge the request's own session object lacks the other request's changes: its
          // next save must merge again rather than overwrite them.
          this.update(origin, written.cas, encoded, merges === 0 || !this.#merge)
          if (!this.#merge) return 'replaced'
          return merges === 0 ? 'cas' : 'merged'
        }
        if (written.status === 'miss') {
          // Moved from a previous server meanwhile: merged with what was moved, like another writer's save.
          if (merges < MAX_MERGES && (await this.onMiss?.(op))) {
            cas = undefined
            continue
          }
          return 'none'
        }
        debug('cas retry: %s changed since this request read it (attempt %d)', op.subject, merges + 1)
      }
      if (merges === MAX_MERGES) throw this.conflict(op)
      const current = await this.#client.get(op.key, op.scope)
      if (current === undefined || isMarker(current.value) || isTombstone(current.value)) return 'none'
      cas = current.cas
      if (!this.#merge) continue
      const merged = this.mergedWith(op, origin, encoded, current.value)
      if (merged === undefined) return 'none'
      value = merged
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
    return this.#codec.encode(withoutOriginField(merged) as unknown as SessionData, op.key, op, encoded.owner).value
  }

  /** What stored bytes hold, as a session; undefined when they are not one. */
  peek(value: Buffer, op: OperationContext): SessionData | undefined {
    const decoded = this.#codec.decode(value, op.key, op)
    return decoded.ok ? decoded.sess : undefined
  }

  /** A save that kept losing races gives up. */
  conflict(op: OperationContext): MemcacheStoreError {
    const reason = `gave up after ${MAX_MERGES} ${this.#merge ? 'merges' : 'retries'}: other requests kept changing the session; nothing was written`
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
    origin.owner = encoded.owner
  }
}

/**
 * memcached's expiry for a collision marker: at least as long as the colliding session could still
 * be presented (the `ttl`, or this session's own lifetime when longer), so that the ID stays refused
 * while either holder's cookie may come back. No expiry when either has none.
 */
function markerExpiry(seconds: number, ttl: TtlOption): number {
  if (typeof ttl !== 'number') return memcachedExpiry(seconds)
  return memcachedExpiry(ttl === 0 || seconds === 0 ? 0 : Math.max(ttl, seconds))
}
