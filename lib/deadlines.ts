/**
 * Deadlines of operations in flight, each carried by the item itself (`deadline`, a
 * performance.now() time). Every operation gets the same timeout, so deadlines expire in the order
 * operations began: one timer for the oldest is enough, however many are in flight.
 */
export class Deadlines<T extends { readonly deadline: number }> {
  readonly #entries = new Map<number, T>()
  readonly #timeoutMs: number
  readonly #onExpired: (item: T) => void
  #timer: NodeJS.Timeout | undefined
  #onEmpty: (() => void) | undefined

  constructor(timeoutMs: number, onExpired: (item: T) => void) {
    this.#timeoutMs = timeoutMs
    this.#onExpired = onExpired
  }

  get size(): number {
    return this.#entries.size
  }

  add(id: number, item: T): void {
    this.#entries.set(id, item)
    this.#timer ??= setTimeout(this.#fire, this.#timeoutMs)
  }

  has(id: number): boolean {
    return this.#entries.has(id)
  }

  /** Forgets an item; true when it was still pending. */
  delete(id: number): boolean {
    if (!this.#entries.delete(id)) return false
    if (this.#entries.size === 0 && this.#onEmpty) this.#emptied()
    return true
  }

  values(): IterableIterator<T> {
    return this.#entries.values()
  }

  /** Resolves once nothing is pending (at once when nothing is). */
  whenEmpty(): Promise<void> {
    if (this.#entries.size === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const previous = this.#onEmpty
      this.#onEmpty = () => {
        previous?.()
        resolve()
      }
    })
  }

  #emptied(): void {
    const onEmpty = this.#onEmpty
    this.#onEmpty = undefined
    onEmpty?.()
  }

  // Runs after this turn's I/O callbacks (setImmediate): when the event loop was blocked, replies
  // that arrived meanwhile are read before any operation is declared late.
  #fire = (): void => {
    setImmediate(this.#sweep)
  }

  #sweep = (): void => {
    this.#timer = undefined
    const now = performance.now()
    for (const [id, item] of this.#entries) {
      if (item.deadline > now) {
        this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(item.deadline - now)))
        return
      }
      this.#entries.delete(id)
      this.#onExpired(item)
    }
    if (this.#entries.size === 0 && this.#onEmpty) this.#emptied()
  }
}
