import type { Socket } from 'node:net'

/**
 * Corks a socket until the end of this event-loop iteration (setImmediate), so that the requests
 * made while handling one batch of responses leave in one write (one writev) instead of one
 * syscall each. setImmediate runs right after the current I/O phase (and keeps the event loop
 * from blocking in poll meanwhile), so a request waits microseconds at most.
 */
export class WriteBatcher {
  readonly #corked = new Set<Socket>()

  hold(socket: Socket): void {
    if (this.#corked.has(socket)) return
    if (this.#corked.size === 0) setImmediate(this.#release)
    socket.cork()
    this.#corked.add(socket)
  }

  #release = (): void => {
    for (const socket of this.#corked) socket.uncork()
    this.#corked.clear()
  }
}
