import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scryptSync } from 'node:crypto'

/**
 * Layout of an encrypted value: [format 1 byte][IV 12 bytes][ciphertext][GCM tag 16 bytes], AES-256-GCM
 * with the memcached key (`prefix` + session ID) as associated data. The format byte says how the key
 * was derived from the secret:
 * - `0x02` (written since the secret checks): HKDF-SHA256, salt `express-session-memcache/v2`, info
 *   `express-session-memcache/v2/aes-256-gcm/prefix=` followed by the store's key prefix (UTF-8).
 * - `0x01` (read only): scrypt, one salt shared by every deployment, derived only when such a value
 *   is first met (see `#legacyKey`).
 */
export const FORMAT_VERSION = 0x02
/** The format written before: read (with a string secret) but never written. */
export const LEGACY_FORMAT_VERSION = 0x01
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32

/** Bytes encryption adds to every stored value (the same for both formats). */
export const ENCRYPTION_OVERHEAD_BYTES = 1 + IV_BYTES + TAG_BYTES

/** The shortest string secret accepted, in characters (Unicode code points). */
export const MIN_SECRET_CHARACTERS = 32
/** The shortest Buffer or Uint8Array secret accepted, in bytes: one AES-256 key's worth. */
export const MIN_SECRET_BYTES = 32
// A secret of the right length made of fewer distinct characters (or bytes) than this is a
// placeholder or a mistake ('x'.repeat(32), Buffer.alloc(32), '0'.repeat(64)), not a random value:
// 32 random hex digits have fewer than 8 distinct ones with a probability below 1 in 10^7.
const MIN_DISTINCT_UNITS = 8

/** The store's default key prefix, used when no prefix is given (the store should always pass its own). */
const DEFAULT_PREFIX = 'sess:'

// Why HKDF, and no passphrase path (scrypt) for new writes:
// - The issue: the v1 key came from scrypt with one salt that every deployment shares, and any
//   non-empty string was accepted, so a small dictionary computed once recovered `secret: 'a'` for
//   everybody. The real defect was the weak secret, which stretching only slows down.
// - Secrets are now refused unless they have at least 32 characters (or 32 bytes) and are not
//   blatantly repetitive, and the error says how to generate one: `openssl rand -base64 32` gives
//   256 random bits. Against such a secret, guessing is hopeless however cheap one guess is: at
//   1 ns per guess, 2^255 guesses take some 10^59 years. A key derivation function for full-entropy
//   input (HKDF, RFC 5869) is then the right tool, and it costs microseconds.
// - scrypt (N = 2^14) would make one guess some 2^12 to 2^15 times dearer (tens of milliseconds
//   against microseconds; figures in commit 63a9939's version of this comment): 12 to 15 bits. A
//   human-chosen string of 32 characters that a dictionary can reach stays reachable with those
//   bits added, while every process would pay tens of ms and 16 MiB per secret at startup, on the
//   event loop. So no passphrase path: we refuse what is recognisably weak rather
//   than stretch it, and say how to make a strong secret instead.
// - Precomputation: HKDF's info includes the key prefix, so keys derived for one prefix are useless
//   for another deployment with another prefix, even from the same secret. (Deployments on the
//   default 'sess:' share that context: the strength of the secret, not the prefix, is the defence.)
// scrypt remains only to read values written in format 0x01, with the exact parameters of then.
const HKDF_SALT = 'express-session-memcache/v2'
const HKDF_INFO = 'express-session-memcache/v2/aes-256-gcm/prefix='
const LEGACY_SALT = 'express-session-memcache/v1/aes-256-gcm'
const LEGACY_SCRYPT_COST = { N: 2 ** 14, r: 8, p: 1 }

const GENERATE_HINT =
  'Generate one with `openssl rand -base64 32` (or pass `crypto.randomBytes(32)`), keep it out of the source (an environment variable), and never reuse the cookie secret'

/** One secret: a string, or raw bytes (a Buffer is a Uint8Array). */
export type SecretInput = string | Uint8Array
/** The `secret` option: one secret, or several to rotate (the first encrypts, every one decrypts). */
export type SecretOption = SecretInput | readonly SecretInput[]

export type Opened = { ok: true; plain: Buffer } | { ok: false; reason: string }

/** A checked secret: the bytes keys are derived from, and whether it was a string (only strings had v1 keys). */
interface Material {
  readonly bytes: Buffer
  readonly wasString: boolean
}

let materialOf: (keyring: SecretKeyring) => readonly Material[]
let createKeyring: (material: readonly Material[]) => SecretKeyring

