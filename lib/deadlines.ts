/**
 * What Deadlines holds: an item with its deadline (a performance.now() time) and the links that
 * Deadlines keeps in it. Nothing else reads or writes the links.
 */
export interface Deadlined<T> {
  readonly deadline: number
  pending: boolean
  /** The item added before this one (the earlier deadline), and the one added after. */
  earlier: T | undefined
  later: T | undefined
}

/**
 * Deadlines of operations in flight. Every operation gets the same timeout, so deadlines expire in
 * the order operations began: a list in that order, and one timer for the oldest, are enough,
 * however many are in flight. The list runs through the items themselves: a long-lived Map would
 * keep finished operations reachable after its rehashes (docs/internals.md).
 */
export class Deadlines<T extends Deadlined<T>> {
  readonly #timeoutMs: number
  readonly #onExpired: (item: T) => void
  #oldest: T | undefined
  #newest: T | undefined
  #size = 0
  #timer: NodeJS.Timeout | undefined
  #onEmpty: (() => void) | undefined

  constructor(timeoutMs: number, onExpired: (item: T) => void) {
    this.#timeoutMs = timeoutMs
    this.#onExpired = onExpired
  }

  get size(): number {
    return this.#size
  }

  add(item: T): void {
    item.pending = true
    item.earlier = this.#newest
    item.later = undefined
    if (this.#newest === undefined) this.#oldest = item
    else this.#newest.later = item
    this.#newest = item
    this.#size++
    this.#timer ??= setTimeout(this.#fire, this.#timeoutMs)
  }

  has(item: Deadlined<T>): boolean {
    return item.pending
  }

  /** Forgets an item; true when it was still pending. */
  delete(item: Deadlined<T>): boolean {
    if (!item.pending) return false
    this.#unlink(item)
    if (this.#size === 0 && this.#onEmpty) this.#emptied()
    return true
  }

  /** Resolves once nothing is pending (at once when nothing is). */
  whenEmpty(): Promise<void> {
    if (this.#size === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const previous = this.#onEmpty
      this.#onEmpty = () => {
        previous?.()
        resolve()
      }
    })
  }

  #unlink(item: Deadlined<T>): void {
    const { earlier, later } = item
    if (earlier === undefined) this.#oldest = later
    else earlier.later = later
    if (later === undefined) this.#newest = earlier
    else later.earlier = earlier
    item.pending = false
    item.earlier = undefined
    item.later = undefined
    this.#size--
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
    for (let item = this.#oldest; item !== undefined; item = this.#oldest) {
      if (item.deadline > now) {
        this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(item.deadline - now)))
        return
      }
      this.#unlink(item)
      this.#onExpired(item)
    }
    if (this.#size === 0 && this.#onEmpty) this.#emptied()
  }
}
