import { Mutex } from 'async-mutex'

/** Who waits for a lock: told when it is theirs, or that the wait was cancelled. */
export interface LockWaiter {
  turn(): void
  cancelled(err: unknown): void
}

/**
 * One lock per session key, held while a store operation on that session runs, so that operations
 * on one session never interleave inside this process. An uncontended lock costs one Map entry and
 * no allocation (every store operation takes one); an async-mutex Mutex is created only when a
 * second operation arrives for a busy session, and dropped once nobody holds or waits for it.
 */
export class SessionLocks {
  /** null: held, nobody waiting. */
  readonly #held = new Map<string, Mutex | null>()

  /** Sessions locked or waited for. */
  get size(): number {
    return this.#held.size
  }

  /**
   * Takes the lock of `key`: true when it was free (the caller holds it now), else false and
   * `waiter.turn()` is called once the lock is the waiter's. Each hold must end with `release`.
   * `waiter.cancelled()` is called instead of `turn` when `cancelWaiters` ends the wait.
   */
  acquire(key: string, waiter: LockWaiter): boolean {
    const entry = this.#held.get(key)
    if (entry === undefined) {
      this.#held.set(key, null)
      return true
    }
    let mutex = entry
    if (mutex === null) {
      mutex = new Mutex()
      // The holder took the lock before the mutex existed: lock it on the holder's behalf (an
      // async-mutex acquire of a free mutex locks synchronously; its release is `mutex.release()`).
      void mutex.acquire()
      this.#held.set(key, mutex)
    }
    mutex.acquire().then(
      () => waiter.turn(),
      (err: unknown) => waiter.cancelled(err),
    )
    return false
  }

  /** Passes the lock of `key` to its next waiter, or frees it. */
  release(key: string): void {
    const entry = this.#held.get(key)
    if (entry === undefined) return
    if (entry === null) {
      this.#held.delete(key)
      return
    }
    entry.release()
    if (!entry.isLocked()) this.#held.delete(key)
  }

  /** Ends every wait with async-mutex's cancellation error (the store is closing). */
  cancelWaiters(): void {
    for (const entry of this.#held.values()) entry?.cancel()
  }
}
