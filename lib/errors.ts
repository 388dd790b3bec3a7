import { type FailureCode, MemcachedError } from './memcached/index.js'

/** How many characters of a session ID may appear in a message; the rest is elided. */
const SHOWN_ID_CHARS = 6

const PRINTABLE_ASCII = /^[\x21-\x7e]*$/

/** A session ID shortened for messages and logs: never the whole secret. */
export function redactId(sid: string): string {
  // Every store operation names its session: the usual ID (printable ASCII) takes the short way.
  const asciiHead = sid.slice(0, SHOWN_ID_CHARS)
  if (PRINTABLE_ASCII.test(asciiHead)) return sid.length > SHOWN_ID_CHARS ? `${asciiHead}…` : asciiHead
  const head = Array.from(sid).slice(0, SHOWN_ID_CHARS).join('')
  const safeHead = head.replace(/[\p{C}\s]/gu, '?')
  return sid.length > SHOWN_ID_CHARS ? `${safeHead}…` : safeHead
}

/**
 * What kind of failure a code is:
 * - `server`: memcached could not be reached or did not answer properly (`failOpen` swallows these,
 *   except for `destroy`);
 * - `input`: the session or its ID cannot be stored as given;
 * - `conflict`: another writer got in the way;
 * - `usage`: the store was used in a way it cannot serve (closed, enumeration impossible).
 */
export type ErrorKind = 'server' | 'input' | 'conflict' | 'usage'

/** Every code the store uses, its kind, and what to do about it (the README's error table says the same). */
export const ERROR_CODES = {
  ETIMEDOUT: { kind: 'server', action: 'memcached did not answer in time: check that it is up and not overloaded, or raise `timeout`' },
  ESERVERDOWN: { kind: 'server', action: 'the server failed recently and is being retried with a back-off; check that it is up' },
  ECONNECTION: { kind: 'server', action: 'the connection could not be opened or broke: check `servers`, the network and firewalls' },
  ECONNCLOSED: { kind: 'server', action: 'the server closed the connection: check its logs, and `tls`/`protocol` if it happens at once' },
  EPROTOCOL: {
    kind: 'server',
    action: 'the server sent a reply the store could not trust; check `protocol` and anything between the app and memcached',
  },
  ETLS: { kind: 'server', action: 'the TLS handshake failed: check `tls` (`ca`, `servername`) and the server certificate' },
  EAUTH: { kind: 'server', action: 'authentication failed: check `username`/`password` (SASL for binary, token auth for meta)' },
  ESERVER: { kind: 'server', action: 'memcached reported an error (out of memory, say): check its logs' },
  EBADKEY: { kind: 'input', action: 'the session ID cannot be a memcached key (empty, too long, whitespace or control characters)' },
  ETOOLARGE: {
    kind: 'input',
    action: 'the session is larger than `maxItemSize` allows: keep less in it, or raise memcached -I and `maxItemSize`',
  },
  ESERIALIZE: { kind: 'input', action: 'the session could not be serialized: remove BigInts, cycles and the like, or fix `serializer`' },
  ECOLLISION: { kind: 'conflict', action: 'a new session ID was already taken: use a random `genid` (or `genid: store.genid`)' },
  ECONFLICT: { kind: 'conflict', action: 'other requests kept changing the session while it was saved: retry the request' },
  EUSERCODE: {
    kind: 'usage',
    action:
      'a function the application gave the store (`ttl`, `generateId`, an event listener) threw or returned something unusable: fix it',
  },
  ECLOSED: { kind: 'usage', action: 'the store was closed: create a new one' },
  EBUSY: { kind: 'server', action: "another listing is running on the server (memcached's crawler): retry later" },
  ENOTSUPPORTED: { kind: 'usage', action: 'the server cannot list its keys (no lru_crawler, -X, SASL or ElastiCache Serverless)' },
  ENOPREFIX: { kind: 'usage', action: 'listing sessions needs a non-empty `prefix`' },
} as const satisfies Record<string, { kind: ErrorKind; action: string }>

export type ErrorCode = keyof typeof ERROR_CODES

/** Every failure code of the memcached layer is one of the store's codes: a compile-time check. */
export type FailureCodesAreErrorCodes = FailureCode extends ErrorCode ? true : never
const _failureCodesAreErrorCodes: FailureCodesAreErrorCodes = true
void _failureCodesAreErrorCodes

