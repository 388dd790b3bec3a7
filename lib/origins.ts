/** What the store remembers about a session it loaded or stored, for that session's next save or touch. */
export interface Origin {
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
}

const DESCRIPTOR: PropertyDescriptor = { value: undefined, writable: true, configurable: true, enumerable: false }

/**
 * Origins travel with the session object as a hidden property rather than in a WeakMap (which
 * keeps young sessions alive longer, docs/internals.md). The symbol is per store and the property
 * not enumerable: JSON, spreads, Object.assign and express-session's copies all skip it.
 */
export class Origins {
  readonly #symbol = Symbol('express-session-memcache origin')

  of(sess: object): Origin | undefined {
    return (sess as Record<symbol, Origin | undefined>)[this.#symbol]
  }

  remember(sess: object, origin: Origin): void {
    // One descriptor for every call (defineProperty reads it and keeps nothing of it).
    DESCRIPTOR.value = origin
    Object.defineProperty(sess, this.#symbol, DESCRIPTOR)
    DESCRIPTOR.value = undefined
  }
}
