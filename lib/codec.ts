import type { SessionData } from 'express-session'

export interface Serializer {
  stringify(sess: SessionData): string
  parse(text: string): unknown
}

/** Bytes memcached needs beside the key and value in an item (measured on 1.6: 59 with CAS; kept with room). */
export const ITEM_OVERHEAD_BYTES = 64

export type Decoded = { ok: true; sess: SessionData } | { ok: false; reason: string }

/** Session data as text and as the bytes for memcached. Throws when the serializer does (BigInt, circular references). */
export function encodeSession(serializer: Serializer, sess: SessionData): { text: string; value: Buffer } {
  const text = serializer.stringify(sess)
  if (typeof text !== 'string') {
    throw new TypeError(`the serializer's stringify returned ${typeof text}, not a string`)
  }
  return { text, value: Buffer.from(text) }
}

/**
 * Stored bytes (or their text) back to session data, or why they are not a session: unparseable text, or a value
 * of the wrong shape (express-session needs an object with a `cookie` object). Never throws.
 */
export function decodeSession(serializer: Serializer, stored: Buffer | string): Decoded {
  let value: unknown
  try {
    value = serializer.parse(typeof stored === 'string' ? stored : stored.toString())
  } catch (err) {
    return { ok: false, reason: `it could not be parsed (${(err as Error)?.message ?? String(err)})` }
  }
  if (!isPlainObject(value)) return { ok: false, reason: `it is ${describeShape(value)}, not an object` }
  if (!isPlainObject(value.cookie)) return { ok: false, reason: 'it has no `cookie` object' }
  return { ok: true, sess: value as unknown as SessionData }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function describeShape(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return `a ${typeof value}`
}
