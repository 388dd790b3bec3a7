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
