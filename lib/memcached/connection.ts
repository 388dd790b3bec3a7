import type { Socket } from 'node:net'
import type { DebugLog, StateListener } from './config.js'
import { type Failure, type FailureCode, MemcachedError } from './errors.js'
import { Fifo } from './fifo.js'
import { ServerHealth } from './health.js'
import { connectFailureCode, connectFailureReason, stalledOpening } from './socket.js'
import type { Command, CommandName, Expected, OpenAttempt, Receiver, Reply, RequestScope, Transport, WireProtocol } from './wire.js'
import type { WriteBatcher } from './write-batcher.js'

/**
 * A request waiting for its connection to open gives up on it this long before its operation's
 * deadline (at most; a tenth of the timeout when that is less), so that the operation fails with
 * why the connection did not open (a stalled TLS handshake is ETLS) rather than with the bare
 * timeout its operation would report a moment later.
 */
const OPEN_MARGIN_MS = 50

/**
 * memcached 1.6 over TLS can leave the last of several pipelined requests unread until more bytes
 * arrive (a TLS record holding more than one request: the rest stays decrypted inside OpenSSL while
 * memcached waits for the socket). Measured: a burst of 10 concurrent 2 KB saves, then silence, left
 * some of them waiting for the timeout. A TLS connection whose requests make no progress this long
 * is nudged with a no-op, whose bytes make memcached read again; its reply is consumed like any other.
 */
const TLS_NUDGE_MS = 10
/**
 * Nudges unanswered at once, at most. A nudge's own bytes can end up held with the request it was
 * meant to free (both inside OpenSSL): another one, TLS_NUDGE_MS later, frees both. The bound keeps
 * a frozen server from collecting a no-op every TLS_NUDGE_MS until the timeout.
 */
const MAX_NUDGES = 8

/**
 * How long the recovery probe (a no-op, once the connection is open) may take to be answered: a
 * server that is back answers within a round trip; one still frozen should not hold the requests
 * that wait for the probe's outcome for a whole timeout.
 */
const PROBE_MIN_MS = 100

const NOOP: Command = { name: 'noop', key: '' }
const ignore = (): void => {}
const silent: DebugLog = () => {}

/** One request on its way: written, or waiting for the connection to open. */
interface Pending extends Expected {
  readonly bytes: Buffer
  readonly scope: RequestScope
  /** When the request counts as unanswered (performance.now() time). */
  at: number
  /** Whether this request was the probe of a server in back-off. */
  probe: boolean
  resolve(reply: Reply): void
  reject(failure: Failure): void
}

/**
 * What a request does while its server is probed after a failure: `wait` goes along with the probe
 * (its outcome is the probe's), `refuse` fails at once (for a caller with a copy elsewhere), `force`
 * ignores the back-off altogether (readiness checks).
 */
export type Patience = 'wait' | 'refuse' | 'force'

export interface ConnectionOptions {
  transport: Transport
  protocol: WireProtocol
  timeoutMs: number
  batcher: WriteBatcher
  onStateChange?: StateListener
  debug?: DebugLog
  /** Added to a refused connection's reason: what to check (the default address, say). */
  refusedHint?: string
  /**
   * Added to a timeout when the server never answered anything on any connection: why a server may
   * accept connections and stay silent (it expects TLS, it speaks another protocol).
   */
  silenceHint?: string
}

/**
 * One server's connection, for either protocol: requests are written in order and memcached answers
 * them in order, so each reply must answer the oldest request (the protocol's reader checks it).
 * Every request settles within `timeoutMs`: a connection whose oldest request goes unanswered that
 * long is reset, and so is one that breaks framing. A reset connection's bytes are never read again;
 * the next request opens a new one, with fresh framing state. After a connection-level failure the
 * server is refused for a back-off (`health`) instead of every request paying a timeout.
 */
