import type { Socket } from 'node:net'
import type { Failure, FailureCode, MemcachedError } from './errors.js'

/** The commands the client sends, whatever the protocol. `gat` is get-and-touch; `cas` is a SET that checks a CAS. */
export type CommandName = 'get' | 'gat' | 'set' | 'add' | 'replace' | 'cas' | 'delete' | 'touch' | 'noop'

/**
 * How a reply ended:
 * - `ok`: found, stored, deleted or touched;
 * - `miss`: no such key (or, for a CAS write, delete or replace, no key to compare with);
 * - `exists`: ADD found the key, or the CAS did not match;
 * - `tooLarge`: memcached refused a value over its limit, or a value read was over `maxItemSize`
 *   (skipped unread; the connection is fine);
 * - `serverError`: refused by memcached (the connection is fine);
 * - `authError`: the server wants authentication first, or refused it.
 */
export type ReplyStatus = 'ok' | 'miss' | 'exists' | 'tooLarge' | 'serverError' | 'authError'

export interface Reply {
  status: ReplyStatus
  value: Buffer | undefined
  /** The item's CAS; 0n when the reply carries none. */
  cas: bigint
  /** memcached's own words for a `serverError` or `tooLarge`. */
  message: string | undefined
}

/**
 * What the requests of one caller share: a deadline after which none of them is sent, and what the
 * connections saw of them (set by the connections, read by the caller: when its own deadline passes
 * with a request unanswered, or to tell whether anything of its work reached memcached).
 */
export interface RequestScope {
  /** No request of the scope is sent after this (performance.now() time). */
  readonly deadline: number
  /** A request of the scope was written to a socket. */
  sent: boolean
  /** A request of the scope was answered: it reached memcached. */
  answered: boolean
}

/**
 * Where a request's outcome goes, for callers that want no promise: its result, or why it failed.
 * Either may be called before the call that sent the request returns (a request refused at once).
 */
export interface Receiver<T> {
  resolved(value: T): void
  rejected(err: MemcachedError | Error): void
}

/** A request to encode. */
export interface Command {
  name: CommandName
  key: string
  value?: Buffer
  /** memcached's expiry field (seconds, or an absolute Unix time past 30 days). */
  expiry?: number
  cas?: bigint
}

/** What a reader checks a reply against: the oldest request written and not yet answered. */
export interface Expected {
  readonly command: CommandName
  readonly key: string
  readonly opaque: number
}

export interface ReplyHandlers {
  /** The oldest request written and not yet answered: replies come back in order. */
  expected(): Expected | undefined
  reply(reply: Reply): void
  /** A reply that cannot be trusted: the connection is reset and nothing more is read from it. */
  violation(reason: string): void
}

/** A protocol's framing: how requests are written and replies read and checked. */
export interface WireProtocol {
  readonly name: 'binary' | 'meta'
  encode(command: Command, opaque: number): Buffer
  /** A reader for one connection's byte stream: a new connection starts with a new reader. */
  reader(handlers: ReplyHandlers): (chunk: Buffer) => void
}

/** Opens and authenticates connections to one server. */
export interface Transport {
  readonly host: string
  readonly port: number
  /** Whether connections use TLS. */
  readonly secure: boolean
  /**
   * Opens a connection; calls `ready` with the socket once it can carry requests (connected,
   * TLS verified, authenticated), or `failed`.
   */
  open(callbacks: OpenCallbacks): OpenAttempt
  /** Why the server refused a request for want of authentication, given what credentials there are. */
  authRefusal?(): string
}

/** A connection being opened. */
export interface OpenAttempt {
  /** Where it stands: TCP connect, TLS handshake, or authentication. */
  readonly stage: 'connecting' | 'tls' | 'authenticating'
  /** Destroys the attempt; its callbacks are not called. */
  abort(): void
}

export interface OpenCallbacks {
  ready(socket: Socket): void
  failed(code: FailureCode, reason: string, cause?: unknown): void
}

/**
 * The largest expiry memcached 1.6 keeps: it reads the field as a signed 32-bit number, so over the
 * meta protocol `T2147483648` answers HD and stores nothing. Encoders clamp to it, on both protocols.
 */
export const MAX_EXPIRY = 2 ** 31 - 1

/** No memcached holds a larger value (its -I ceiling is 1 GiB): a reply announcing more is not to be trusted. */
export const MAX_VALUE_BYTES = 1024 * 1024 * 1024

export type { Failure }
