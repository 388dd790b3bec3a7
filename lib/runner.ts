import { type Deadlined, Deadlines } from './deadlines.js'
import { isServerFailure, MemcacheStoreError, type Operation, redactId, storeError } from './errors.js'
import type { SessionKeys } from './keys.js'
import { type LockWaiter, SessionLocks } from './locks.js'
import type { BurstLog } from './log.js'
import type { Receiver, RequestScope } from './memcached/index.js'
import { type Counters, type OperationTrace, operationChannel } from './observability.js'

export type Callback<T> = (err: unknown, value?: T) => void

/** One store operation on one session, as its work sees it. */
export interface OperationContext {
  readonly operation: Operation
  readonly key: string
  readonly sid: string
  /** The session as messages name it: `session abc123…`. */
  readonly subject: string
  /** The deadline of the operation's requests, and whether one of them was sent. */
  readonly scope: RequestScope
}

/** What `run` needs to know about an operation. */
export interface OperationSpec<T, R> {
  operation: Operation
  sid: unknown
  /** The store's own operations on a listed key (whose ID `hashIds` hides): the key itself, unchecked. */
  key?: string
  callback: Callback<R> | undefined
  /** What failOpen yields instead of a server failure; also what `get` yields for an ID memcached cannot hold. */
  fallback: T
  /**
   * The operation itself, run under the session's lock: `work`, or, for an operation of one request,
   * `send`, which sends it with `receiver` taking the reply (no promise in between).
   */
  work?(op: OperationContext): Promise<T>
  send?(op: OperationContext, receiver: Receiver<T>): void
  /**
   * Turns the work's result into what the caller gets, in the step that hands it over. `op` is
   * undefined when the operation ended before it started (the store closed, an unusable ID).
   */
  finish?(value: T, op: OperationContext | undefined): R
  /** Adds what the work's result says to the operation's trace (how a `set` wrote). */
  annotate?(trace: OperationTrace, value: T): void
  /** The store's own follow-up work (a listing's reads, housekeeping): neither counted nor traced. */
  internal?: boolean
}

export interface RunnerOptions {
  keys: SessionKeys
  timeoutMs: number
  failOpen: boolean
  log: BurstLog
  counters: Counters
  /** The server a key lives on, for timeout messages and traces. */
  addressFor(key: string): string
  /**
   * While there is no server to send to yet (auto discovery before its first answer): what operations
   * wait for, within their timeout. Undefined once there are servers.
   */
  gate?(): Promise<void> | undefined
}

const DONE: Promise<void> = Promise.resolve()

const FAIL_OPEN_CONSEQUENCE: Partial<Record<Operation, string>> = {
  get: 'served as no session',
  set: 'session not saved',
  touch: 'expiry not extended',
}

/** What every operation in flight shares: the session locks, the deadlines, the options. */
interface Shared {
  readonly options: RunnerOptions
  readonly locks: SessionLocks
  readonly running: Deadlines<Running<unknown, unknown>>
}

/**
 * Runs store operations: the session ID checked as a key, the session's lock, one deadline for the
 * whole operation (lock wait included), failOpen, and the optional express-session callback. An
 * operation whose deadline passes while it waits for the lock never runs: its turn is passed on.
 */
export class OperationRunner {
  readonly #shared: Shared
  #closed = false

