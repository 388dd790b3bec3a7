// The one module that reaches into memjs (pinned to ~1.3.2). memjs's Server is the binary-protocol
// transport: it holds a server's address and SASL credentials and runs the SASL exchange
// (`listSasl`, then `saslAuth`, each written through `sock(true, ...)`). `sock()` is where memjs opens
// its connection, and the one method this subclass overrides, for two reasons:
// - TLS: memjs calls `net.connect` there, so it can only speak plain TCP;
// - safety: memjs's own `sock` wires the socket's bytes into a parser whose buffer survives the
//   connection (a reply cut by a dead connection glued itself to every later one) and a 'close'
//   handler that clears whatever socket the server holds by then (orphaning a newer connection).
// Connection reads and checks replies itself once the connection is ready.
import type { Socket } from 'node:net'
import type tls from 'node:tls'
import memjs from 'memjs'
import { Opcode, Status } from './binary.js'
import type { Credentials } from './config.js'
import { connectFailureCode, connectFailureReason, type Endpoint, openSocket } from './socket.js'
import type { OpenAttempt, OpenCallbacks, Transport } from './wire.js'

/** What the store uses of memjs's Server; checked when the first transport is made. */
const SERVER_METHODS = ['sock', 'listSasl', 'saslAuth', 'writeSASL'] as const

let shapeChecked = false

/** Fails loudly when the installed memjs no longer has what this module relies on. */
export function checkMemjsShape(server: unknown = memjs.Server): void {
  if (shapeChecked && server === memjs.Server) return
  const prototype = (server as { prototype?: Record<string, unknown> } | undefined)?.prototype
  const missing = SERVER_METHODS.filter((name) => typeof prototype?.[name] !== 'function')
  if (missing.length > 0) {
    throw new Error(
      `express-session-memcache needs memjs 1.3 (~1.3.2): the installed memjs Server lacks ${missing.join(', ')}. Install memjs@~1.3.2.`,
    )
  }
  if (server === memjs.Server) shapeChecked = true
}

/** SASL replies are short; a longer one means the peer is not memcached. */
const SASL_REPLY_LIMIT = 4096

interface Attempt {
  socket: Socket
  callbacks: OpenCallbacks
  settled: boolean
  cleanup?: () => void
}

/** memjs's Server with the store's sockets: TCP or TLS, opened fresh for each connection. */
export class MemjsTransport extends memjs.Server implements Transport {
  readonly #tls: tls.ConnectionOptions | undefined
  readonly #credentialsHint: string | undefined
  #attempt: Attempt | undefined

  constructor(
    endpoint: Endpoint,
    tlsOptions: tls.ConnectionOptions | undefined,
    credentials: Credentials | undefined,
    credentialsHint?: string,
  ) {
    checkMemjsShape()
    super(endpoint.host, endpoint.port, credentials?.username, credentials?.password, {})
    this.#tls = tlsOptions
    this.#credentialsHint = credentialsHint
  }

  open(callbacks: OpenCallbacks): OpenAttempt {
    const opened = openSocket(this, this.#tls)
    const { socket, readyEvent } = opened
    const attempt: Attempt = { socket, callbacks, settled: false }
    this.#attempt = attempt
    const onError = (err: Error) => this.#settle(attempt, () => callbacks.failed(connectFailureCode(err), connectFailureReason(err), err))
    const onClose = () =>
      this.#settle(attempt, () =>
        callbacks.failed(
          'ECONNCLOSED',
          this.#tls
            ? 'the server closed the connection during the TLS handshake'
            : 'the server closed the connection before it could be used (if it expects TLS, set `tls`)',
        ),
      )
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.once(readyEvent, () => {
      if (attempt.settled) return
      if (!(this.username && this.password)) return this.#settle(attempt, () => callbacks.ready(socket))
      opened.stage = 'authenticating'
      socket.on('data', this.#saslReader(attempt))
      this.listSasl()
    })
    attempt.cleanup = () => {
      socket.removeListener('error', onError)
      socket.removeListener('close', onClose)
      socket.removeAllListeners('data')
    }
    return {
      get stage() {
        return opened.stage
      },
      abort: () => this.#settle(attempt, () => socket.destroy()),
    }
  }

  get secure(): boolean {
    return this.#tls !== undefined
  }

  authRefusal(): string {
    if (this.username && this.password)
      return `SASL authentication failed for user ${JSON.stringify(this.username)} (check the username and password)`
    return `the server requires SASL authentication and no credentials are configured${this.#credentialsHint ? ` (${this.#credentialsHint})` : ''}`
  }

  /** memjs writes its SASL requests through here (`sasl` true), on the connection being opened. */
  override sock(sasl: boolean, go: (socket: Socket) => void): void {
    const attempt = this.#attempt
    if (sasl && attempt !== undefined && !attempt.settled) go(attempt.socket)
  }

  /** memjs's answer to SASL replies, on the store's socket: mechanisms listed, then authenticated or refused. */
  #saslReader(attempt: Attempt): (chunk: Buffer) => void {
    let buffered = Buffer.alloc(0)
    return (chunk) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.length >= 24) {
        const body = buffered.readUInt32BE(8)
        if (buffered[0] !== 0x81 || body > SASL_REPLY_LIMIT) {
          return this.#settle(attempt, () => {
            attempt.socket.destroy()
            attempt.callbacks.failed('EPROTOCOL', 'the server did not answer SASL authentication in the binary protocol')
          })
        }
        if (buffered.length < 24 + body) return
        const opcode = buffered[1]
        const status = buffered.readUInt16BE(6)
        buffered = buffered.subarray(24 + body)
        if (opcode === Opcode.saslList) this.saslAuth()
        else if (opcode === Opcode.saslAuth && status === Status.authError) {
          return this.#settle(attempt, () => {
            attempt.socket.destroy()
            attempt.callbacks.failed(
              'EAUTH',
              `SASL authentication failed for user ${JSON.stringify(this.username)} (check the username and password)`,
            )
          })
        } else if (opcode === Opcode.saslAuth) {
          // memjs's rule: any answer to AUTH but "auth error" means authenticated (a server without SASL says "unknown command").
          if (buffered.length > 0) {
            return this.#settle(attempt, () => {
              attempt.socket.destroy()
              attempt.callbacks.failed('EPROTOCOL', 'unexpected bytes after the SASL exchange')
            })
          }
          return this.#settle(attempt, () => attempt.callbacks.ready(attempt.socket))
        }
      }
    }
  }

  #settle(attempt: Attempt, outcome: () => void): void {
    if (attempt.settled) return
    attempt.settled = true
    attempt.cleanup?.()
    if (this.#attempt === attempt) this.#attempt = undefined
    outcome()
  }
}
