import { createHash, createHmac } from 'node:crypto'
import { MemcacheStoreError, type Operation, redactId } from './errors.js'

/** memcached rejects longer keys and, over the binary protocol, closes the connection. */
export const MAX_KEY_BYTES = 250

// Whitespace and control characters (C0, DEL, C1, and Unicode line/paragraph separators): the
// text protocol splits on them, so such a key could neither be listed nor safely sent.
const UNSAFE_KEY_CHARS = /[\s\x00-\x1f\x7f-\x9f]/u

/** Why a key cannot be used, or undefined when it can. */
export function keyProblem(key: string): string | undefined {
  if (isPrintableAscii(key)) return undefined
  if (!key.isWellFormed()) {
    // Lone surrogates all encode to U+FFFD, so two different IDs would share one key.
    return 'contains an unpaired UTF-16 surrogate'
  }
  if (UNSAFE_KEY_CHARS.test(key)) return 'contains whitespace or control characters'
  const bytes = Buffer.byteLength(key)
  if (bytes > MAX_KEY_BYTES) return `is ${bytes} bytes long; memcached allows ${MAX_KEY_BYTES}`
  return undefined
}

/**
 * The usual key (a prefix and a random ID): printable ASCII (0x21-0x7e) only, at most MAX_KEY_BYTES
 * characters. Such a key passes every check of `keyProblem` (well-formed, no whitespace or control
 * character, one byte per character): one pass over its characters instead of three checks.
 */
function isPrintableAscii(key: string): boolean {
  if (key.length > MAX_KEY_BYTES) return false
  for (let i = 0; i < key.length; i++) {
    const code = key.charCodeAt(i)
    if (code < 0x21 || code > 0x7e) return false
  }
  return true
}

/** The memcached key of a session: `prefix + sid`, or an error saying why that key is unusable. */
export function sessionKey(prefix: string, sid: unknown, operation: Operation): string {
  if (typeof sid !== 'string' || sid.length === 0) {
    throw new MemcacheStoreError(
      'EBADKEY',
      operation,
      `memcached ${operation}: session ID must be a non-empty string, got ${describe(sid)}`,
    )
  }
  const key = prefix + sid
  const problem = keyProblem(key)
  if (problem !== undefined) {
    throw new MemcacheStoreError(
      'EBADKEY',
      operation,
      `memcached ${operation}: key for session ${redactId(sid)} ${problem}; it was not sent`,
    )
  }
  return key
}

function describe(value: unknown): string {
  if (typeof value === 'string') return 'an empty string'
  return value === null ? 'null' : typeof value
}

/**
 * How session IDs become memcached keys: `prefix + sid`, or with `hashIds`, `prefix` and a hash of
 * the ID (HMAC-SHA-256 keyed from `secret`, else SHA-256; 43 characters of base64url), so that
 * reading memcached's keys yields nothing that works as a cookie.
 */
export class SessionKeys {
  readonly prefix: string
  readonly #hmacKey: Buffer | undefined
  readonly hashed: boolean

  constructor(prefix: string, hashIds: boolean, hmacKey?: Buffer) {
    this.prefix = prefix
    this.hashed = hashIds
    this.#hmacKey = hmacKey
  }

  /** The key of a session ID that is known to be usable. */
  keyOf(sid: string): string {
    return this.hashed ? this.prefix + this.hash(sid) : this.prefix + sid
  }

  /** The key of a session ID from outside: EBADKEY when the ID is not one (`sessionKey`'s rules). */
  checked(sid: unknown, operation: Operation): string {
    const key = sessionKey(this.prefix, sid, operation)
    return this.hashed ? this.prefix + this.hash(sid as string) : key
  }

  /** The session ID a listed key was made from; undefined with `hashIds` (a hash cannot be undone). */
  sidOf(key: string): string | undefined {
    return this.hashed ? undefined : key.slice(this.prefix.length)
  }

  /** base64url of HMAC-SHA-256 (or SHA-256 without a key) of `text`. */
  hash(text: string): string {
    const hash = this.#hmacKey ? createHmac('sha256', this.#hmacKey) : createHash('sha256')
    return hash.update(text).digest('base64url')
  }
}
