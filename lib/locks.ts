/**
 * One lock per key, held while a store operation on that session runs. A key's entry exists only
 * while the lock is held or waited for (its waiters, in arrival order), so the table never holds more
 * entries than there are sessions in use. An uncontended lock costs one Map entry and no promise.
 */
export class KeyedLocks {
  readonly #waiters = new Map<string, Array<() => void>>()

  /** Keys currently locked or waited for. */
  get size(): number {
    return this.#waiters.size
  }

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const queue = this.#waiters.get(key)
    if (queue === undefined) this.#waiters.set(key, [])
    else await new Promise<void>((resolve) => queue.push(resolve))
    try {
      return await work()
    } finally {
      // Hand the lock straight to the next waiter, or free the key.
      const next = this.#waiters.get(key)?.shift()
      if (next) next()
      else this.#waiters.delete(key)
    }
  }
}
