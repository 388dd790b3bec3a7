import { type Deadlined, Deadlines } from './deadlines.js'
import { isServerFailure, MemcacheStoreError, type Operation, redactId } from './errors.js'
import { sessionKey } from './keys.js'
import { type LockWaiter, SessionLocks } from './locks.js'
import type { BurstLog } from './log.js'
import type { RequestContext } from './memcached/wire.js'
import { type Counters, type OperationTrace, operationChannel, type WriteKind } from './observability.js'

export type Callback<T> = (err: unknown, value?: T) => void

/** One store operation on one session, as its work and the memcached layer see it. */
export interface OperationContext extends RequestContext {
  readonly key: string
  readonly sid: string
  /** Whether the operation holds the session's lock (false while it waits for it). */
  locked: boolean
  /** How a `set` wrote, for traces. */
  write?: WriteKind
  /** `get`: until when its get-and-touch extended memcached's expiry (ms since the epoch); 0 without one. */
  extendedUntil: number
  /** `get`: the lifetime (seconds) its get-and-touch gave the session; 0 without one. */
  extendedFor: number
}

/** What `run` needs to know about an operation. */
export interface OperationSpec<T, R> {
  operation: Operation
  sid: unknown
  callback: Callback<R> | undefined
  /** What failOpen yields instead of a server failure; also what `get` yields for an ID memcached cannot hold. */
  fallback: T
  /** The operation itself, run under the session's lock. */
  work(context: OperationContext): Promise<T>
  /**
   * Turns the work's result into what the caller gets, in the step that hands it over. `context`
   * is the operation's (undefined when it ended before it started: the store closed, an unusable ID).
   */
  finish?(value: T, context: OperationContext | undefined): R
  /** The store's own follow-up work (a listing's reads, housekeeping): neither counted nor traced. */
  internal?: boolean
}

export interface RunnerOptions {
  prefix: string
  timeoutMs: number
  failOpen: boolean
  log: BurstLog
  counters: Counters
  /** The server a key lives on, for timeout messages and traces. */
  addressFor(key: string): string
}

const DONE: Promise<void> = Promise.resolve()

const FAIL_OPEN_CONSEQUENCE: Partial<Record<Operation, string>> = {
  get: 'served as no session',
  set: 'session not saved',
  touch: 'expiry not extended',
}

/**
 * Runs store operations: the session ID checked as a key, the session's lock, one deadline for the
 * whole operation (lock wait included), failOpen, and the optional express-session callback.
 * An operation whose deadline passes while it waits for the lock never runs: its turn is passed on.
 */
export class OperationRunner {
  readonly #options: RunnerOptions
  readonly #locks = new SessionLocks()
  readonly #running: Deadlines<Running<unknown, unknown>>
  #closed = false

  constructor(options: RunnerOptions) {
    this.#options = options
    this.#running = new Deadlines(options.timeoutMs, (running) => running.fail(this.#timeoutError(running)))
  }

  get timeoutMs(): number {
    return this.#options.timeoutMs
  }

  get inFlight(): number {
    return this.#running.size
  }

  get lockedSessions(): number {
    return this.#locks.size
  }