export class Connection {
  readonly address: string
  readonly health = new ServerHealth()
  readonly #options: ConnectionOptions
  readonly #debug: DebugLog
  /** The connection carrying requests, once opened and authenticated. */
  #socket: Socket | undefined
  #opening: OpenAttempt | undefined
  /** Requests waiting for the connection to open. */
  readonly #waiting = new Fifo<Pending>()
  /** Requests written on `#socket`, oldest first: the order replies come in. */
  readonly #written = new Fifo<Pending>()
  #timer: NodeJS.Timeout | undefined
  /** When `#timer` fires (performance.now() time); Infinity without one. */
  #timerAt = Infinity
  readonly #openMargin: number
  #opaque = 0
  #closed = false
  /** Whether `#socket` carried a reply yet. */
  #answered = false
  /** Whether the server ever answered, on any connection. */
  #everAnswered = false
  /** TLS only: when `#socket` last carried a reply (or a write to an idle connection), and the nudge timer. */
  #progressAt = 0
  #nudgeTimer: NodeJS.Timeout | undefined
  /** No-ops written to nudge memcached and not yet answered (not requests of the client's callers). */
  #nudges = 0
  /** The recovery probe in flight (a no-op): requests in `#waiting` go once it is answered. */
  #probe: Pending | undefined
  readonly #probeMs: number

  constructor(options: ConnectionOptions) {
    this.#options = options
    this.#debug = options.debug ?? silent
    this.#openMargin = Math.min(OPEN_MARGIN_MS, options.timeoutMs / 10)
    this.#probeMs = Math.min(options.timeoutMs, Math.max(PROBE_MIN_MS, options.timeoutMs / 4))
    this.address = `${options.transport.host}:${options.transport.port}`
  }

  /** Requests written or waiting, not yet settled. */
  get inFlight(): number {
    return this.#written.length - this.#nudges - (this.#probe ? 1 : 0) + this.#waiting.length
  }

  /** `send`, its outcome as a promise. */
  request<T>(command: Command, scope: RequestScope, interpret: (reply: Reply) => T, patience: Patience = 'wait'): Promise<T> {
    return new Promise<T>((resolve, reject) => this.send(command, scope, interpret, { resolved: resolve, rejected: reject }, patience))
  }

  /**
   * Sends one command; `interpret` turns its reply into the result (it may throw a Failure: a reply
   * that refuses the request), which goes to `receiver`. `patience`: what it does while the server is
   * in back-off or being probed.
   */
  send<T>(command: Command, scope: RequestScope, interpret: (reply: Reply) => T, receiver: Receiver<T>, patience: Patience = 'wait'): void {
    if (this.#closed) {
      receiver.rejected(this.error(command.name, { code: 'ECLOSED', reason: 'the client was closed', sent: false }))
      return
    }
    const now = performance.now()
    if (now >= scope.deadline) {
      const reason = `the operation's ${this.#options.timeoutMs} ms had passed before this request could be sent`
      receiver.rejected(this.error(command.name, { code: 'ETIMEDOUT', reason, sent: false }))
      return
    }
    const admission = patience === 'force' ? 'go' : this.health.admit(now)
    if (admission === 'probe') this.#startProbe(now)
    if (admission === 'refuse' || (admission !== 'go' && patience === 'refuse')) {
      const failure = this.#refusal(now)
      // Refused in a later turn of the event loop: a caller that retries on failure must not
      // spin in microtasks and starve the timers and I/O that would let the server recover.
      setImmediate(() => receiver.rejected(this.error(command.name, failure)))
      return
    }
    this.#opaque = this.#opaque >= 0xfffffff0 ? 1 : this.#opaque + 1
    const pending = new Request(
      this,
      command,
      this.#opaque,
      this.#options.protocol.encode(command, this.#opaque),
      scope,
      now + this.#options.timeoutMs,
      false,
      interpret,
      receiver,
    )
    if (admission !== 'go') {
      // The probe's outcome decides: sent once it is answered, failed with it otherwise.
      this.#waiting.push(pending)
      this.#arm(this.#openDue(pending))
    } else if (this.#socket !== undefined) {
      this.#write(this.#socket, pending)
      this.#arm(pending.at)
    } else {
      this.#waiting.push(pending)
      this.#open()
      this.#arm(this.#openDue(pending))
    }
  }

