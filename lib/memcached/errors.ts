/** Why a request failed, as a stable code (the store's error table reuses these). */
export type FailureCode =
  | 'ETIMEDOUT'
  | 'ESERVERDOWN'
  | 'ECONNECTION'
  | 'ECONNCLOSED'
  | 'EPROTOCOL'
  | 'ETLS'
  | 'EAUTH'
  | 'ESERVER'
  | 'ETOOLARGE'
  | 'ECLOSED'
  | 'EBUSY'
  | 'ENOTSUPPORTED'

/** Why a request failed, before it is tied to a server and a command. */
export interface Failure {
  code: FailureCode
  reason: string
  /** Whether the request reached a socket. */
  sent: boolean
  /** The server answered and refused the request (or the unauthenticated connection it came on): nothing of it was applied. */
  refused?: boolean
  cause?: unknown
}

/** Commands whose outcome is unknown once sent and unanswered: a timed-out write may still be applied. */
const WRITES: ReadonlySet<string> = new Set(['set', 'add', 'replace', 'cas', 'delete', 'touch'])

/**
 * A failed request, as plain facts: which server, which command, why (`code`, `reason`), and
 * whether it reached the server. Says nothing about what the request was for: the layer above
 * words that.
 */
export class MemcachedError extends Error {
  override name = 'MemcachedError'
  readonly code: FailureCode
  readonly server: string
  /** The command, lower case: `get`, `gat`, `add`, `cas`, `delete`, `mg`, `metadump`, `connect`... */
  readonly command: string
  readonly reason: string
  /** Whether the request reached a socket: false means it will never be carried out. */
  readonly sent: boolean
  /** Whether the server answered and refused it: nothing of it was applied. */
  readonly refused: boolean

  constructor(failure: Failure, server: string, command: string) {
    super(`${command} on ${server} failed: ${failure.reason}`, failure.cause === undefined ? undefined : { cause: failure.cause })
    this.code = failure.code
    this.server = server
    this.command = command
    this.reason = failure.reason
    this.sent = failure.sent
    this.refused = failure.refused === true
  }

  /** A write that was sent and not answered: it may still be applied. */
  get mayBeApplied(): boolean {
    return this.sent && !this.refused && WRITES.has(this.command)
  }
}