  constructor(options: RunnerOptions) {
    this.#shared = {
      options,
      locks: new SessionLocks(),
      running: new Deadlines(options.timeoutMs, (running) => running.expired()),
    }
  }

  get inFlight(): number {
    return this.#shared.running.size
  }

  get lockedSessions(): number {
    return this.#shared.locks.size
  }

  run<T, R = T>(spec: OperationSpec<T, R>): Promise<R> {
    const startedAt = performance.now()
    const gate = this.#shared.options.gate?.()
    if (gate === undefined) return this.#start(spec, startedAt)
    return this.#afterGate(gate, startedAt, spec.operation).then(
      () => this.#start(spec, startedAt),
      (err: unknown) => this.#ended(spec, Promise.reject(err), undefined, startedAt),
    )
  }

  /** Waits for `gate` until the operation's deadline; rejects with ETIMEDOUT (nothing sent) when it does not open in time. */
  #afterGate(gate: Promise<void>, startedAt: number, operation: Operation = 'get'): Promise<void> {
    const { timeoutMs } = this.#shared.options
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          const reason = `no server list within ${timeoutMs} ms: the discovery endpoint has not answered yet`
          reject(
            new MemcacheStoreError('ETIMEDOUT', operation, `${operation} failed: ${reason}; nothing was sent`, { reason, sent: false }),
          )
        },
        Math.max(0, startedAt + timeoutMs - performance.now()),
      )
      gate.then(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  #start<T, R>(spec: OperationSpec<T, R>, startedAt: number): Promise<R> {
    const { operation, sid } = spec
    const { options, locks, running } = this.#shared
    const trace = spec.internal !== true && operationChannel.hasSubscribers ? startTrace(traceOf(options, operation, sid)) : undefined
    if (this.#closed) {
      const subject = describeSession(sid)
      const refused = new MemcacheStoreError(
        'ECLOSED',
        operation,
        `${operation} of ${subject} refused: the store was closed; nothing was sent`,
        {
          session: subject,
          reason: 'the store was closed',
        },
      )
      return this.#ended(spec, Promise.reject(refused), trace, startedAt)
    }
    let key: string
    try {
      key = spec.key ?? options.keys.checked(sid, operation)
    } catch (err) {
      // No session can be stored under a key memcached refuses.
      return this.#ended(spec, operation === 'get' ? Promise.resolve(spec.fallback) : Promise.reject(err), trace, startedAt)
    }
    // One object per operation carries everything its steps need (context, lock turn, deadline,
    // hand-over), so that no closure is made for them; the caller's promise is settled from it directly.
    let operationInFlight: Running<T, R> | undefined
    const promise = new Promise<R>((resolve, reject) => {
      operationInFlight = new Running(this.#shared, spec, key, sid as string, trace, startedAt, resolve, reject)
    })
    const started = operationInFlight as Running<T, R>
    running.add(started as unknown as Running<unknown, unknown>)
    if (locks.acquire(key, started)) started.start()
    return promise
  }

  /** An operation that ends before it starts (store closed, unusable ID): handed over like the others. */
  #ended<T, R>(spec: OperationSpec<T, R>, result: Promise<T>, trace: OperationTrace | undefined, startedAt: number): Promise<R> {
    const { operation } = spec
    const finishing = spec.finish && ((value: T) => (spec.finish as NonNullable<typeof spec.finish>).call(spec, value, undefined))
    if (spec.internal) return settle(result, spec.callback, finishing)
    return settle(result, spec.callback, finishing, (err, value) => record(this.#shared.options, operation, startedAt, trace, err, value))
  }

  /** An operation that turned out to need no request (a touch the read already made): counted, traced, handed over at once. */
  nothingToDo(operation: Operation, sid: string, callback: Callback<void> | undefined): Promise<void> {
    const { options } = this.#shared
    const startedAt = performance.now()
    const trace = operationChannel.hasSubscribers ? startTrace(traceOf(options, operation, sid)) : undefined
    record(options, operation, startedAt, trace, undefined)
    if (callback) process.nextTick(callback, null)
    return DONE
  }

  /** A listing (all, ids, length, clear): counted and traced like the other operations, on every server. */
  list<T>(operation: Operation, servers: () => string, callback: Callback<T> | undefined, work: () => Promise<T>): Promise<T> {
    const { options } = this.#shared
    const startedAt = performance.now()
    const gate = options.gate?.()
    const trace = operationChannel.hasSubscribers ? startTrace({ operation, server: gate ? '' : servers(), session: undefined }) : undefined
    const listing = () => {
      try {
        return work().catch((err: unknown) => Promise.reject(storeError(err, operation, undefined)))
      } catch (err) {
        return Promise.reject(storeError(err, operation, undefined))
      }
    }
    const listed = gate === undefined ? listing() : this.#afterGate(gate, startedAt, operation).then(listing)
    return settle(listed, callback, undefined, (err) => record(options, operation, startedAt, trace, err))
  }

  /** Refuses new operations and cancels lock waits; resolves once the operations already running have settled. */
  close(): Promise<void> {
    this.#closed = true
    this.#shared.locks.cancelWaiters()
    return this.#shared.running.whenEmpty()
  }
}

/**
 * One operation in flight, from start to hand-over: its context (what its work sees), its place in
 * the session's lock queue and among the deadlines, and how its outcome reaches the caller.
 */
class Running<T, R> implements OperationContext, LockWaiter, Deadlined<Running<unknown, unknown>>, Receiver<T> {
  readonly operation: Operation
  readonly key: string
  readonly sid: string
  readonly scope: RequestScope
  readonly spec: OperationSpec<T, R>
  readonly trace: OperationTrace | undefined
  readonly startedAt: number
  /** Whether the operation holds the session's lock (false while it waits for it). */
  locked = false
  pending = false
  earlier: Running<unknown, unknown> | undefined = undefined
  later: Running<unknown, unknown> | undefined = undefined
  readonly #shared: Shared
  #resolve: ((value: R) => void) | undefined
  #reject: ((err: unknown) => void) | undefined
  #subject: string | undefined = undefined

  constructor(
    shared: Shared,
    spec: OperationSpec<T, R>,
    key: string,
    sid: string,
    trace: OperationTrace | undefined,
    startedAt: number,
    resolve: (value: R) => void,
    reject: (err: unknown) => void,
  ) {
    this.#shared = shared
    this.spec = spec
    this.operation = spec.operation
    this.key = key
    this.sid = sid
    this.trace = trace
    this.startedAt = startedAt
    this.scope = { deadline: startedAt + shared.options.timeoutMs, sent: false, answered: false }
    this.#resolve = resolve
    this.#reject = reject
  }

  get deadline(): number {
    return this.scope.deadline
  }

  /** The session as messages name it; built only when a message needs it (failures, debug lines). */
  get subject(): string {
    this.#subject ??= `session ${redactId(this.sid)}`
    return this.#subject
  }

  /** Runs the work, the session's lock held. */
  start(): void {
    this.locked = true
    const { spec } = this
    try {
      if (spec.send) spec.send(this, this)
      else {
        ;(spec as { work(op: OperationContext): Promise<T> }).work(this).then(
          (value) => this.resolved(value),
          (err: unknown) => this.rejected(err),
        )
      }
    } catch (err) {
      this.rejected(err)
    }
  }

  /** The work's (or its one request's) result. */
  resolved(value: T): void {
    if (this.#released()) this.#succeeded(value)
  }

  rejected(err: unknown): void {
    if (this.#released()) this.#failed(err)
  }

  /** The lock is this operation's after a wait: it runs, unless its deadline passed meanwhile. */
  turn(): void {
    const { locks, running } = this.#shared
    // Timed out while waiting: the work must never run. The deadline may have passed with its
    // sweep still to come (a blocked event loop): the waiter then fails here, the same way.
    if (!this.pending) {
      locks.release(this.key)
    } else if (performance.now() >= this.deadline) {
      running.delete(this as Running<unknown, unknown>)
      locks.release(this.key)
      this.#failed(this.#timeout())
    } else this.start()
  }

  /** The store closed while this operation waited for its session's lock. */
  cancelled(): void {
    if (!this.#shared.running.delete(this as Running<unknown, unknown>)) return
    const reason = 'the store was closed while it waited for the session'
    this.#handOverError(
      new MemcacheStoreError('ECLOSED', this.operation, `${this.operation} of ${this.subject} abandoned: ${reason}; nothing was sent`, {
        session: this.subject,
        reason,
      }),
    )
  }

  /** The deadline passed (the sweep took it off the list): the caller hears now; work still running settles unheard. */
  expired(): void {
    this.#failed(this.#timeout())
  }

  /** The work ended: the lock is passed on; true when the outcome is still the caller's to hear. */
  #released(): boolean {
    this.#shared.locks.release(this.key)
    return this.#shared.running.delete(this as Running<unknown, unknown>)
  }

  #succeeded(value: T): void {
    this.#shared.options.log.recovered('memcached')
    if (this.trace && this.spec.annotate) this.spec.annotate(this.trace, value)
    this.#handOver(value)
  }

  /** What a failure becomes: failOpen's fallback for a server failure (never for destroy), else the store's error. */
  #failed(err: unknown): void {
    const error = storeError(err, this.operation, this.subject, this.scope.answered)
    const { failOpen, log } = this.#shared.options
    // A logout that did not happen must not look like one: destroy never fails open.
    if (failOpen && this.operation !== 'destroy' && isServerFailure(error)) {
      log.report('memcached', `${error.message}; ${FAIL_OPEN_CONSEQUENCE[this.operation]} (failOpen)`)
      this.#handOver(this.spec.fallback)
    } else this.#handOverError(error)
  }

  /**
   * Hands a result to express-session's callback (outside the promise chain, next tick) or to the
   * caller's await, through `finish`; what `finish` throws goes to the callback (or rejects).
   */
  #handOver(value: T): void {
    const { spec } = this
    let out: R
    try {
      out = spec.finish ? spec.finish(value, this) : (value as unknown as R)
    } catch (err) {
      this.#handOverError(storeError(err, this.operation, this.subject, this.scope.answered))
      return
    }
    if (this.spec.internal !== true) record(this.#shared.options, this.operation, this.startedAt, this.trace, undefined, out)
    const resolve = this.#resolve
    this.#letGo()
    if (spec.callback) process.nextTick(spec.callback, null, out)
    resolve?.(out)
  }

  /** With a callback the error goes to it and the caller's promise resolves (undefined); without, the promise rejects. */
  #handOverError(err: MemcacheStoreError): void {
    if (this.spec.internal !== true) record(this.#shared.options, this.operation, this.startedAt, this.trace, err)
    const { callback } = this.spec
    const resolve = this.#resolve
    const reject = this.#reject
    this.#letGo()
    if (callback) {
      process.nextTick(callback, err)
      resolve?.(undefined as R)
    } else reject?.(err)
  }

  /**
   * Drops the caller's promise once it is settled: this object can stay reachable for a while after
   * the operation ended (a connection's request refers to its scope's owner until the reply), and
   * through the promise it would keep the session it resolved with alive (see docs/internals.md).
   */
  #letGo(): void {
    this.#resolve = undefined
    this.#reject = undefined
  }

  #timeout(): MemcacheStoreError {
    const { operation, subject, key } = this
    const { timeoutMs: ms, addressFor } = this.#shared.options
    const sent = this.scope.sent
    const server = addressFor(key)
    if (!this.locked) {
      const reason = `another operation on this session was still running after ${ms} ms`
      return new MemcacheStoreError(
        'ETIMEDOUT',
        operation,
        `${operation} of ${subject} (kept on ${server}) timed out waiting for the session's lock: ${reason}; nothing was sent and it will not run`,
        { server, session: subject, reason, sent: false },
      )
    }
    const reason = `not settled within ${ms} ms`
    const note = sent ? (operation === 'get' ? '' : '; a request was sent and may still be applied') : '; nothing was sent'
    return new MemcacheStoreError('ETIMEDOUT', operation, `memcached ${operation} of ${subject} on ${server} timed out: ${reason}${note}`, {
      server,
      session: subject,
      reason,
      sent,
    })
  }
}