  /** Fails everything in flight with ECLOSED and closes the connection. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    const reason = 'abandoned: the client was closed'
    this.#opening?.abort()
    this.#opening = undefined
    for (const pending of this.#waiting.drain()) pending.reject({ code: 'ECLOSED', reason, sent: false })
    const socket = this.#socket
    this.#socket = undefined
    for (const pending of this.#written.drain()) pending.reject({ code: 'ECLOSED', reason, sent: true })
    socket?.destroy()
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerAt = Infinity
  }

  /** The error for a failed request of `command`. */
  error(command: string, failure: Failure): MemcachedError {
    return new MemcachedError(failure, this.address, command)
  }

  /** The error for a reply that refused a request (`interpret` threw a Failure). */
  refusal(command: string, failure: Failure): MemcachedError {
    return this.error(command, this.#explained(failure))
  }

  /**
   * After the back-off, a no-op tests whether the server is back (whatever request found the
   * back-off over, and those that arrive meanwhile, wait in `#waiting` for its answer).
   */
  #startProbe(now: number): void {
    this.#opaque = this.#opaque >= 0xfffffff0 ? 1 : this.#opaque + 1
    const scope: RequestScope = { deadline: Number.POSITIVE_INFINITY, sent: false, answered: false }
    const receiver: Receiver<void> = {
      resolved: () => this.#probeAnswered(),
      rejected: () => {
        this.#probe = undefined
      },
    }
    const bytes = this.#options.protocol.encode(NOOP, this.#opaque)
    const probe = new Request(this, NOOP, this.#opaque, bytes, scope, now + this.#options.timeoutMs, true, ignore, receiver)
    this.#probe = probe
    this.#debug('%s: probing whether it is back', this.address)
    if (this.#socket !== undefined) {
      this.#write(this.#socket, probe)
      this.#arm(probe.at)
    } else {
      this.#waiting.push(probe)
      this.#open()
      this.#arm(this.#openDue(probe))
    }
  }

  /** The probe was answered (the server is up again): what waited for it goes. */
  #probeAnswered(): void {
    this.#probe = undefined
    const socket = this.#socket
    if (socket === undefined) return
    this.#flush(socket, this.#waiting.drain())
    const head = this.#written.peek()
    if (head !== undefined) this.#arm(head.at)
  }

