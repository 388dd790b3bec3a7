import { Deadlines } from './deadlines.js'
import { isServerFailure, MemcacheStoreError, type Operation, redactId } from './errors.js'
import { sessionKey } from './keys.js'
import { SessionLocks } from './locks.js'
import type { BurstLog } from './log.js'
import type { RequestContext } from './memcached/wire.js'

export type Callback<T> = (err: unknown, value?: T) => void

/** One store operation on one session, as its work and the memcached layer see it. */
export interface OperationContext extends RequestContext {
  readonly key: string
  readonly sid: string
  /** Whether the operation holds the session's lock (false while it waits for it). */
  locked: boolean
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
}

export interface RunnerOptions {
  prefix: string
  timeoutMs: number
  failOpen: boolean
  log: BurstLog
  /** The server a key lives on, for timeout messages. */
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
    return settle(this.#attempt(spec), spec.callback, spec.finish)
  }

  /** Refuses new operations and cancels lock waits; resolves once the operations already running have settled. */
  close(): Promise<void> {
    this.#closed = true
    this.#locks.cancelWaiters()
    return this.#running.whenEmpty()
  }

  #attempt<T, R>(spec: OperationSpec<T, R>): Promise<T> {
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

/**
 * Hands a result to express-session's callback (outside the promise chain) or to the caller's
 * await, through `finish` when given; what `finish` throws (a user's logger, say) goes to the callback.
 */
export function settle<T, R = T>(result: Promise<T>, callback: Callback<R> | undefined, finish?: (value: T) => R): Promise<R> {
  if (!callback) return finish ? result.then(finish) : (result as unknown as Promise<R>)
  return result.then(
    (value) => {
      let out: R
      try {
        out = finish ? finish(value) : (value as unknown as R)
      } catch (err) {
        process.nextTick(callback, err)
        return undefined as R
      }
      process.nextTick(callback, null, out)
      return out
    },
    (err) => {
      process.nextTick(callback, err)
      return undefined as R
    },
  )
}