/**
 * Refuses a callback argument that is not a function (nor absent), synchronously and before
 * anything is sent: a TypeError is a programming error, thrown like Node's own APIs throw one, not
 * a rejection (every rejection of the store is a MemcacheStoreError, and a rejection nobody awaits
 * would be an unhandled one). The usual cause is a framework that calls the store with other
 * arguments than express-session's: koa-session passes `maxAge` where the callback goes. Only the
 * argument's type is named (and a number's or boolean's value): an object such as koa's `{ ctx }`
 * carries the request's cookies, which must never reach a message.
 */
export function checkCallback(operation: Operation, callback: unknown): void {
  if (callback === undefined || callback === null || typeof callback === 'function') return
  const got =
    typeof callback === 'number' || typeof callback === 'boolean' ? `\`${callback}\` (${typeof callback})` : `a ${typeof callback}`
  const hint = operation === 'get' || operation === 'set' || operation === 'destroy' ? ' (for koa-session, give it `koaStore(store)`)' : ''
  throw new TypeError(`Expected the callback of \`${operation}\` to be a function or undefined, got ${got}: nothing was sent${hint}`)
}

/** How messages name a session: a shortened ID, never the whole one. */
export function describeSession(sid: unknown): string {
  return typeof sid === 'string' && sid !== '' ? `session ${redactId(sid)}` : 'a session'
}

