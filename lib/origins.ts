import { inspect } from 'node:util'
import type { Owner } from './owner.js'

/** An origin's fields, as the loader and the writer fill them in. */
export interface OriginFields {
  /** The memcached key it was read from or written to: a save under another key is not this session's. */
  key: string
  /** The CAS of what is stored; undefined after a merged write, so the next save merges again. */
  cas: bigint | undefined
  /** The session as this request last read or wrote it: the base of a three-way merge. */
  text: string
  /** When the stored cookie expires (ms since the epoch); undefined for a cookie without expiry. */
  storedExpiry: number | undefined
  /** The stored cookie's `originalMaxAge` (ms), null without one: the lifetime each touch renews. */
  storedMaxAge: number | null
  /** Until when a get-and-touch already extended memcached's expiry (ms since the epoch); 0 when it did not. */
  extendedUntil: number
  /** With replicas: each copy's CAS as read or written (undefined where the copy was missing or unanswered), and the version. */
  copies?: Array<bigint | undefined>
  version?: number
  /** With `userOf`: the user and generation it was read or written under (see users.ts). */
  owner?: Owner
}

/**
 * The field through which a session that `get` hands out carries its origin, for frameworks that
 * rebuild the session object by copying its fields (@fastify/session copies every enumerable key
 * into a new Session with `for...in`; a hidden property would be lost, and every save would become
 * an upsert). It is the store's own: a value stored under this name is never written (see
 * `withoutOriginField`) and never read back as an origin.
 */
export const ORIGIN_FIELD = 'express-session-memcache:origin'

/**
 * What the store remembers about a session it loaded or stored, for that session's next save or
 * touch. It travels with the session object, so that two requests of one session each merge
 * against what they read themselves (a per-ID record of "the last read" would hand a request that
 * read an older version another request's newer base, and its merge would undo that request's
 * changes). An Origin serializes to nothing (`toJSON`), so JSON, safe-stable-stringify (Fastify's
 * change detection) and the store's own writes skip it; only this module can make one, and only the
 * store that made it accepts it (a brand check, not a shape), so no session data can pass for one.
 */
export class Origin implements OriginFields {
  key: string
  cas: bigint | undefined
  text: string
  storedExpiry: number | undefined
  storedMaxAge: number | null
  extendedUntil: number
  copies: Array<bigint | undefined> | undefined
  version: number | undefined
  owner: Owner | undefined
  readonly #owner: Origins

  constructor(owner: Origins, fields: OriginFields) {
    this.#owner = owner
    this.key = fields.key
    this.cas = fields.cas
    this.text = fields.text
    this.storedExpiry = fields.storedExpiry
    this.storedMaxAge = fields.storedMaxAge
    this.extendedUntil = fields.extendedUntil
    this.copies = fields.copies
    this.version = fields.version
    this.owner = fields.owner
  }

  /** Whether `value` is an origin made by `owner`. */
  static madeBy(value: unknown, owner: Origins): value is Origin {
    return typeof value === 'object' && value !== null && #owner in value && value.#owner === owner
  }

  toJSON(): undefined {
    return undefined
  }

  /** Logged sessions show the field, not the stored text and CAS. */
  [inspect.custom](): string {
    return '[origin]'
  }
}

const DESCRIPTOR: PropertyDescriptor = { value: undefined, writable: true, configurable: true, enumerable: false }

/**
 * Origins travel with the session object rather than in a WeakMap (which keeps young sessions alive
 * longer, docs/internals.md), in a hidden property: the symbol is per store and the property not
 * enumerable, so JSON, spreads, Object.assign and express-session's copies skip it.
 *
 * A session `get` hands out also shows its origin to a framework's copy: its prototype (one per
 * store, itself inheriting Object.prototype) has ORIGIN_FIELD as an enumerable getter of the hidden
 * property. `for...in`, which @fastify/session copies with, lists inherited enumerable properties,
 * so the copy gets the origin as a field of its own; Object.keys, JSON, spreads, Object.assign and
 * util.inspect list own properties only, so the session looks as it did. express-session never
 * sees it: `createSession` gives the object back Object.prototype before building `req.session`.
 */
export class Origins {
  readonly #symbol = Symbol('express-session-memcache origin')
  /** The prototype of the sessions `get` hands out. */
  readonly #carrier: object

  constructor() {
    const symbol = this.#symbol
    this.#carrier = Object.create(Object.prototype, {
      [ORIGIN_FIELD]: {
        enumerable: true,
        get(this: Record<symbol, Origin | undefined>) {
          return this[symbol]
        },
      },
    })
  }

  /** The origin `sess` keeps hidden, or carries in ORIGIN_FIELD (a framework's copy) if this store made it. */
  of(sess: object): Origin | undefined {
    const hidden = (sess as Record<symbol, Origin | undefined>)[this.#symbol]
    if (hidden !== undefined) return hidden
    const carried = (sess as Record<string, unknown>)[ORIGIN_FIELD]
    return carried !== undefined && Origin.madeBy(carried, this) ? carried : undefined
  }

  /** A new origin for `sess`, kept in the hidden property. */
  remember(sess: object, fields: OriginFields): Origin {
    const origin = new Origin(this, fields)
    this.keep(sess, origin)
    return origin
  }

  /** Keeps `origin` with `sess` in the hidden property. */
  keep(sess: object, origin: Origin): void {
    // One descriptor for every call (defineProperty reads it and keeps nothing of it).
    DESCRIPTOR.value = origin
    Object.defineProperty(sess, this.#symbol, DESCRIPTOR)
    DESCRIPTOR.value = undefined
  }

  /**
   * A new origin for a session `get` hands out: kept hidden, and shown to `for...in` copies through
   * the prototype. Stored data under ORIGIN_FIELD (never written by the store) is dropped: it would
   * hide the getter, and it is nobody's origin.
   */
  carry(sess: object, fields: OriginFields): Origin {
    const origin = this.remember(sess, fields)
    if (Object.hasOwn(sess, ORIGIN_FIELD)) delete (sess as Record<string, unknown>)[ORIGIN_FIELD]
    Object.setPrototypeOf(sess, this.#carrier)
    return origin
  }

  /** Gives a session `get` handed out back its plain prototype (express-session's `req.session` must not show the field). */
  release(sess: object): void {
    if (Object.getPrototypeOf(sess) === this.#carrier) Object.setPrototypeOf(sess, Object.prototype)
  }
}

/** `sess` as it is written: without an own ORIGIN_FIELD (a framework's copy), as a shallow copy of its other own fields. */
export function withoutOriginField<T extends object>(sess: T): T {
  if (!Object.hasOwn(sess, ORIGIN_FIELD)) return sess
  const copy: Record<string, unknown> = {}
  for (const name of Object.keys(sess)) if (name !== ORIGIN_FIELD) copy[name] = (sess as Record<string, unknown>)[name]
  return copy as T
}
