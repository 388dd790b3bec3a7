import type { Socket } from 'node:net'
import { type ErrorCode, MemcacheStoreError, toError } from '../errors.js'
import { Deadlines } from './deadlines.js'
import { ServerHealth } from './health.js'
import { type MemjsClient, type MemjsResponse, type MemjsServer, serverAddress } from './memjs-internals.js'
import { buildRequest, Opcode, RESPONSE_MAGIC, Status, statusText, storageExtras, touchExtras } from './protocol.js'
import { WriteBatcher } from './write-batcher.js'

export interface Item {
  value: Buffer
  cas: Buffer
}

export type StorageMode = 'set' | 'add' | 'replace'

/** `exists`: ADD found the key, or the CAS did not match. `notFound`: REPLACE or CAS found no key. */
export type StorageResult = { status: 'stored'; cas: Buffer } | { status: 'exists' } | { status: 'notFound' }

interface Pending {
  server: MemjsServer
  socket: Socket | undefined
  operation: string
  subject: string
  probe: boolean
  resolve(response: MemjsResponse): void
  reject(err: MemcacheStoreError): void
}

// memjs writes the sequence number as an unsigned 32-bit field but wraps it as a signed one, so it
// throws on every operation from 2^31 on; the counter is wrapped here well before that.
const MAX_SEQ = 0x7fff0000

/**
 * The memcached access layer: the only module that talks to memjs. It sends binary-protocol
 * requests through memjs's servers (for CAS, which memjs's methods lack) and settles
 * every one within `timeoutMs`, whatever memjs does: memjs leaves requests pending forever when the
 * server closes the connection, its own timeout never fires under continuous load, and its retries
 * would re-execute non-idempotent writes (this layer never retries).
 */
export class Memcached {
  readonly client: MemjsClient
  readonly timeoutMs: number
  readonly #ownsClient: boolean
  readonly #pending: Deadlines<Pending>
  readonly #health = new Map<MemjsServer, ServerHealth>()
  readonly #watchedSockets = new WeakSet<Socket>()
  readonly #writes = new WriteBatcher()
  #closed = false

  constructor(client: MemjsClient, timeoutMs: number, ownsClient: boolean) {
    this.client = client
    this.timeoutMs = timeoutMs
    this.#ownsClient = ownsClient
    this.#pending = new Deadlines(timeoutMs, (seq, pending) => this.#expire(seq, pending))
  }

  /** Requests sent and not yet settled. */
  get inFlight(): number {
    return this.#pending.size
  }

  get servers(): readonly MemjsServer[] {
    return this.client.servers
  }

  /** The address of the server a key lives on, for messages. */
  addressFor(key: string): string {
    const server = this.#serverFor(key)
    return server ? serverAddress(server) : 'no server'
  }

  async get(key: string, subject: string): Promise<Item | undefined> {
    const server = this.#serverFor(key)
    const response = await this.#send(server, 'GET', subject, (seq) => buildRequest(Opcode.get, key, seq))
    const { status } = response.header
    if (status === Status.notFound) return undefined
    if (status !== Status.ok) throw this.#statusError(server, 'GET', subject, response)
    return { value: response.val, cas: Buffer.from(response.header.cas) }
  }

  /** SET, ADD or REPLACE, with a CAS check when `cas` is given. */
  async store(
    mode: StorageMode,
    key: string,
    value: Buffer,
    options: { expiry: number; cas?: Buffer },
    subject: string,
  ): Promise<StorageResult> {
    const operation = mode.toUpperCase()
    const extras = storageExtras(options.expiry)
    const server = this.#serverFor(key)
    const response = await this.#send(server, operation, subject, (seq) => buildRequest(Opcode[mode], key, seq, extras, value, options.cas))
    const { status } = response.header
    if (status === Status.ok) return { status: 'stored', cas: Buffer.from(response.header.cas) }
    if (status === Status.exists) return { status: 'exists' }
    if (status === Status.notFound) return { status: 'notFound' }
    throw this.#statusError(server, operation, subject, response)
  }

  /** DELETE; false when there was nothing to delete. */
  async delete(key: string, subject: string): Promise<boolean> {
    const server = this.#serverFor(key)
    const response = await this.#send(server, 'DELETE', subject, (seq) => buildRequest(Opcode.delete, key, seq))
    if (response.header.status === Status.notFound) return false
    if (response.header.status !== Status.ok) throw this.#statusError(server, 'DELETE', subject, response)
    return true
  }

  /** TOUCH: a new expiry without rewriting the value; false when the key is missing. */
  async touch(key: string, expiry: number, subject: string): Promise<boolean> {
    const extras = touchExtras(expiry)
    const server = this.#serverFor(key)
    const response = await this.#send(server, 'TOUCH', subject, (seq) => buildRequest(Opcode.touch, key, seq, extras))
    if (response.header.status === Status.notFound) return false
    if (response.header.status !== Status.ok) throw this.#statusError(server, 'TOUCH', subject, response)
    return true
  }

