import { Deadlines } from './deadlines.js'
import { isServerFailure, MemcacheStoreError, type Operation, redactId } from './errors.js'
import { sessionKey } from './keys.js'
import { SessionLocks } from './locks.js'
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
  /** Turns the work's result into what the caller gets, in the step that hands it over. */
  finish?(value: T): R
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

interface Running extends OperationContext {
  fail(err: MemcacheStoreError): void
}

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
  readonly #running: Deadlines<Running>
  #nextId = 0
  #closed = false

  constructor(options: RunnerOptions) {
    this.#options = options
    this.#running = new Deadlines(options.timeoutMs, (running) => running.fail(this.#timeoutError(running)))
  }

  get inFlight(): number {
    return this.#running.size
  }

  get lockedSessions(): number {
    return this.#locks.size
  }

  run<T, R = T>(spec: OperationSpec<T, R>): Promise<R> {
    if (spec.internal) return settle(this.#attempt(spec, undefined), spec.callback, spec.finish)
    const startedAt = performance.now()
    const trace = operationChannel.hasSubscribers ? this.#trace(spec.operation, spec.sid) : undefined
    if (trace) {
      operationChannel.start.publish(trace)
      operationChannel.end.publish(trace)
    }
    const { operation, finish } = spec
    return settle(this.#attempt(spec, trace), spec.callback, finish, (err, value) => {
      const hit = operation === 'get' && err === undefined ? value !== null : undefined
      this.#options.counters.record(operation, startedAt, err, hit)
      if (trace) finishTrace(trace, err, hit)
    })
  }

  /** A listing (all, ids, length, clear): counted and traced like the other operations, on every server. */
  list<T>(operation: Operation, servers: string, callback: Callback<T> | undefined, work: () => Promise<T>): Promise<T> {
    const startedAt = performance.now()
    const trace: OperationTrace | undefined = operationChannel.hasSubscribers
      ? { operation, server: servers, session: undefined }
      : undefined
    if (trace) {
      operationChannel.start.publish(trace)
      operationChannel.end.publish(trace)
    }
    return settle(work(), callback, undefined, (err) => {
      this.#options.counters.record(operation, startedAt, err)
      if (trace) finishTrace(trace, err, undefined)
    })
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

  #attempt<T, R>(spec: OperationSpec<T, R>, trace: OperationTrace | undefined): Promise<T> {
    const { operation, sid } = spec
    if (this.#closed) {
      const subject = describeSession(sid)
      return Promise.reject(
        new MemcacheStoreError('ECLOSED', operation, `${operation} of ${subject} refused: the store was closed; nothing was sent`, {
          session: subject,
          reason: 'the store was closed',
        }),
      )
    }
    let key: string
    try {
      key = sessionKey(this.#options.prefix, sid, operation)
    } catch (err) {
      // No session can be stored under a key memcached refuses.
      return operation === 'get' ? Promise.resolve(spec.fallback) : Promise.reject(err)
    }
    return new Promise<T>((resolve, reject) => {
      const id = ++this.#nextId
      const { failOpen, log } = this.#options
      const succeed = (value: T) => {
        log.recovered('memcached')
        if (trace && running.write) trace.write = running.write
        resolve(value)
      }
      const fail = (err: unknown) => {
        // A logout that did not happen must not look like one: destroy never fails open.
        if (failOpen && operation !== 'destroy' && isServerFailure(err)) {
          log.report('memcached', `${(err as Error).message}; ${FAIL_OPEN_CONSEQUENCE[operation]} (failOpen)`)
          resolve(spec.fallback)
        } else reject(err)
      }
      const running: Running = {
        operation,
        subject: `session ${redactId(sid as string)}`,
        key,
        sid: sid as string,
        deadline: performance.now() + this.#options.timeoutMs,
        sent: false,
        locked: false,
        fail,
      }
      this.#running.add(id, running)
      this.#locks.acquire(
        key,
        () => {
          // Timed out while waiting: the work must never run. The deadline may have passed with its
          // sweep still to come (a blocked event loop): the waiter then fails here, the same way.
          if (!this.#running.has(id)) return this.#locks.release(key)
          if (performance.now() >= running.deadline) {
            this.#running.delete(id)
            this.#locks.release(key)
            return fail(this.#timeoutError(running))
          }
          running.locked = true
          let work: Promise<T>
          try {
            work = spec.work(running)
          } catch (err) {
            work = Promise.reject(err)
          }
          work.then(
            (value) => {
              this.#locks.release(key)
              if (this.#running.delete(id)) succeed(value)
            },
            (err) => {
              this.#locks.release(key)
              if (this.#running.delete(id)) fail(err)
            },
          )
        },
        () => {
          if (!this.#running.delete(id)) return
          const reason = 'the store was closed while it waited for the session'
          reject(
            new MemcacheStoreError('ECLOSED', operation, `${operation} of ${running.subject} abandoned: ${reason}; nothing was sent`, {
              session: running.subject,
              reason,
            }),
          )
        },
      )
    })
  }

  #timeoutError(running: Running): MemcacheStoreError {
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

/** How messages name a session: a shortened ID, never the whole one. */
export function describeSession(sid: unknown): string {
  return typeof sid === 'string' && sid !== '' ? `session ${redactId(sid)}` : 'a session'
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
  if (!callback) {
    if (!finish && !observe) return result as unknown as Promise<R>
    return result.then(
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
  }
  return result.then(
    (value) => {
      let out: R
      try {
        out = finish ? finish(value) : (value as unknown as R)
      } catch (err) {
        observe?.(err)
        process.nextTick(callback, err)
        return undefined as R
      }
      observe?.(undefined, out)
      process.nextTick(callback, null, out)
      return out
    },
    (err) => {
      observe?.(err)
      process.nextTick(callback, err)
      return undefined as R
    },
  )
}
