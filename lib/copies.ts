// Versioned copies of a session on several servers (`replicas`): what each copy holds, how the
// newest is chosen, and how one request per copy is sent and gathered within the operation's time.
import type { Deadlined, Deadlines } from './deadlines.js'
import type { Item, Receiver, Reply, Server } from './memcached/index.js'
import { isMarker } from './reservations.js'

/**
 * A replicated value: [0x1e][kind][version, 8 bytes][payload]. 0x1e (record separator) starts no
 * serialized session (text), no encrypted one (0x01, 0x02) and no placeholder (0x00), so values
 * written before replicas were on read as sessions of version 0.
 */
const MARK = 0x1e
const HEADER_BYTES = 10
const SESSION = 0x53 // S
const TOMBSTONE = 0x54 // T

export type CopyKind = 'session' | 'tombstone' | 'placeholder'

/** What one copy holds, once read. */
export interface Copy {
  kind: CopyKind
  version: number
  /** The session's bytes as the codec reads them (serialized, encrypted or not); empty for the others. */
  payload: Buffer
}

/** The bytes of a replicated session copy. */
export function sessionValue(version: number, payload: Buffer): Buffer {
  const value = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  writeHeader(value, SESSION, version)
  payload.copy(value, HEADER_BYTES)
  return value
}

/**
 * A tombstone: what `destroy` leaves under a replicated session's key, so that a copy that missed
 * the logout never wins over it (a tombstone beats any session, whatever the versions).
 */
export function tombstoneValue(version: number): Buffer {
  const value = Buffer.allocUnsafe(HEADER_BYTES)
  writeHeader(value, TOMBSTONE, version)
  return value
}

function writeHeader(value: Buffer, kind: number, version: number): void {
  value[0] = MARK
  value[1] = kind
  value.writeUInt32BE(Math.floor(version / 2 ** 32), 2)
  value.writeUInt32BE(version >>> 0, 6)
}

/** Whether a value is a tombstone. */
export function isTombstone(value: Buffer): boolean {
  return value.length >= HEADER_BYTES && value[0] === MARK && value[1] === TOMBSTONE
}

/** Whether a value is a replicated copy (a session's or a tombstone), read by `readCopy`. */
export function isCopy(value: Buffer): boolean {
  return value.length >= HEADER_BYTES && value[0] === MARK && (value[1] === SESSION || value[1] === TOMBSTONE)
}

/** What a stored value is: a replicated copy, a placeholder, or a value from before replicas (a session of version 0). */
export function readCopy(value: Buffer): Copy {
  if (isMarker(value)) return { kind: 'placeholder', version: 0, payload: EMPTY }
  if (value.length < HEADER_BYTES || value[0] !== MARK || (value[1] !== SESSION && value[1] !== TOMBSTONE)) {
    return { kind: 'session', version: 0, payload: value }
  }
  const version = value.readUInt32BE(2) * 2 ** 32 + value.readUInt32BE(6)
  return value[1] === TOMBSTONE
    ? { kind: 'tombstone', version, payload: EMPTY }
    : { kind: 'session', version, payload: value.subarray(HEADER_BYTES) }
}

const EMPTY = Buffer.alloc(0)

/**
 * The version of a write: after `read` (the version it is based on) for a save, the clock's for a
 * new session, an upsert or a tombstone. Milliseconds times 1024 (room for 1023 writes of one session
 * in one millisecond) stay below 2^53 until the year 2248; a save is its base plus one.
 */
export function nextVersion(read?: number): number {
  const clock = Date.now() * 1024
  return read === undefined ? clock : Math.max(read + 1, 1)
}

/** Whether copy `a` wins over copy `b`: a tombstone over anything, else the higher version. */
export function newer(a: Copy, b: Copy): boolean {
  if (a.kind === 'tombstone' || b.kind === 'tombstone') return a.kind === 'tombstone' && (b.kind !== 'tombstone' || a.version > b.version)
  if (a.kind === 'placeholder' || b.kind === 'placeholder') return b.kind === 'placeholder' && a.kind !== 'placeholder'
  return a.version > b.version
}

/**
 * How long, at least, the other copies are waited for once one has given a settling answer (twice
 * the time that answer took, when longer): copies on healthy servers answer within a round trip of
 * each other.
 */