  run<T, R = T>(spec: OperationSpec<T, R>): Promise<R> {
    const internal = spec.internal === true
    const startedAt = internal ? 0 : performance.now()
    const trace = !internal && operationChannel.hasSubscribers ? startTrace(this.#trace(spec.operation, spec.sid)) : undefined
    const { operation, sid } = spec
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
      return this.#settled(spec, Promise.reject(refused), trace, startedAt)
    }
    let key: string
    try {
      key = sessionKey(this.#options.prefix, sid, operation)
    } catch (err) {
      // No session can be stored under a key memcached refuses.
      return this.#settled(spec, operation === 'get' ? Promise.resolve(spec.fallback) : Promise.reject(err), trace, startedAt)
    }
    // One object per operation carries everything its steps need (context, lock turn, deadline,
    // hand-over), so that no closure is made for them; the caller's promise is settled from it directly.
    let running: Running<T, R> | undefined
    const promise = new Promise<R>((resolve, reject) => {
      running = new Running(this, spec, key, sid as string, trace, startedAt, resolve, reject)
    })
    const started = running as Running<T, R>
    this.#running.add(started as unknown as Running<unknown, unknown>)
    if (this.#locks.acquire(key, started)) this.#work(started)
    return promise
  }

  /** An operation that ends before it starts (store closed, unusable ID): handed over like the others. */
  #settled<T, R>(spec: OperationSpec<T, R>, result: Promise<T>, trace: OperationTrace | undefined, startedAt: number): Promise<R> {
    const { operation, finish } = spec
    const finishing = finish && ((value: T) => finish(value, undefined))
    if (spec.internal) return settle(result, spec.callback, finishing)
    return settle(result, spec.callback, finishing, (err, value) => this.#record(operation, startedAt, trace, err, value))
  }

  /** The lock of `running`'s session is its own after a wait: runs its work, unless its deadline passed meanwhile. */
  turn<T, R>(running: Running<T, R>): void {
    const { key } = running
    // Timed out while waiting: the work must never run. The deadline may have passed with its
    // sweep still to come (a blocked event loop): the waiter then fails here, the same way.
    if (!this.#running.has(running)) {
      this.#locks.release(key)
      return
    }
    if (performance.now() >= running.deadline) {
      this.#running.delete(running)
      this.#locks.release(key)
      running.fail(this.#timeoutError(running))
      return
    }
    this.#work(running)
  }

  /** Runs an operation's work, its session's lock held. */
  #work<T, R>(running: Running<T, R>): void {
    const { key } = running
    running.locked = true
    let work: Promise<T>
    try {
      work = running.spec.work(running)
    } catch (err) {
      work = Promise.reject(err)
    }
    work.then(
      (value) => {
        this.#locks.release(key)
        if (this.#running.delete(running)) running.succeed(value)
      },
      (err) => {
        this.#locks.release(key)
        if (this.#running.delete(running)) running.fail(err)
      },
    )
  }

  /** The store closed while `running` waited for its session's lock. */
  cancelled<T, R>(running: Running<T, R>): void {
    if (!this.#running.delete(running)) return
    const reason = 'the store was closed while it waited for the session'
    const { operation, subject } = running
    running.handOverError(
      new MemcacheStoreError('ECLOSED', operation, `${operation} of ${subject} abandoned: ${reason}; nothing was sent`, {
        session: subject,
        reason,
      }),
    )
  }

  /** What an operation's failure becomes: failOpen's fallback for a server failure (never for destroy), else the error. */
  failed<T, R>(running: Running<T, R>, err: unknown): void {
    const { operation } = running
    // A logout that did not happen must not look like one: destroy never fails open.
    if (this.#options.failOpen && operation !== 'destroy' && isServerFailure(err)) {
      this.#options.log.report('memcached', `${(err as Error).message}; ${FAIL_OPEN_CONSEQUENCE[operation]} (failOpen)`)
      running.handOver(running.spec.fallback)
    } else running.handOverError(err)
  }

  succeeded<T, R>(running: Running<T, R>, value: T): void {
    this.#options.log.recovered('memcached')
    if (running.trace && running.write) running.trace.write = running.write
    running.handOver(value)
  }

  /** Counts and traces an operation as handed over (error, or value). */
  observed(running: Running<unknown, unknown>, err: unknown, value?: unknown): void {
    this.#record(running.operation, running.startedAt, running.trace, err, value)
  }

  /** An operation that turned out to need no request (a touch the read already made): counted, traced, handed over at once. */
  nothingToDo(operation: Operation, sid: string, callback: Callback<void> | undefined): Promise<void> {
    const startedAt = performance.now()
    const trace = operationChannel.hasSubscribers ? startTrace(this.#trace(operation, sid)) : undefined
    this.#record(operation, startedAt, trace, undefined)
    if (callback) process.nextTick(callback, null)
    return DONE
  }

  /** A listing (all, ids, length, clear): counted and traced like the other operations, on every server. */
  list<T>(operation: Operation, servers: string, callback: Callback<T> | undefined, work: () => Promise<T>): Promise<T> {
    const startedAt = performance.now()
    const trace = operationChannel.hasSubscribers ? startTrace({ operation, server: servers, session: undefined }) : undefined
    return settle(work(), callback, undefined, (err) => this.#record(operation, startedAt, trace, err))
  }

  /** The counters and the trace of a settled operation; for `get`, whether it found a session. */
  #record(operation: Operation, startedAt: number, trace: OperationTrace | undefined, err: unknown, value?: unknown): void {
    const hit = operation === 'get' && err === undefined ? value !== null : undefined
    this.#options.counters.record(operation, startedAt, err, hit)
    if (trace) finishTrace(trace, err, hit)
  }

  #trace(operation: Operation, sid: unknown): OperationTrace {
    const valid = typeof sid === 'string' && sid !== ''
    return {
      operation,
      server: valid ? this.#options.addressFor(this.#options.prefix + sid) : '',
      session: valid ? redactId(sid) : undefined,
    }
  }

  /** Refuses new operations and cancels lock waits; resolves once the operations already running have settled. */
  close(): Promise<void> {
    this.#closed = true
    this.#locks.cancelWaiters()
    return this.#running.whenEmpty()
  }

  #timeoutError(running: OperationContext): MemcacheStoreError {
    const { operation, subject, sent, key } = running
    const ms = this.#options.timeoutMs
    const server = this.#options.addressFor(key)
    if (!running.locked) {
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
 * One operation in flight: its context (what its work and the memcached layer see), its place in
 * the session's lock queue and among the deadlines, and the hand-over of its outcome to the caller.
 */
class Running<T, R> implements OperationContext, LockWaiter, Deadlined<Running<unknown, unknown>> {
  readonly operation: Operation
  readonly key: string
  readonly sid: string
  readonly deadline: number
  readonly spec: OperationSpec<T, R>
  readonly trace: OperationTrace | undefined
  readonly startedAt: number
  sent = false
  locked = false
  write: WriteKind | undefined = undefined
  extendedUntil = 0
  extendedFor = 0
  pending = false
  earlier: Running<unknown, unknown> | undefined = undefined
  later: Running<unknown, unknown> | undefined = undefined
  readonly #runner: OperationRunner
  #resolve: ((value: R) => void) | undefined
  #reject: ((err: unknown) => void) | undefined
  #subject: string | undefined = undefined

  constructor(
    runner: OperationRunner,
    spec: OperationSpec<T, R>,
    key: string,
    sid: string,
    trace: OperationTrace | undefined,
    startedAt: number,
    resolve: (value: R) => void,
    reject: (err: unknown) => void,
  ) {
    const internal = spec.internal === true
    this.#runner = runner
    this.spec = spec
    this.operation = spec.operation
    this.key = key
    this.sid = sid
    this.trace = trace
    this.startedAt = startedAt
    // An internal operation is not timed for the counters: its start is read here.
    this.deadline = (internal ? performance.now() : startedAt) + runner.timeoutMs
    this.#resolve = resolve
    this.#reject = reject
  }

  /** The session as messages name it; built only when a message needs it (failures, debug lines). */
  get subject(): string {
    this.#subject ??= `session ${redactId(this.sid)}`
    return this.#subject
  }

  turn(): void {
    this.#runner.turn(this)
  }

  cancelled(): void {
    this.#runner.cancelled(this)
  }

  fail(err: unknown): void {
    this.#runner.failed(this, err)
  }

  succeed(value: T): void {
    this.#runner.succeeded(this, value)
  }

  /**
   * Hands a result to express-session's callback (outside the promise chain, next tick) or to the
   * caller's await, through `finish`; what `finish` throws goes to the callback (or rejects).
   */
  handOver(value: T): void {
    const { finish, callback } = this.spec
    let out: R
    try {
      out = finish ? finish(value, this) : (value as unknown as R)
    } catch (err) {
      this.handOverError(err)
      return
    }
    if (this.spec.internal !== true) this.#runner.observed(this as Running<unknown, unknown>, undefined, out)
    const resolve = this.#resolve
    this.#letGo()
    if (callback) process.nextTick(callback, null, out)
    resolve?.(out)
  }

  /** With a callback the error goes to it and the caller's promise resolves (undefined); without, the promise rejects. */
  handOverError(err: unknown): void {
    if (this.spec.internal !== true) this.#runner.observed(this as Running<unknown, unknown>, err)
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
   * Drops the caller's promise once it is settled. This object can stay reachable for a while after
   * the operation ended (the connection's request and promise reactions refer to it); through the
   * promise it would keep the session it resolved with alive across young-generation collections,
   * which then promote it to the old space (see bench/README.md, "Per-operation overhead").
   */
  #letGo(): void {
    this.#resolve = undefined
    this.#reject = undefined
  }
}

/** How messages name a session: a shortened ID, never the whole one. */
export function describeSession(sid: unknown): string {
  return typeof sid === 'string' && sid !== '' ? `session ${redactId(sid)}` : 'a session'
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
 * await, through `finish` when given; what `finish` throws (a user's logger, say) goes to the
 * callback. `observe` sees the outcome as handed over (error, or value).
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
