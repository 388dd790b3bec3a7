import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto'

/**
 * Layout of an encrypted value: [version 1 byte][IV 12 bytes][ciphertext][GCM tag 16 bytes].
 * Version 1 is AES-256-GCM with a key derived by scrypt, and the memcached key as associated data.
 */
export const FORMAT_VERSION = 0x01
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32

/** Bytes encryption adds to every stored value. */
export const ENCRYPTION_OVERHEAD_BYTES = 1 + IV_BYTES + TAG_BYTES

// Every process sharing the sessions must derive the same key, so the salt is fixed (a per-value
// salt would mean one scrypt run per read). scrypt rather than HKDF: it slows down guessing when
// the secret is a human-chosen password rather than random bytes. Node's default cost (N = 2^14,
// r = 8, 16 MiB) takes some 50 ms, paid once per secret when the store is constructed.
const SALT = 'express-session-memcache/v1/aes-256-gcm'
const SCRYPT_COST = { N: 2 ** 14, r: 8, p: 1 }

export type Opened = { ok: true; plain: Buffer } | { ok: false; reason: string }

/** Encrypts session values with the first secret; decrypts with any of them (key rotation). */
export class SessionCipher {
  readonly #keys: Buffer[]

  constructor(secrets: readonly string[]) {
    this.#keys = secrets.map((secret) => scryptSync(secret, SALT, KEY_BYTES, SCRYPT_COST))
  }

  /**
   * Encrypts with a fresh random IV. `key` (the memcached key) is authenticated with the value, so
   * an encrypted session copied under another session's key does not decrypt.
   */
  seal(plain: Buffer, key: string): Buffer {
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.#keys[0], iv, { authTagLength: TAG_BYTES })
    cipher.setAAD(Buffer.from(key))
    const head = Buffer.from([FORMAT_VERSION])
    const body = cipher.update(plain)
    const tail = cipher.final()
    return Buffer.concat([head, iv, body, tail, cipher.getAuthTag()])
  }

  /** The plaintext, or why the value cannot be trusted. Never throws. */
  open(sealed: Buffer, key: string): Opened {
    if (sealed.length === 0 || sealed[0] !== FORMAT_VERSION) {
      // Session text written before `secret` was set starts with a printable character.
      return { ok: false, reason: 'it is not encrypted (written before `secret` was set?) or in an unknown format' }
    }
    if (sealed.length < ENCRYPTION_OVERHEAD_BYTES) return { ok: false, reason: 'it is too short to be an encrypted session' }
    const iv = sealed.subarray(1, 1 + IV_BYTES)
    const body = sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES)
    const tag = sealed.subarray(sealed.length - TAG_BYTES)
    const aad = Buffer.from(key)
    for (const secretKey of this.#keys) {
      try {
        const decipher = createDecipheriv('aes-256-gcm', secretKey, iv, { authTagLength: TAG_BYTES })
        decipher.setAAD(aad)
        decipher.setAuthTag(tag)
        return { ok: true, plain: Buffer.concat([decipher.update(body), decipher.final()]) }
      } catch {
        // Authentication failed with this secret: try the next one.
      }
    }
    return {
      ok: false,
      reason: `it failed authentication with each of the ${this.#keys.length} configured secret(s) (altered, written with a secret no longer configured, or stored under another key)`,
    }
  }
}