/**
 * Secrets that passed `checkSecret`, in order (the first encrypts). Holds private copies of them:
 * changing the caller's Buffer afterwards changes nothing, and printing or serializing the keyring
 * shows no secret (`SecretKeyring {}`).
 */
export class SecretKeyring {
  readonly #material: readonly Material[]

  static {
    materialOf = (keyring) => keyring.#material
    createKeyring = (material) => new SecretKeyring(material)
  }

  /** Only `checkSecret` makes one, after validating. */
  private constructor(material: readonly Material[]) {
    this.#material = material
  }

  /** How many secrets (more than one while rotating). */
  get size(): number {
    return this.#material.length
  }
}

/**
 * Validates the `secret` option: a string of at least 32 characters, a Buffer or Uint8Array of at
 * least 32 bytes, or a non-empty array of them (rotation). Throws a TypeError that names the
 * offending entry by type, length and index, never by content, and says how to generate a secret.
 */
export function checkSecret(secret: unknown): SecretKeyring {
  const isList = Array.isArray(secret)
  const list: unknown[] = isList ? secret : [secret]
  if (list.length === 0) throw secretError('an empty array')
  const material = list.map((entry, index): Material => {
    const problem = secretProblem(entry)
    if (problem !== undefined) throw secretError(isList ? `${problem} at index ${index}` : problem)
    return typeof entry === 'string'
      ? { bytes: Buffer.from(entry, 'utf8'), wasString: true }
      : { bytes: Buffer.from(entry as Uint8Array), wasString: false } // a copy
  })
  return createKeyring(material)
}

/** What is wrong with one secret, in words that never include it; undefined when it is acceptable. */
function secretProblem(entry: unknown): string | undefined {
  if (typeof entry === 'string') {
    const characters = [...entry]
    if (characters.length < MIN_SECRET_CHARACTERS) return `a string of ${plural(characters.length, 'character')}`
    if (!entry.isWellFormed()) return `a string of ${plural(characters.length, 'character')} with unpaired surrogates`
    if (new Set(characters).size < MIN_DISTINCT_UNITS)
      return `a string of ${plural(characters.length, 'character')} made of fewer than ${MIN_DISTINCT_UNITS} distinct characters`
    return undefined
  }
  if (entry instanceof Uint8Array) {
    const type = Buffer.isBuffer(entry) ? 'Buffer' : 'Uint8Array'
    if (entry.length < MIN_SECRET_BYTES) return `a ${type} of ${plural(entry.length, 'byte')}`
    if (new Set(entry).size < MIN_DISTINCT_UNITS)
      return `a ${type} of ${plural(entry.length, 'byte')} with fewer than ${MIN_DISTINCT_UNITS} distinct byte values`
    return undefined
  }
  if (entry === null || entry === undefined) return String(entry)
  if (Array.isArray(entry)) return 'an array'
  if (ArrayBuffer.isView(entry) || entry instanceof ArrayBuffer) return `a ${entry.constructor.name}`
  return /^[aeiou]/.test(typeof entry) ? `an ${typeof entry}` : `a ${typeof entry}`
}

function secretError(got: string): TypeError {
  return new TypeError(
    `Expected \`secret\` to be a random string of at least ${MIN_SECRET_CHARACTERS} characters, a Buffer or Uint8Array of at least ${MIN_SECRET_BYTES} bytes, or a non-empty array of them, got ${got}. ${GENERATE_HINT}`,
  )
}

function plural(count: number, unit: string): string {
  return `${count} ${unit}${count === 1 ? '' : 's'}`
}

/**
 * The format-0x02 AES key for one secret and key prefix: HKDF-SHA256 (salt and info above). Does
 * not validate the secret (use `checkSecret`); exported for tests and tools.
 */
export function deriveSessionKey(secret: SecretInput, prefix: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, HKDF_INFO + prefix, KEY_BYTES))
}

/** The format-0x01 AES key for a string secret, exactly as it was derived then (tens of ms). */
function deriveLegacyKey(secret: Buffer): Buffer {
  return scryptSync(secret, LEGACY_SALT, KEY_BYTES, LEGACY_SCRYPT_COST)
}

const ID_HASH_SALT = 'express-session-memcache/ids'

/**
 * The HMAC-SHA-256 key that `hashIds` hashes session IDs with: derived from the **last** secret of
 * the keyring (the one a rotation keeps longest: new secrets go first), and the prefix. Rotating
 * secrets therefore leaves every key in place; only dropping the last secret moves them (see
 * docs/security.md).
 */