/** The store's methods, as errors name them. */
export type Operation =
  | 'get'
  | 'set'
  | 'touch'
  | 'destroy'
  | 'all'
  | 'ids'
  | 'length'
  | 'clear'
  | 'ready'
  | 'genid'
  | 'sessionsOf'
  | 'destroySessionsOf'

export interface ErrorDetails {
  /** The server the request went to (or would have), as `host:port`. */
  server?: string
  /** The memcached command that failed, lower case (`get`, `gat`, `add`, `cas`, `delete`, `mg`, `metadump`...). */
  command?: string
  /** The session, shortened as in messages. */
  session?: string
  /** Whether a request of this operation reached a socket: false means nothing of it will ever be carried out. */
  sent?: boolean
  /** Why, in a few words, without the context the message adds. */
  reason?: string
  cause?: unknown
}

/**
 * Every error the store passes on: says what failed (`operation`), where (`server`), and why (`reason`).
 * `code` is stable for programs. `sent: false` means no request of the operation reached memcached and
 * none ever will; `sent: true` means its outcome is unknown (a timed-out write may still be applied).
 */
export class MemcacheStoreError extends Error {
  override name = 'MemcacheStoreError'
  readonly code: ErrorCode
  readonly operation: Operation
  readonly server: string | undefined
  readonly command: string | undefined
  readonly session: string | undefined
  readonly sent: boolean
  readonly reason: string

  constructor(code: ErrorCode, operation: Operation, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.code = code
    this.operation = operation
    this.server = details.server
    this.command = details.command
    this.session = details.session
    this.sent = details.sent ?? false
    this.reason = details.reason ?? message
  }

  get kind(): ErrorKind {
    return ERROR_CODES[this.code].kind
  }
}

/** True for the failures `failOpen` may swallow: memcached unreachable or misbehaving. */
export function isServerFailure(err: unknown): boolean {
  return (err instanceof MemcacheStoreError || err instanceof MemcachedError) && ERROR_CODES[err.code].kind === 'server'
}

/** A function the application gave the store threw, or returned something unusable: `reason` says which and how. */
export class UserCodeError extends Error {
  override name = 'UserCodeError'
  readonly reason: string

  constructor(reason: string, cause?: unknown) {
    const full = cause === undefined ? reason : `${reason}: ${describeThrown(cause)}`
    super(full, cause === undefined ? undefined : { cause })
    this.reason = full
  }
}

/**
 * The store's error for whatever an operation on `subject` failed with: a memcached failure is worded
 * here, in one place ("memcached get of session abc123… on host:port timed out: ..."); a store error
 * passes as is; anything else (the application's code threw) becomes EUSERCODE. `reached`: whether
 * memcached answered a request of the operation already.
 */
export function storeError(err: unknown, operation: Operation, subject: string | undefined, reached = false): MemcacheStoreError {
  if (err instanceof MemcacheStoreError) return err
  if (err instanceof MemcachedError) {
    const { code, command, server, reason } = err
    const what = subject === undefined ? `memcached ${command} on ${server}` : `memcached ${command} of ${subject} on ${server}`
    const verb = code === 'ETIMEDOUT' && command !== 'metadump' ? 'timed out' : 'failed'
    const note =
      subject === undefined ? '' : !err.sent ? '; it was not sent' : err.mayBeApplied ? '; it was sent and may still be applied' : ''
    return new MemcacheStoreError(code, operation, `${what} ${verb}: ${reason}${note}`, {
      server,
      command,
      session: subject,
      // The operation's: an earlier request of it reached memcached, though this one may not have.
      sent: err.sent || reached,
      reason,
      cause: err.cause,
    })
  }
  const reason = err instanceof UserCodeError ? err.reason : `the application's code or data threw: ${describeThrown(err)}`
  const note = reached ? '' : '; nothing was sent'
  return new MemcacheStoreError('EUSERCODE', operation, `${operation}${subject ? ` of ${subject}` : ''} failed: ${reason}${note}`, {
    session: subject,
    reason,
    sent: reached,
    cause: err instanceof UserCodeError ? (err.cause ?? err) : err,
  })
}

/** What was thrown, in a few words: an Error's name and message, or the value. */
export function describeThrown(value: unknown): string {
  return value instanceof Error ? `${value.name}: ${value.message}` : messageOf(value)
}

/** An Error's message, or what else was thrown as text. */
export function messageOf(value: unknown): string {
  if (value instanceof Error) return value.message
  return typeof value === 'string' ? value : `a non-error value (${String(value)})`
}