const GRACE_MIN_MS = 25

/** One copy's part in a replicated request: which server, and how its request ended. */
export interface CopyOutcome<T> {
  server: Server
  /** settled: answered (`value`) or failed (`error`); neither: still unanswered when patience ran out. */
  settled: boolean
  value?: T
  error?: Error
}

/**
 * One request per copy, sent at once; resolves when every copy has answered or failed, or when the
 * operation's patience runs out (a little before its deadline), with whatever came back by then.
 * A copy on a server known to be down is refused at once; one being probed after a failure is not
 * waited for while another copy's server is up.
 */
export class Fanout<T> implements Deadlined<Fanout<T>> {
  deadline: number
  readonly outcomes: CopyOutcome<T>[]
  pending = false
  earlier: Fanout<T> | undefined = undefined
  later: Fanout<T> | undefined = undefined
  #remaining: number
  #answered = false
  readonly #startedAt = performance.now()
  #resolve: ((outcomes: CopyOutcome<T>[]) => void) | undefined = undefined
  readonly #patience: Deadlines<Fanout<unknown>>
  readonly #settles: (value: T) => boolean

  /**
   * `settles`: whether an answer is enough to give the other copies only a grace. A read's answer
   * is not, unless it is a tombstone: a miss may come from a server restarted empty (it answers
   * first of all), and a session from the copy that missed a logout or a save.
   */
  constructor(
    servers: readonly Server[],
    patience: Deadlines<Fanout<unknown>>,
    deadline: number,
    settles: (value: T) => boolean = () => true,
  ) {
    this.deadline = deadline
    this.outcomes = servers.map((server) => ({ server, settled: false }))
    this.#remaining = servers.length
    this.#patience = patience
    this.#settles = settles
  }

  /** Sends `request` to every copy's server; resolves with the outcomes. */
  run(request: (server: Server, receiver: Receiver<T>, patience: 'wait' | 'refuse') => void): Promise<CopyOutcome<T>[]> {
    const promise = new Promise<CopyOutcome<T>[]>((resolve) => {
      this.#resolve = resolve
    })
    this.#patience.add(this as Fanout<unknown>)
    const anyUp = this.outcomes.filter((outcome) => outcome.server.up).length
    this.outcomes.forEach((outcome, i) => {
      const otherUp = anyUp - (outcome.server.up ? 1 : 0) > 0
      request(
        outcome.server,
        {
          resolved: (value) => this.#settle(i, value, undefined),
          rejected: (error) => this.#settle(i, undefined, error),
        },
        otherUp ? 'refuse' : 'wait',
      )
    })
    return promise
  }

  /** Patience ran out (the list took it off): resolve with what there is. */
  expired(): void {
    this.#finish()
  }

  #settle(index: number, value: T | undefined, error: Error | undefined): void {
    const outcome = this.outcomes[index]
    if (outcome.settled || this.#resolve === undefined) return
    outcome.settled = true
    if (error === undefined) outcome.value = value
    else outcome.error = error
    if (--this.#remaining === 0) {
      if (this.#patience.delete(this as Fanout<unknown>)) this.#finish()
    } else if (error === undefined && !this.#answered && this.#settles(value as T)) {
      // The first settling answer: the other copies get a short grace, not the whole patience. A copy that
      // is still silent then is on a server frozen or overloaded, and its connection's own timeout
      // will find it out; the operation goes on with the copies that answered.
      this.#answered = true
      const now = performance.now()
      const graceEnd = now + Math.max(GRACE_MIN_MS, 2 * (now - this.#startedAt))
      if (graceEnd < this.deadline && this.#patience.delete(this as Fanout<unknown>)) {
        this.deadline = graceEnd
        this.#patience.add(this as Fanout<unknown>)
      }
    }
  }

  #finish(): void {
    const resolve = this.#resolve
    this.#resolve = undefined
    resolve?.(this.outcomes)
  }
}

/** The outcomes of the copies that answered (a value, or a miss), not of those that failed or stayed silent. */
export function answered<T>(outcomes: CopyOutcome<T>[]): Array<CopyOutcome<T> & { value: T }> {
  return outcomes.filter((outcome) => outcome.settled && outcome.error === undefined) as Array<CopyOutcome<T> & { value: T }>
}

export type { Item, Reply }
