/** After a failure, a server is skipped for a back-off that doubles per failed probe, up to this. */
export const BACKOFF_MIN_MS = 50
export const BACKOFF_MAX_MS = 1000

/** `follow`: a probe is in flight; the request may go along with it (its outcome will be the probe's). */
export type Admission = 'go' | 'probe' | 'follow' | 'refuse'

/**
 * One server's circuit breaker. Once a request to the server fails at the connection level, the
 * others are refused at once for a back-off period instead of each paying a timeout; then one request
 * goes through as a probe, and its outcome closes the breaker or doubles the back-off. Requests that
 * arrive while the probe is in flight may follow it rather than fail: when a server comes back, a
 * burst of requests then succeeds with the probe instead of failing beside it.
 */
export class ServerHealth {
  failures = 0
  downUntil = 0
  probing = false
  lastError = ''
  /** Why the last request failed, as an error code: refusals during the back-off repeat it when it is EAUTH. */
  lastCode = ''
  lastFailureAt = 0

  /** `up`: answering; `down`: in back-off; `probing`: one request is testing whether it is back. */
  get state(): 'up' | 'down' | 'probing' {
    return this.failures === 0 ? 'up' : this.probing ? 'probing' : 'down'
  }

  admit(now: number): Admission {
    if (this.failures === 0) return 'go'
    if (now < this.downUntil) return 'refuse'
    if (this.probing) return 'follow'
    this.probing = true
    return 'probe'
  }

  succeeded(): void {
    this.failures = 0
    this.downUntil = 0
    this.probing = false
  }

  /** Records a connection-level failure; failures of one burst (while already down) count once. */
  failed(reason: string, now: number, wasProbe: boolean, code = ''): void {
    this.lastError = reason
    this.lastCode = code
    this.lastFailureAt = now
    if (wasProbe) this.probing = false
    if (now < this.downUntil || (this.probing && !wasProbe)) return
    this.failures++
    this.downUntil = now + Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.failures - 1))
  }
}
