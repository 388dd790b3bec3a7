type Waiters = Array<() => void>

/** The entry of a key locked with nobody waiting: shared, never written to. */
const NO_WAITERS: Waiters = Object.freeze([]) as unknown as Waiters

/**
 * One lock per key, held while a store operation on that session runs. A key's entry exists only
 * while the lock is held or waited for (its waiters, in arrival order), so the table never holds more
 * entries than there are sessions in use. Taking a free lock costs one Map entry: no promise, no
 * allocation (every store operation takes one).
 */
export class KeyedLocks {
  readonly #waiters = new Map<string, Waiters>()

  /** Keys currently locked or waited for. */
  get size(): number {
    return this.#waiters.size
  }

  /** Calls `onTurn` once the lock of `key` is this caller's: at once when it is free. Each turn must end with `release`. */
  acquire(key: string, onTurn: () => void): void {
    const queue = this.#waiters.get(key)
    if (queue === undefined) {
      this.#waiters.set(key, NO_WAITERS)
      onTurn()
    } else if (queue === NO_WAITERS) this.#waiters.set(key, [onTurn])
    else queue.push(onTurn)
  }

  /** Hands the lock of `key` straight to its next waiter, or frees the key. */
  release(key: string): void {
    const waiting = this.#waiters.get(key)
    if (waiting === undefined) return
    // NO_WAITERS is frozen: shift() would throw on it even though it is empty.
    if (waiting.length > 0) (waiting.shift() as () => void)()
    else this.#waiters.delete(key)
  }
}