  /**
   * Writes requests that waited (for the connection to open, or for the probe's answer), in order;
   * one whose operation's deadline passed meanwhile is never sent (the event loop may have been
   * blocked past the sweep that would have failed it).
   */
  #flush(socket: Socket, waiting: Pending[]): void {
    if (waiting.length > 1) this.#options.batcher.hold(socket)
    const now = performance.now()
    for (const pending of waiting) {
      if (now < pending.scope.deadline) this.#write(socket, pending)
      else {
        const reason = `the operation's ${this.#options.timeoutMs} ms had passed before this request could be sent`
        pending.reject({ code: 'ETIMEDOUT', reason, sent: false })
      }
    }
  }

  #write(socket: Socket, pending: Pending): void {
    // The probe's answer is due sooner than a request's (PROBE_MIN_MS): counted from when it leaves.
    if (pending === this.#probe) {
      pending.at = performance.now() + this.#probeMs
      this.#arm(pending.at)
    }
    // Requests made while another is in flight leave together at the end of this event-loop turn.
    if (this.#written.length > 0) this.#options.batcher.hold(socket)
    else if (this.#options.transport.secure) this.#progressAt = performance.now()
    this.#written.push(pending)
    pending.scope.sent = true
    socket.write(pending.bytes)
    if (this.#options.transport.secure) this.#nudgeTimer ??= setTimeout(this.#nudge, TLS_NUDGE_MS)
  }

  /** TLS: writes a no-op when requests have waited TLS_NUDGE_MS without any reply (see TLS_NUDGE_MS). */
  #nudge = (): void => {
    this.#nudgeTimer = undefined
    const socket = this.#socket
    if (socket === undefined || this.#written.length === this.#nudges) return
    const now = performance.now()
    if (this.#nudges < MAX_NUDGES && now - this.#progressAt >= TLS_NUDGE_MS) {
      this.#nudges++
      this.#progressAt = now
      this.#opaque = this.#opaque >= 0xfffffff0 ? 1 : this.#opaque + 1
      const scope: RequestScope = { deadline: Number.POSITIVE_INFINITY, sent: false, answered: false }
      const settled = () => void this.#nudges--
      const bytes = this.#options.protocol.encode(NOOP, this.#opaque)
      const receiver = { resolved: settled, rejected: settled }
      this.#written.push(new Request(this, NOOP, this.#opaque, bytes, scope, now + this.#options.timeoutMs, false, ignore, receiver))
      socket.write(bytes)
    }
    this.#nudgeTimer = setTimeout(this.#nudge, TLS_NUDGE_MS)
  }

  #open(): void {
    if (this.#opening !== undefined || this.#closed) return
    this.#debug('%s: connecting (%s)', this.address, this.#options.protocol.name)
    this.#opening = this.#options.transport.open({
      ready: (socket) => {
        this.#opening = undefined
        if (this.#closed) return void socket.destroy()
        this.#debug('%s: connected', this.address)
        this.#use(socket)
      },
      failed: (code, reason, cause) => {
        this.#opening = undefined
        this.#debug('%s: connecting failed (%s: %s)', this.address, code, reason)
        const hint = code === 'ECONNECTION' && this.#options.refusedHint ? ` (${this.#options.refusedHint})` : ''
        this.#failWaiting({ code, reason: reason + hint, sent: false, cause })
      },
    })
  }

  #use(socket: Socket): void {
    this.#socket = socket
    this.#answered = false
    socket.setKeepAlive(true, 30_000)
    const read = this.#options.protocol.reader({
      expected: () => (this.#socket === socket ? this.#written.peek() : undefined),
      reply: (reply) => {
        if (this.#socket !== socket) return
        const pending = this.#written.shift() as Pending
        pending.scope.answered = true
        this.#answered = true
        this.#everAnswered = true
        this.#progressAt = performance.now()
        if (reply.status === 'authError') {
          // memcached closes a connection that did not authenticate: what follows it fails the same way.
          pending.resolve(reply)
          const reason = this.#options.transport.authRefusal?.() ?? 'the server requires authentication'
          return this.#lost(socket, { code: 'EAUTH', reason, sent: true, refused: true })
        }
        if (this.health.failures !== 0) this.#recovered()
        pending.resolve(reply)
      },
      violation: (reason) => this.#lost(socket, { code: 'EPROTOCOL', reason: `${reason}; the connection was reset`, sent: true }),
    })
    socket.on('data', read)
    // A TLS error can come after the handshake: with TLS 1.3 the server checks the client's
    // certificate once the client has finished, so a refusal ("certificate required") arrives as
    // an alert on the connection already handed over. It is still ETLS.
    socket.on('error', (err) => this.#lost(socket, this.#socketFailure(err)))
    socket.on('close', () =>
      this.#lost(socket, { code: 'ECONNCLOSED', reason: 'the server closed the connection before answering', sent: true }),
    )
    // While a probe is in flight only it goes: the rest waits for its answer (#probeAnswered).
    const probe = this.#probe
    if (probe !== undefined) {
      const waiting = this.#waiting.drain()
      for (const pending of waiting) {
        if (pending === probe) this.#write(socket, pending)
        else this.#waiting.push(pending)
      }
      return
    }
    this.#flush(socket, this.#waiting.drain())
  }

  /**
   * Why the connection broke. A reset before any reply is the server refusing what it was sent, as
   * a close is (ECONNCLOSED): a -Z server resets a plain connection as soon as its first bytes are
   * not a TLS record. A TLS error is ETLS even after the handshake (see #use).
   */
  #socketFailure(err: Error): Failure {
    const code = connectFailureCode(err)
    if (code === 'ECONNECTION' && !this.#answered && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      return {
        code: 'ECONNCLOSED',
        reason: `the server reset the connection before answering anything (${err.message})`,
        sent: true,
        cause: err,
      }
    }
    // A TLS alert before any reply ends the handshake the server had not accepted: it read none of
    // the requests written after the client's side finished, so none can be applied.
    const sent = !(code === 'ETLS' && !this.#answered)
    return { code, reason: connectFailureReason(err), sent, cause: err }
  }

  /** The connection is gone (closed, broken, reset): what was written on it fails, and its bytes are never read again. */
  #lost(socket: Socket, failure: Failure): void {
    if (this.#socket !== socket) return
    this.#socket = undefined
    socket.destroy()
    const written = this.#written.drain()
    this.#debug('%s: connection closed (%s: %s) with %d request(s) in flight', this.address, failure.code, failure.reason, written.length)
    if (written.length === 0 && failure.code === 'ECONNCLOSED') return // an idle connection closed: the next request reopens
    const wasProbe = written.some((pending) => pending.probe)
    this.#failed(failure, wasProbe)
    for (const pending of written) pending.reject(failure)
    // The probe failed: what waited for its answer fails with it, unsent, as a request refused
    // during the back-off would (ESERVERDOWN, or the EAUTH or ETLS that explains it).
    if (wasProbe) {
      const code = failure.code === 'EAUTH' || failure.code === 'ETLS' ? failure.code : 'ESERVERDOWN'
      for (const pending of this.#waiting.drain()) pending.reject({ code, reason: failure.reason, sent: false, cause: failure.cause })
    }
  }

  #failWaiting(failure: Failure): void {
    const waiting = this.#waiting.drain()
    this.#failed(
      failure,
      waiting.some((pending) => pending.probe),
    )
    for (const pending of waiting) pending.reject(failure)
  }

  #failed(failure: Failure, wasProbe: boolean): void {
    if (failure.code === 'ECLOSED') return
    const wasUp = this.health.failures === 0
    this.health.failed(failure.reason, performance.now(), wasProbe, failure.code)
    if (this.health.failures > 0) {
      this.#debug('%s: down, next attempt in %d ms', this.address, Math.round(this.health.downUntil - performance.now()))
    }
    if (wasUp && this.health.failures > 0) this.#options.onStateChange?.(this.address, 'down', this.error('connect', failure))
  }

  #recovered(): void {
    this.#debug('%s: answering again', this.address)
    this.health.succeeded()
    this.#options.onStateChange?.(this.address, 'up')
  }

  /** A refusal for want of authentication, worded by the transport (which knows its credentials). */
  #explained(failure: Failure): Failure {
    if (failure.code !== 'EAUTH' || !this.#options.transport.authRefusal) return failure
    return { ...failure, reason: this.#options.transport.authRefusal() }
  }

  #refusal(now: number): Failure {
    const health = this.health
    const ago = Math.round(now - health.lastFailureAt)
    const wait = Math.max(0, Math.round(health.downUntil - now))
    return {
      code: health.lastCode === 'EAUTH' || health.lastCode === 'ETLS' ? (health.lastCode as FailureCode) : 'ESERVERDOWN',
      reason: `the server failed ${ago} ms ago (${health.lastError}); next attempt in ${wait} ms`,
      sent: false,
    }
  }

  // Deadlines are checked after this turn's I/O callbacks (setImmediate): when the event loop was
  // blocked, replies that arrived meanwhile are read before any request is declared late.
  #fire = (): void => {
    setImmediate(this.#sweep)
  }

  /** Makes sure the timer fires by `due` (performance.now() time). */
  #arm(due: number): void {
    if (due >= this.#timerAt) return
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timerAt = due
    this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(due - performance.now())))
  }

  /** When a request waiting for the connection gives up on it: before its operation's deadline (OPEN_MARGIN_MS). */
  #openDue(pending: Pending): number {
    return Math.min(pending.at, pending.scope.deadline) - this.#openMargin
  }

  #sweep = (): void => {
    this.#timer = undefined
    this.#timerAt = Infinity
    const now = performance.now()
    const timeout = this.#options.timeoutMs
    const head = this.#written.peek()
    if (head !== undefined && head.at <= now && this.#socket !== undefined) {
      const silence =
        !this.#everAnswered && this.#options.silenceHint ? `; nothing ever came back from this server: ${this.#options.silenceHint}` : ''
      this.#lost(this.#socket, {
        code: 'ETIMEDOUT',
        reason: `no response within ${head.probe ? this.#probeMs : timeout} ms; the connection was reset${silence}`,
        sent: true,
      })
    }
    if (this.#probe !== undefined && this.#socket !== undefined) {
      // The connection is open and the probe unanswered: each request waiting for it gives up on
      // its own, before its deadline.
      for (
        let first = this.#waiting.peek();
        first !== undefined && first !== this.#probe && this.#openDue(first) <= now;
        first = this.#waiting.peek()
      ) {
        this.#waiting.shift()
        first.reject({
          code: 'ESERVERDOWN',
          reason: `the server failed and has not answered the probe since, for ${Math.round(now - (first.at - timeout))} ms`,
          sent: false,
        })
      }
    }
    const first = this.#waiting.peek()
    if (first !== undefined && this.#socket === undefined && this.#openDue(first) <= now) {
      const stage = this.#opening?.stage ?? 'connecting'
      this.#opening?.abort()
      this.#opening = undefined
      // How long the oldest request waited for the connection.
      this.#failWaiting(stalledOpening(stage, Math.round(now - (first.at - timeout)), this.#everAnswered))
    }
    const waiting = this.#waiting.peek()
    const next = Math.min(this.#written.peek()?.at ?? Infinity, waiting === undefined ? Infinity : this.#openDue(waiting))
    if (next !== Infinity) this.#arm(next)
  }
}

