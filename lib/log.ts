/** Where the store writes what it logs: anything with a `warn` method, such as `console`. */
export interface Logger {
  warn(message: string): void
}

/** A long outage still gets a line this often, so the log shows it is ongoing. */
const REPEAT_AFTER_MS = 60_000

/**
 * Logs the first failure of a burst and stays quiet until an operation succeeds again (or a
 * minute passes), so an outage under load costs one line, not one per request. The logger is the
 * application's code: whatever it throws is swallowed, never passed into an operation.
 */
export class BurstLog {
  readonly #logger: Logger | undefined
  readonly #channels = new Map<string, { loggedAt: number; suppressed: number }>()

  constructor(logger: Logger | undefined) {
    this.#logger = logger
  }

  report(channel: string, message: string): void {
    if (!this.#logger) return
    const now = Date.now()
    const burst = this.#channels.get(channel)
    if (burst && now - burst.loggedAt < REPEAT_AFTER_MS) {
      burst.suppressed++
      return
    }
    const more = burst?.suppressed ? ` (${burst.suppressed} more since the last report)` : ''
    this.#channels.set(channel, { loggedAt: now, suppressed: 0 })
    this.warn(`express-session-memcache: ${message}${more}; similar failures are not logged until one succeeds`)
  }

  /** Ends the burst on a channel: its next failure is logged again. */
  recovered(channel: string): void {
    if (this.#channels.size !== 0) this.#channels.delete(channel)
  }

  /** One line, whatever the logger does with it (a logger that throws loses the line, nothing else). */
  warn(line: string): void {
    try {
      this.#logger?.warn(line)
    } catch {
      // The application's logger failed: there is nowhere left to say so.
    }
  }
}
