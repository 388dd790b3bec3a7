import { Mutex } from 'async-mutex'

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
   * Calls `onTurn` once the lock of `key` is this caller's: at once when it is free. Each turn must
   * end with `release`. `onCancelled` is called instead when `cancelWaiters` ends the wait.
   */
  acquire(key: string, onTurn: () => void, onCancelled: (err: unknown) => void): void {
    const entry = this.#held.get(key)
    if (entry === undefined) {
      this.#held.set(key, null)
      onTurn()
      return
    }
    let mutex = entry
    if (mutex === null) {
      mutex = new Mutex()
      // The holder took the lock before the mutex existed: lock it on the holder's behalf (an
      // async-mutex acquire of a free mutex locks synchronously; its release is `mutex.release()`).
      void mutex.acquire()
      this.#held.set(key, mutex)
    }
    mutex.acquire().then(onTurn, onCancelled)
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
