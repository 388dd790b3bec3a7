// Text-protocol connections (the meta protocol's, and the key listing's): TCP or TLS, authenticated
// with memcached's tokens (-Y) when credentials are given. memcached has no SASL for text commands.
import type tls from 'node:tls'
import type { Credentials } from './config.js'
import { MAX_LINE_BYTES } from './meta.js'
import { connectFailureCode, connectFailureReason, type Endpoint, openSocket } from './socket.js'
import type { OpenAttempt, OpenCallbacks, Transport } from './wire.js'

const CRLF = Buffer.from('\r\n')

/**
 * The key of memcached's token authentication (-Y): a -Y server only reads the data ("user pass");
 * a server without -Y would store it, so it is written already expired (exptime -1) under a name no
 * application uses.
 */
const AUTH_KEY = '__express_session_memcache_auth__'

/** Text-protocol connections to one server: TCP or TLS, authenticated with memcached's tokens when credentials are given. */
export class TextTransport implements Transport {
  readonly host: string
  readonly port: number
  readonly #tls: tls.ConnectionOptions | undefined
  readonly #credentials: Credentials | undefined
  readonly #credentialsHint: string | undefined

  constructor(
    endpoint: Endpoint,
    tlsOptions: tls.ConnectionOptions | undefined,
    credentials: Credentials | undefined,
    credentialsHint?: string,
  ) {
    this.host = endpoint.host
    this.port = endpoint.port
    this.#tls = tlsOptions
    this.#credentials = credentials
    this.#credentialsHint = credentialsHint
  }

  get secure(): boolean {
    return this.#tls !== undefined
  }

  authRefusal(): string {
    if (this.#credentials) return `token authentication failed for user ${JSON.stringify(this.#credentials.username)}`
    return `the server requires token authentication (memcached -Y) and no credentials are configured${this.#credentialsHint ? ` (${this.#credentialsHint})` : ''}`
  }

  open(callbacks: OpenCallbacks): OpenAttempt {
    const opened = openSocket(this, this.#tls)
    const { socket, readyEvent } = opened
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      socket.removeListener('data', onData)
      socket.removeListener('error', onError)
      socket.removeListener('close', onClose)
      outcome()
    }
    const onError = (err: Error) =>
      settle(() => {
        const code = connectFailureCode(err)
        // A -Z server resets a plain connection whose first bytes (this set) are not a TLS record:
        // a refusal like a close, which ready() explains (set \`tls\`; or the binary protocol).
        if (code === 'ECONNECTION' && opened.stage === 'authenticating' && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
          return callbacks.failed(
            'ECONNCLOSED',
            `the server reset the connection instead of answering token authentication (${err.message})`,
            err,
          )
        }
        callbacks.failed(code, connectFailureReason(err), err)
      })
    const onClose = () =>
      settle(() =>
        callbacks.failed(
          'ECONNCLOSED',
          opened.stage === 'authenticating'
            ? 'the server closed the connection instead of answering token authentication: it speaks only the binary protocol (started with -S for SASL, or -B binary), where SASL is used instead'
            : `the server closed the connection while it was being opened${this.#tls ? ' (during the TLS handshake)' : ' (if it expects TLS, set `tls`)'}`,
        ),
      )
    let line = ''
    const onData = (chunk: Buffer) => {
      line += chunk.toString('latin1')
      const end = line.indexOf('\r\n')
      if (end < 0) {
        if (line.length > MAX_LINE_BYTES) settle(() => callbacks.failed('EPROTOCOL', 'an endless reply to token authentication'))
        return
      }
      const answer = line.slice(0, end)
      if (answer === 'STORED' && end + 2 === line.length) return settle(() => callbacks.ready(socket))
      socket.destroy()
      if (answer.startsWith('CLIENT_ERROR')) {
        const user = JSON.stringify(this.#credentials?.username)
        return settle(() =>
          callbacks.failed(
            'EAUTH',
            `token authentication failed for user ${user} (${answer}): check the username and password in the server's -Y file`,
          ),
        )
      }
      settle(() => callbacks.failed('EPROTOCOL', `unexpected answer to token authentication: ${JSON.stringify(answer.slice(0, 80))}`))
    }
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.once(readyEvent, () => {
      if (settled) return
      const credentials = this.#credentials
      if (credentials === undefined) return settle(() => callbacks.ready(socket))
      const token = Buffer.from(`${credentials.username} ${credentials.password}`)
      opened.stage = 'authenticating'
      socket.on('data', onData)
      socket.write(Buffer.concat([Buffer.from(`set ${AUTH_KEY} 0 -1 ${token.length}\r\n`), token, CRLF]))
    })
    return {
      get stage() {
        return opened.stage
      },
      abort: () => settle(() => socket.destroy()),
    }
  }
}
