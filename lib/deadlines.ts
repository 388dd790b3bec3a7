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
 * Deadlines of operations in flight, in deadline order, with one timer for the earliest. Operations
 * all get the same timeout, so a new one goes to the end of the list at once (constant time however
 * many are in flight); an item with an earlier deadline than the newest (a replicated request's
 * patience, counted from its operation's start) is walked back into place. The list runs through the
 * items themselves: a long-lived Map would keep finished operations reachable after its rehashes
 * (docs/internals.md).
 */
export class Deadlines<T extends Deadlined<T>> {
  readonly #timeoutMs: number
  readonly #onExpired: (item: T) => void
  #oldest: T | undefined
  #newest: T | undefined
  #size = 0
  #timer: NodeJS.Timeout | undefined
  /** When `#timer` fires (performance.now() time). */
  #timerAt = Number.POSITIVE_INFINITY
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
    let before = this.#newest
    while (before !== undefined && before.deadline > item.deadline) before = before.earlier
    item.earlier = before
    item.later = before === undefined ? this.#oldest : before.later
    if (before === undefined) this.#oldest = item
    else before.later = item
    if (item.later === undefined) this.#newest = item
    else item.later.earlier = item
    this.#size++
    if (this.#timer === undefined) {
      this.#timerAt = performance.now() + this.#timeoutMs
      this.#timer = setTimeout(this.#fire, this.#timeoutMs)
    } else if (item.deadline < this.#timerAt) {
      clearTimeout(this.#timer)
      this.#timerAt = item.deadline
      this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(item.deadline - performance.now())))
    }
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
    this.#timerAt = Number.POSITIVE_INFINITY
    const now = performance.now()
    for (let item = this.#oldest; item !== undefined; item = this.#oldest) {
      if (item.deadline > now) {
        this.#timerAt = item.deadline
        this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(item.deadline - now)))
        return
      }
      this.#unlink(item)
      this.#onExpired(item)
    }
    if (this.#size === 0 && this.#onEmpty) this.#emptied()
  }
}
