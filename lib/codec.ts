import type { SessionData } from 'express-session'
import type { SessionCipher } from './crypto.js'
import { MemcacheStoreError, messageOf, type Operation } from './errors.js'
import { type Owner, readOwner, withOwner } from './owner.js'

export interface Serializer {
  stringify(sess: SessionData): string
  parse(text: string): unknown
}

/** Bytes memcached needs beside the key and value in an item (59 with CAS on 1.6, kept with room). */
export const ITEM_OVERHEAD_BYTES = 64

/**
 * The deepest nesting a session may have. express-session hashes every session it loads with
 * JSON.stringify, which overflows the stack a few thousand levels down and then never answers the
 * request; no real session comes near this.
 */
export const MAX_DEPTH = 512

export type Decoded = { ok: true; sess: SessionData; text: string; owner: Owner | undefined } | { ok: false; reason: string }

/** What a codec error needs to say which operation failed on which session. */
export interface CodecContext {
  readonly operation: Operation
  readonly subject: string
}

/**
 * Sessions to memcached values and back: the serializer, encryption with `secret`, and the size
 * limit (`maxItemSize`), checked before anything is sent.
 */
export class SessionCodec {
  readonly #serializer: Serializer
  readonly #cipher: SessionCipher | undefined
  readonly #maxItemSize: number

  constructor(serializer: Serializer, cipher: SessionCipher | undefined, maxItemSize: number) {
    this.#serializer = serializer
    this.#cipher = cipher
    this.#maxItemSize = maxItemSize
  }

  /**
   * The bytes to store (behind the owner header of a session that belongs to a user) and the plain
   * text (the base of a later merge). Throws ESERIALIZE or ETOOLARGE.
   */
  encode(sess: SessionData, key: string, context: CodecContext, owner?: Owner): { value: Buffer; text: string } {
    // What has no cookie would never read back as a session (see decode): refused rather than stored unseen.
    if (!isPlainObject((sess as { cookie?: unknown } | null)?.cookie)) {
      throw serializeError(context, 'could not be stored: it has no `cookie` object (express-session always gives a session one)')
    }
    let text: unknown
    try {
      text = this.#serializer.stringify(sess)
    } catch (err) {
      throw serializeError(context, `could not be serialized: ${messageOf(err)}`, err)
    }
    if (typeof text !== 'string') {
      throw serializeError(context, `could not be serialized: the serializer's stringify returned ${describeShape(text)}, not a string`)
    }
    if (text.length > 2 * MAX_DEPTH && nestsDeeperThan(sess, MAX_DEPTH)) {
      throw serializeError(context, `could not be stored: it nests deeper than ${MAX_DEPTH} levels`)
    }
    const plain = Buffer.from(text)
    const value = withOwner(owner, this.#cipher ? this.#cipher.seal(plain, key) : plain)
    const limit = this.#maxItemSize - Buffer.byteLength(key) - ITEM_OVERHEAD_BYTES
    if (value.length > limit) {
      const reason = `${value.length} bytes serialized, over the ${limit} bytes a ${this.#maxItemSize}-byte memcached item leaves for it`
      throw new MemcacheStoreError(
        'ETOOLARGE',
        context.operation,
        `${context.subject} is ${reason}; it was not sent and the stored session is unchanged`,
        { session: context.subject, reason, sent: false },
      )
    }
    // The text as it will read back from memcached (lone surrogates become U+FFFD in UTF-8).
    return { value, text: text.isWellFormed() ? text : plain.toString() }
  }

  /**
   * Stored bytes back to a session and its plain text, or why they are not one (undecryptable,
   * unparseable, not an object with a `cookie` object, nested too deep). Throws ESERIALIZE only
   * when the serializer itself is unusable (an async `parse`).
   */
  decode(stored: Buffer, key: string, context: CodecContext): Decoded {
    const { owner, payload: value } = readOwner(stored)
    let plain = value
    if (this.#cipher) {
      const opened = this.#cipher.open(value, key)
      if (!opened.ok) return opened
      plain = opened.plain
    }
    const text = plain.toString()
    let parsed: unknown
    try {
      parsed = this.#serializer.parse(text)
    } catch (err) {
      return { ok: false, reason: `it could not be parsed (${messageOf(err)})` }
    }
    if (isThenable(parsed)) {
      throw serializeError(
        context,
        "could not be read: the serializer's parse returned a Promise; it must return the session synchronously (express-session's stores are synchronous there)",
      )
    }
    if (!isPlainObject(parsed)) return { ok: false, reason: `it is ${describeShape(parsed)}, not an object` }
    if (!isPlainObject(parsed.cookie)) return { ok: false, reason: 'it has no `cookie` object' }
    if (text.length > 2 * MAX_DEPTH && nestsDeeperThan(parsed, MAX_DEPTH)) {
      return { ok: false, reason: `it nests deeper than ${MAX_DEPTH} levels, more than express-session can hash` }
    }
    return { ok: true, sess: parsed as unknown as SessionData, text, owner }
  }

  /** Session text back to plain fields, for a merge. */
  parseFields(text: string): Record<string, unknown> {
    return this.#serializer.parse(text) as Record<string, unknown>
  }
}

function serializeError(context: CodecContext, reason: string, cause?: unknown): MemcacheStoreError {
  return new MemcacheStoreError('ESERIALIZE', context.operation, `${context.subject} ${reason}`, {
    session: context.subject,
    reason,
    sent: false,
    cause,
  })
}

/** True when objects and arrays inside `value` nest more than `limit` levels deep. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  if (limit < 0) return true
  if (typeof value !== 'object' || value === null) return false
  if (Array.isArray(value)) {
    for (const child of value) if (typeof child === 'object' && child !== null && nestsDeeperThan(child, limit - 1)) return true
    return false
  }
  // for...in rather than Object.values: no array per object (every session read of more than 1 KB walks this).
  for (const name in value) {
    const child = (value as Record<string, unknown>)[name]
    if (typeof child === 'object' && child !== null && nestsDeeperThan(child, limit - 1)) return true
  }
  return false
}

function isThenable(value: unknown): boolean {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function describeShape(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (isThenable(value)) return 'a Promise'
  return `a ${typeof value}`
}