/** One request of a Connection: what the reader checks a reply against, and how its promise settles. */
class Request<T> implements Pending {
  readonly command: CommandName
  readonly key: string
  readonly opaque: number
  readonly bytes: Buffer
  readonly scope: RequestScope
  at: number
  probe: boolean
  readonly #connection: Connection
  readonly #interpret: (reply: Reply) => T
  readonly #receiver: Receiver<T>

  constructor(
    connection: Connection,
    command: Command,
    opaque: number,
    bytes: Buffer,
    scope: RequestScope,
    at: number,
    probe: boolean,
    interpret: (reply: Reply) => T,
    receiver: Receiver<T>,
  ) {
    this.#connection = connection
    this.command = command.name
    this.key = command.key
    this.opaque = opaque
    this.bytes = bytes
    this.scope = scope
    this.at = at
    this.probe = probe
    this.#interpret = interpret
    this.#receiver = receiver
  }

  resolve(reply: Reply): void {
    let result: T
    try {
      result = this.#interpret(reply)
    } catch (err) {
      // interpret throws a Failure (a refusing reply); anything else is a bug to pass on as is.
      this.#receiver.rejected(err instanceof Error ? err : this.#connection.refusal(this.command, err as Failure))
      return
    }
    this.#receiver.resolved(result)
  }

  reject(failure: Failure): void {
    this.#receiver.rejected(this.#connection.error(this.command, failure))
  }
}
