/** Sessions remembered per generation; beyond it a generation ends early, so memory stays bounded. */
export const MAX_REMEMBERED_PER_GENERATION = 20_000

/**
 * The sessions this process wrote or touched recently, for `touchAfter`. Two generations of at most
 * `maxPerGeneration` keys each: the current one fills up, and once it is `windowMs` old (or full)
 * it replaces the previous one, which is dropped whole. A session forgotten early is simply touched
 * again, the safe direction.
 */
export class RecentTouches {
  readonly #windowMs: number
  readonly #maxPerGeneration: number
  #current = new Map<string, number>()
  #previous = new Map<string, number>()
  #generationStart: number

  constructor(windowMs: number, maxPerGeneration = MAX_REMEMBERED_PER_GENERATION, now = performance.now()) {
    this.#windowMs = windowMs
    this.#maxPerGeneration = maxPerGeneration
    this.#generationStart = now
  }

  /** Keys remembered, at most twice `maxPerGeneration`. */
  get size(): number {
    return this.#current.size + this.#previous.size
  }

  /** True when `key` was written or touched less than the window ago. */
  isRecent(key: string, now = performance.now()): boolean {
    const at = this.#current.get(key) ?? this.#previous.get(key)
    return at !== undefined && now - at < this.#windowMs
  }

  record(key: string, now = performance.now()): void {
    if (now - this.#generationStart >= this.#windowMs || this.#current.size >= this.#maxPerGeneration) {
      this.#previous = this.#current
      this.#current = new Map()
      this.#generationStart = now
    }
    this.#current.delete(key)
    this.#current.set(key, now)
  }

  forget(key: string): void {
    this.#current.delete(key)
    this.#previous.delete(key)
  }
}