function traceOf(options: RunnerOptions, operation: Operation, sid: unknown): OperationTrace {
  const valid = typeof sid === 'string' && sid !== ''
  return {
    operation,
    server: valid ? options.addressFor(options.keys.keyOf(sid)) : '',
    session: valid ? redactId(sid) : undefined,
  }
}

/** The counters and the trace of a settled operation; for `get`, whether it found a session. */
function record(
  options: RunnerOptions,
  operation: Operation,
  startedAt: number,
  trace: OperationTrace | undefined,
  err: unknown,
  value?: unknown,
): void {
  const hit = operation === 'get' && err === undefined ? value !== null : undefined
  options.counters.record(operation, startedAt, err, hit)
  if (trace) finishTrace(trace, err, hit)
}

/** A trace's `start` and `end` (the synchronous part of an operation returns at once). */
function startTrace(trace: OperationTrace): OperationTrace {
  operationChannel.start.publish(trace)
  operationChannel.end.publish(trace)
  return trace
}

/** The rest of a trace once the operation settled: `error`, then `asyncStart` and `asyncEnd`, as tracePromise publishes them. */
function finishTrace(trace: OperationTrace, err: unknown, hit: boolean | undefined): void {
  if (hit !== undefined) trace.hit = hit
  if (err !== undefined) {
    trace.error = err
    operationChannel.error.publish(trace)
  }
  operationChannel.asyncStart.publish(trace)
  operationChannel.asyncEnd.publish(trace)
}

/**
 * Hands a result to express-session's callback (outside the promise chain) or to the caller's
 * await, through `finish` when given; what `finish` throws goes to the callback. `observe` sees the
 * outcome as handed over (error, or value).
 */
export function settle<T, R = T>(
  result: Promise<T>,
  callback: Callback<R> | undefined,
  finish?: (value: T) => R,
  observe?: (err: unknown, value?: R) => void,
): Promise<R> {
  const handed: Promise<R> =
    finish || observe
      ? result.then(
          (value) => {
            let out: R
            try {
              out = finish ? finish(value) : (value as unknown as R)
            } catch (err) {
              observe?.(err)
              throw err
            }
            observe?.(undefined, out)
            return out
          },
          (err) => {
            observe?.(err)
            throw err
          },
        )
      : (result as unknown as Promise<R>)
  if (!callback) return handed
  return handed.then(
    (out) => {
      process.nextTick(callback, null, out)
      return out
    },
    (err) => {
      process.nextTick(callback, err)
      return undefined as R
    },
  )
}
