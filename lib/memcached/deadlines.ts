/**
 * Deadlines of in-flight requests. Every request gets the same timeout, so deadlines expire in the
 * order requests were made: one timer for the oldest is enough, however many are in flight.
 */
export class Deadlines<T> {
  readonly #entries = new Map<number, { at: number; item: T }>()
  readonly #timeoutMs: number
  readonly #onExpired: (id: number, item: T) => void
  #timer: NodeJS.Timeout | undefined

  constructor(timeoutMs: number, onExpired: (id: number, item: T) => void) {
    this.#timeoutMs = timeoutMs
    this.#onExpired = onExpired
  }

  get size(): number {
    return this.#entries.size
  }

  add(id: number, item: T): void {
    this.#entries.delete(id)
    this.#entries.set(id, { at: performance.now() + this.#timeoutMs, item })
    this.#timer ??= setTimeout(this.#fire, this.#timeoutMs)
  }

  /** Removes a request and returns it, if it was still pending. */
  take(id: number): T | undefined {
    const entry = this.#entries.get(id)
    if (entry === undefined) return undefined
    this.#entries.delete(id)
    return entry.item
  }

  /** Forgets a request; true when it was still pending. */
  delete(id: number): boolean {
    return this.#entries.delete(id)
  }

  items(): IterableIterator<[number, { at: number; item: T }]> {
    return this.#entries.entries()
  }

  clear(): void {
    this.#entries.clear()
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  // Runs after this turn's I/O callbacks (setImmediate): when the event loop was blocked, responses
  // that arrived meanwhile are read before any request is declared late.
  #fire = (): void => {
    setImmediate(this.#sweep)
  }

  #sweep = (): void => {
    this.#timer = undefined
    const now = performance.now()
    for (const [id, entry] of this.#entries) {
      if (entry.at > now) {
        this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(entry.at - now)))
        return
      }
      this.#entries.delete(id)
      this.#onExpired(id, entry.item)
    }
  }
}
