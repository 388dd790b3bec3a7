// Wall-clock bounds that a loaded machine cannot break by accident: a bound is the timeout under
// test plus a fixed slack plus the worst event-loop delay this process saw while it was measured
// (a descheduled or busy process fires every timer, the store's own deadline timer included, late
// by that much). A store that ignores its timeout still fails: it overruns by far more.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { sleep } from './memcached.ts'

/** What a settle may add to the timeout on an idle machine: the sweep's setImmediate, the promise chain, the test's own turns. */
export const SETTLE_SLACK_MS = 250

/** The time an operation may take to settle, for operations started after the budget was made. */
export class SettleBudget {
  readonly #histogram = monitorEventLoopDelay({ resolution: 10 })
  readonly timeoutMs: number
  #limit: number | undefined

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs
    this.#histogram.enable()
  }

  /** The worst event-loop delay seen so far, in ms. */
  get loopDelayMs(): number {
    return this.#histogram.max / 1e6
  }

  /** timeout + SETTLE_SLACK_MS + the worst event-loop delay; fixed (and monitoring stopped) at the first read. */
  get limitMs(): number {
    if (this.#limit === undefined) {
      this.#histogram.disable()
      this.#limit = this.timeoutMs + SETTLE_SLACK_MS + this.loopDelayMs
    }
    return this.#limit
  }

  /** A message for an assertion: the measured time against the bound and what it is made of. */
  describe(ms: number): string {
    const limit = this.limitMs
    return `settled after ${ms.toFixed(0)} ms; bound ${limit.toFixed(0)} ms = timeout ${this.timeoutMs} + slack ${SETTLE_SLACK_MS} + worst event-loop delay ${this.loopDelayMs.toFixed(0)}`
  }
}

/** Polls `check` until it holds; fails after `withinMs` (generous: only a broken store takes that long). */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, withinMs = 5000): Promise<void> {
  const deadline = performance.now() + withinMs
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`)
    await sleep(10)
  }
}

/**
 * Blocks the event loop for `ms` with a busy loop, as a CPU-bound request or a long GC pause would:
 * no timer, I/O callback or promise reaction runs meanwhile, and replies pile up in the socket.
 */
export function blockEventLoop(ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // the event loop is busy elsewhere
  }
}
