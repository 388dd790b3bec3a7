import { Mutex } from 'async-mutex'

/**
 * One lock per key, created on first use and dropped when its last user leaves, so the table never
 * holds more entries than there are keys in use. Waiters run in arrival order.
 */
export class KeyedLocks {
  readonly #locks = new Map<string, { mutex: Mutex; users: number }>()

  /** Keys currently locked or waited for. */
  get size(): number {
    return this.#locks.size
  }

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    let entry = this.#locks.get(key)
    if (entry === undefined) {
      entry = { mutex: new Mutex(), users: 0 }
      this.#locks.set(key, entry)
    }
    entry.users++
    try {
      return await entry.mutex.runExclusive(work)
    } finally {
      if (--entry.users === 0) this.#locks.delete(key)
    }
  }
}