  /** A NOOP round trip to one server (after SASL authentication, when configured), ignoring any back-off. */
  async ping(server: MemjsServer): Promise<void> {
    const response = await this.#send(server, 'NOOP', 'a readiness check', (seq) => buildRequest(Opcode.noop, '', seq), true)
    if (response.header.status !== Status.ok) throw this.#statusError(server, 'NOOP', 'a readiness check', response)
  }

  /** Settles everything in flight with an error and, when this layer created the client, closes it. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const [seq, { item }] of Array.from(this.#pending.items())) {
      this.#fail(seq, item, 'ECLOSED', `memcached ${item.operation} of ${item.subject} abandoned: the store was closed`)
    }
    this.#pending.clear()
    if (this.#ownsClient) this.client.close()
  }

  // Not memjs's `server(key)`: that one skips to the next server while a server is marked down by
  // memjs's `failover`, which would serve stale sessions when the server returns. A dead server's
  // keys stay its own; the circuit breaker fails them fast meanwhile.
  #serverFor(key: string): MemjsServer | null {
    const servers = this.client.servers
    return servers.length === 1 ? servers[0] : (servers[this.client.getServer(key)] ?? null)
  }

  #send(
    server: MemjsServer | null,
    operation: string,
    subject: string,
    build: (seq: number) => Buffer,
    ignoreBackoff = false,
  ): Promise<MemjsResponse> {
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new MemcacheStoreError('ECLOSED', operation, `memcached ${operation} of ${subject} refused: the store was closed`))
        return
      }
      if (!server) {
        reject(new MemcacheStoreError('ESERVERDOWN', operation, `memcached ${operation} of ${subject} failed: no server available`))
        return
      }
      const health = this.#healthOf(server)
      const now = performance.now()
      const admission = ignoreBackoff ? 'go' : health.admit(now)
      if (admission === 'refuse') {
        const ago = Math.round(now - health.lastFailureAt)
        const wait = Math.max(0, Math.round(health.downUntil - now))
        // Refused in a later turn of the event loop: a caller that retries on failure must not
        // spin in microtasks and starve the timers and I/O that would let the server recover.
        setImmediate(
          reject,
          new MemcacheStoreError(
            health.lastCode === 'EAUTH' ? 'EAUTH' : 'ESERVERDOWN',
            operation,
            `memcached ${operation} of ${subject} on ${serverAddress(server)} not sent: the server failed ${ago} ms ago (${health.lastError}); next attempt in ${wait} ms`,
            { server: serverAddress(server) },
          ),
        )
        return
      }
      const seq = this.#nextSeq()
      let request: Buffer
      try {
        request = build(seq)
      } catch (err) {
        if (admission === 'probe') health.probing = false
        reject(
          new MemcacheStoreError('ESERVER', operation, `memcached ${operation} of ${subject}: ${toError(err).message}`, { cause: err }),
        )
        return
      }
      const pending: Pending = { server, socket: undefined, operation, subject, probe: admission === 'probe', resolve, reject }
      this.#pending.add(seq, pending)
      server.onResponse(seq, this.#onResponse)
      server.onError(seq, (err) => this.#connectionError(seq, err))
      try {
        // A connected socket is written to at once by memjs: batch it with this turn's other requests,
        // unless this is the only request in flight (a lone request gains nothing from waiting).
        if (this.#pending.size > 1 && server.connected && server._socket) this.#writes.hold(server._socket)
        server.write(request)
      } catch (err) {
        this.#fail(
          seq,
          pending,
          'ECONNECTION',
          `memcached ${operation} of ${subject} on ${serverAddress(server)} failed: ${toError(err).message}`,
          err,
        )
        return
      }
      pending.socket = server._socket
      this.#watch(server, server._socket)
    })
  }

  // One handler for every request: memjs calls the callback registered under a response's opaque
  // (the request's seq), so the seq is read back from there instead of a closure per request.
  #onResponse = (response: MemjsResponse): void => this.#respond(response.header.opaque, response)

  #respond(seq: number, response: MemjsResponse): void {
    const pending = this.#pending.take(seq)
    if (!pending) return
    if (response.header.magic !== RESPONSE_MAGIC) {
      const reason = 'garbled response (not the binary protocol)'
      this.#markFailed(pending, reason)
      this.#resetConnection(pending.server, pending.socket, reason)
      pending.reject(this.#error('ECONNECTION', pending, `${this.#where(pending)} failed: ${reason}`))
      return
    }
    this.#healthOf(pending.server).succeeded()
    pending.resolve(response)
  }

  #connectionError(seq: number, cause: unknown): void {
    const pending = this.#pending.take(seq)
    if (!pending) return
    const message = toError(cause).message
    const code: ErrorCode = /authentication/i.test(message) ? 'EAUTH' : /timed out/.test(message) ? 'ETIMEDOUT' : 'ECONNECTION'
    const reason = code === 'EAUTH' ? authFailure(pending.server) : message
    this.#markFailed(pending, reason, code)
    pending.reject(this.#error(code, pending, `${this.#where(pending)} failed: ${reason}`, cause))
  }

  #expire(seq: number, pending: Pending): void {
    this.#forgetCallbacks(pending.server, seq)
    const reason = `no response within ${this.timeoutMs} ms`
    this.#markFailed(pending, reason)
    // A connection that left a request unanswered this long is stuck (frozen server, half-read
    // garbage); start afresh so that later requests do not queue behind it.
    this.#resetConnection(pending.server, pending.socket, `connection reset: another request got ${reason}`)
    pending.reject(this.#error('ETIMEDOUT', pending, `${this.#where(pending)} timed out: ${reason}`))
  }

  #watch(server: MemjsServer, socket: Socket | undefined): void {
    if (!socket || this.#watchedSockets.has(socket)) return
    this.#watchedSockets.add(socket)
    // memjs's own 'close' handler clears `_socket` and `connected` whatever socket they now hold: when
    // a new connection was opened between an error and the old socket's 'close' (a readiness check
    // right after a failure), it would orphan the new one and its requests would wait for the deadline.
    let successor: { socket: Socket; connected: boolean } | undefined
    socket.prependOnceListener('close', () => {
      const current = server._socket
      successor = current !== undefined && current !== socket ? { socket: current, connected: server.connected } : undefined
    })
    // memjs does nothing for requests in flight when the server closes the connection (they would
    // hang forever), and leaves their deadlines behind to time out the next connection.
    socket.once('close', () => {
      let orphans = 0
      for (const [seq, { item }] of Array.from(this.#pending.items())) {
        if (item.socket !== socket) continue
        orphans++
        this.#forgetCallbacks(server, seq)
        this.#fail(seq, item, 'ECONNCLOSED', `${this.#where(item)} failed: the server closed the connection before answering`)
      }
      if (successor !== undefined && server._socket === undefined && !successor.socket.destroyed) {
        server._socket = successor.socket
        server.connected = successor.connected
        return
      }
      if (orphans > 0 && server._socket === undefined) server.requestTimeouts = []
    })
  }

  #resetConnection(server: MemjsServer, socket: Socket | undefined, reason: string): void {
    if (socket !== undefined && server._socket === socket) server.error(new Error(reason))
  }

  #fail(seq: number, pending: Pending, code: ErrorCode, message: string, cause?: unknown): void {
    if (!this.#pending.delete(seq)) return
    if (code !== 'ECLOSED') this.#markFailed(pending, message)
    pending.reject(this.#error(code, pending, message, cause))
  }

  #markFailed(pending: Pending, reason: string, code?: ErrorCode): void {
    this.#healthOf(pending.server).failed(reason, performance.now(), pending.probe, code)
  }

  #forgetCallbacks(server: MemjsServer, seq: number): void {
    delete server.responseCallbacks[seq]
    delete server.errorCallbacks[seq]
  }

  #healthOf(server: MemjsServer): ServerHealth {
    let health = this.#health.get(server)
    if (!health) {
      health = new ServerHealth()
      this.#health.set(server, health)
    }
    return health
  }

  #nextSeq(): number {
    const client = this.client
    client.seq = client.seq >= MAX_SEQ || client.seq < 0 ? 1 : client.seq + 1
    return client.seq
  }

  #where(pending: Pending): string {
    return `memcached ${pending.operation} of ${pending.subject} on ${serverAddress(pending.server)}`
  }

  #error(code: ErrorCode, pending: Pending, message: string, cause?: unknown): MemcacheStoreError {
    return new MemcacheStoreError(code, pending.operation, message, { server: serverAddress(pending.server), cause })
  }

  #statusError(server: MemjsServer | null, operation: string, subject: string, response: MemjsResponse): MemcacheStoreError {
    const { status } = response.header
    const code: ErrorCode = status === Status.tooLarge ? 'ETOOLARGE' : status === Status.authError ? 'EAUTH' : 'ESERVER'
    const address = server ? serverAddress(server) : 'memcached'
    return new MemcacheStoreError(code, operation, `memcached ${operation} of ${subject} on ${address} failed: ${statusText(status)}`, {
      server: address,
    })
  }
}

/** Why memcached refused: memjs reports every SASL refusal with one string, with or without credentials. */
function authFailure(server: MemjsServer): string {
  if (server.username && server.password)
    return `SASL authentication failed for user ${JSON.stringify(server.username)} (check the username and password)`
  return 'the server requires SASL authentication and no credentials are configured (options `username`/`password`, `user:pass@host:port` in `servers`, or MEMCACHE_USERNAME/MEMCACHE_PASSWORD)'
}