export function idHashKey(keyring: SecretKeyring, prefix: string): Buffer {
  const material = materialOf(keyring)
  const anchor = material[material.length - 1]
  return Buffer.from(hkdfSync('sha256', anchor.bytes, ID_HASH_SALT, prefix, KEY_BYTES))
}

/** Encrypts session values with the first secret; decrypts with any of them (key rotation). */
export class SessionCipher {
  readonly #material: readonly Material[]
  readonly #keys: Buffer[]
  // Format-0x01 keys, derived on the first such value met (scrypt costs tens of ms, which no
  // store should pay at construction once nothing old is left): undefined until then, null for a
  // secret that is not a string (v1 accepted only strings).
  readonly #legacyKeys: Array<Buffer | null | undefined>

  /**
   * `secret`: what `checkSecret` returned, or the option itself (checked here, throwing its
   * TypeError). `prefix`: the store's key prefix, which the derived keys depend on; stores with
   * different prefixes cannot read each other's values even with the same secret. It defaults to
   * the store's default, 'sess:', so that a store that does not pass it yet keeps working: a store
   * should always pass its own.
   */
  constructor(secret: SecretKeyring | SecretOption, prefix: string = DEFAULT_PREFIX) {
    const keyring = secret instanceof SecretKeyring ? secret : checkSecret(secret)
    if (typeof prefix !== 'string') throw new TypeError('Expected the key prefix to be a string')
    this.#material = materialOf(keyring)
    this.#keys = this.#material.map(({ bytes }) => deriveSessionKey(bytes, prefix))
    this.#legacyKeys = this.#material.map(({ wasString }) => (wasString ? undefined : null))
  }

  /**
   * Encrypts with the first secret and a fresh random IV, in format 0x02. `key` (the memcached key)
   * is authenticated with the value, so an encrypted session copied under another key does not decrypt.
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
    const format = sealed.length === 0 ? undefined : sealed[0]
    if (format !== FORMAT_VERSION && format !== LEGACY_FORMAT_VERSION) {
      // Session text written before `secret` was set starts with a printable character.
      return { ok: false, reason: 'it is not encrypted (written before `secret` was set?) or in an unknown format' }
    }
    if (sealed.length < ENCRYPTION_OVERHEAD_BYTES) return { ok: false, reason: 'it is too short to be an encrypted session' }
    const iv = sealed.subarray(1, 1 + IV_BYTES)
    const body = sealed.subarray(1 + IV_BYTES, sealed.length - TAG_BYTES)
    const tag = sealed.subarray(sealed.length - TAG_BYTES)
    const aad = Buffer.from(key)
    if (format === FORMAT_VERSION) {
      for (const secretKey of this.#keys) {
        const plain = decrypt(secretKey, iv, body, tag, aad)
        if (plain) return { ok: true, plain }
      }
      return {
        ok: false,
        reason: `it failed authentication with each of the ${this.#keys.length} configured secret(s) (altered, written with a secret no longer configured, with another key prefix, or stored under another key)`,
      }
    }
    let tried = 0
    for (let index = 0; index < this.#material.length; index++) {
      const legacyKey = this.#legacyKey(index)
      if (legacyKey === null) continue
      tried++
      const plain = decrypt(legacyKey, iv, body, tag, aad)
      if (plain) return { ok: true, plain }
    }
    return {
      ok: false,
      reason: `it is in the old format 0x01 and failed authentication with each of the ${tried} configured string secret(s) (written with a secret no longer configured, such as one shorter than ${MIN_SECRET_CHARACTERS} characters, which is now refused; altered; or stored under another key)`,
    }
  }

  /** The format-0x01 key of secret `index`, derived once; null if that secret cannot have one. */
  #legacyKey(index: number): Buffer | null {
    let legacyKey = this.#legacyKeys[index]
    if (legacyKey === undefined) {
      try {
        legacyKey = deriveLegacyKey(this.#material[index].bytes)
      } catch {
        // scrypt could not run (memory): this secret reads no old value; never throw from `open`.
        legacyKey = null
      }
      this.#legacyKeys[index] = legacyKey
    }
    return legacyKey
  }
}

/** The plaintext if `secretKey` authenticates the value, else undefined. */
function decrypt(secretKey: Buffer, iv: Buffer, body: Buffer, tag: Buffer, aad: Buffer): Buffer | undefined {
  try {
    const decipher = createDecipheriv('aes-256-gcm', secretKey, iv, { authTagLength: TAG_BYTES })
    decipher.setAAD(aad)
    decipher.setAuthTag(tag)
    return Buffer.concat([decipher.update(body), decipher.final()])
  } catch {
    // Authentication failed with this key.
    return undefined
  }
}
