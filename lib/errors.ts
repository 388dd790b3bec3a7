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

export type ErrorCode =
  | 'EAUTH'
  | 'EBADKEY'
  | 'ECOLLISION'
  | 'ECONFLICT'
  | 'ETIMEDOUT'
  | 'ESERVERDOWN'
  | 'ECONNCLOSED'
  | 'ETOOLARGE'
  | 'ESERIALIZE'
  | 'ESERVER'
  | 'ECONNECTION'
  | 'ECLOSED'
  | 'EBUSY'
  | 'ENOTSUPPORTED'
  | 'ENOPREFIX'

/**
 * Every error the store passes on: says what failed (`operation`), where (`server`), and why.
 * `code` is stable for programs; `cause` keeps the underlying error when there is one.
 */
export class MemcacheStoreError extends Error {
  override name = 'MemcacheStoreError'
  readonly code: ErrorCode
  readonly operation: string
  readonly server: string | undefined

  constructor(code: ErrorCode, operation: string, message: string, options: { server?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.operation = operation
    this.server = options.server
  }
}

/** Turns whatever a dependency rejected with (memjs rejects some failures with strings) into an Error. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value
  return new Error(typeof value === 'string' ? value : `non-error value: ${String(value)}`)
}
