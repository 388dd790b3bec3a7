import { MemcacheStore, type MemcacheStoreOptions } from '../../lib/index.ts'

/**
 * The protocol the suite runs against. `TEST_PROTOCOL=meta` (the second half of `npm test`) gives
 * every store `protocol: 'meta'` and starts memcached with `-B ascii`, where a stray binary request
 * gets no answer: nothing can pass by falling back to the binary protocol.
 */
export const PROTOCOL: 'binary' | 'meta' = process.env.TEST_PROTOCOL === 'meta' ? 'meta' : 'binary'

/** A store speaking the protocol under test (unless the options choose one). */
export function createStore(options: MemcacheStoreOptions = {}): MemcacheStore {
  return new MemcacheStore({ protocol: PROTOCOL, ...options })
}
