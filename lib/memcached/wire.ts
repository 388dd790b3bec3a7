import type { Socket } from 'node:net'
import type { ErrorCode, Operation } from '../errors.js'

/** The commands the store sends, whatever the protocol. `gat` is get-and-touch; `cas` is a SET that checks a CAS. */
export type CommandName = 'get' | 'gat' | 'set' | 'add' | 'replace' | 'cas' | 'delete' | 'touch' | 'noop'

/**
 * How a reply ended:
 * - `ok`: found, stored, deleted or touched;
 * - `miss`: no such key (or, for a CAS write, delete or replace, no key to compare with);
 * - `exists`: ADD found the key, or the CAS did not match;
 * - `tooLarge`, `serverError`: refused by memcached (the connection is fine);
 * - `authError`: the server wants authentication first, or refused it.
 */
export type ReplyStatus = 'ok' | 'miss' | 'exists' | 'tooLarge' | 'serverError' | 'authError'

export interface Reply {
  status: ReplyStatus
  value: Buffer | undefined
  /** The item's CAS; 0n when the reply carries none. */
  cas: bigint
  /** memcached's own words for a `serverError`. */
  message: string | undefined
}

/** What the operation a request belongs to knows, for deadlines and honest error reports. */
export interface RequestContext {
  readonly operation: Operation
  /** The session as messages name it: `session abc123…`. */
  readonly subject: string
  /** No request of the operation is sent after this (performance.now() time). */
  readonly deadline: number
  /** Set once a request of the operation was written to a socket. */
  sent: boolean
}

/** One request on its way: written, or waiting for the connection to open. */
export interface Pending {
  readonly command: CommandName
  readonly key: string
  readonly opaque: number
  readonly bytes: Buffer
  readonly context: RequestContext
  /** When the request counts as unanswered (performance.now() time). */
  at: number
  /** Whether this request was the probe of a server in back-off. */
  probe: boolean
  resolve(reply: Reply): void
  reject(failure: Failure): void
}

/** Why a request failed, before the access layer words it for the operation. */
export interface Failure {
  code: ErrorCode
  reason: string
  sent: boolean
  /** The server answered and refused the request (or the unauthenticated connection it came on): nothing of it was applied. */
  refused?: boolean
  cause?: unknown
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

export interface ReplyHandlers {
  /** The oldest request written and not yet answered: replies come back in order. */
  expected(): Pending | undefined
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
  failed(code: ErrorCode, reason: string, cause?: unknown): void
}

/** Replies longer than this are a protocol error: memcached never sends an item larger than its limit. */
export function replyLimit(maxItemSize: number): number {
  return maxItemSize + 1024
}
