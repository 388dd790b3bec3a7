// Sessions kept on 1 + `replicas` servers: the key's own server on the ring and the next distinct
// ones. Every copy carries a version; a logout leaves a tombstone, which beats any copy of the
// session. Reads ask every copy at once (one request each), take the newest, and have copies that
// are missing or stale rewritten off the request's path (read repair). Writes go to every copy at
// once, each checked against the CAS this request read from it, so concurrent saves still merge.
import type { SessionData } from 'express-session'
import {
  answered,
  type Copy,
  type CopyOutcome,
  Fanout,
  isTombstone,
  newer,
  nextVersion,
  readCopy,
  sessionValue,
  tombstoneValue,
} from './copies.js'
import { Deadlines } from './deadlines.js'
import { MemcacheStoreError } from './errors.js'
import { type Extension, type Loaded, placeholderReset, type SessionLoader } from './loading.js'
import { type Item, type MemcachedClient, MemcachedError, type Receiver, type Reply, type Server } from './memcached/index.js'
import { type CopiesTrace, type Counters, debug, type WriteKind } from './observability.js'
import type { Origin, Origins } from './origins.js'
import type { OperationContext } from './runner.js'
import { type Encoded, MAX_MERGES, type SessionWriter } from './saving.js'
import { memcachedExpiry, renewedLifetimeSeconds, type TtlOption } from './ttl.js'

/** One request a read leaves to be done on one copy, off the request's path. */
export interface CopyFix {
  /** Which copy (its index among the key's copies). */
  copy: number
  /** `store`: write `value` over the copy (CAS-checked when `cas` is given, else ADD); `delete`: remove it (CAS-checked); `touch`: move its expiry. */
  action: 'store' | 'delete' | 'touch'
  value?: Buffer
  cas?: bigint
  expiry?: number
}

/** Counters of what reads found and fixed, in all and per server. */
export interface ReplicationCounters {
  /** Copies rewritten by read repair (or after a save that lost to a logout). */
  repairs: number
  /** Copies found missing (the server restarted empty, or evicted it). */
  missingCopies: number
  /** Copies found older than the newest (they missed a save or a logout). */
  staleCopies: number
  /** Reads that met a tombstone (a logout) as the newest copy. */
  tombstones: number
  perServer: Record<string, { repairs: number; missingCopies: number; staleCopies: number }>
}

export interface ReplicaOptions {
  client: MemcachedClient
  /** How many copies each session has: 1 + `replicas`. */
  copies: number
  timeoutMs: number
  loader: SessionLoader
  writer: SessionWriter
  origins: Origins
  counters: Counters
  merge: boolean
  ttl: TtlOption
  /** While the server list changes: the previous servers that may hold a key's copies, and a count of sessions moved. */
  migration: { readonly active: boolean; previousCopiesOf(key: string): Server[]; moved(): void }
}

/**
 * The share of an operation's time kept back when it waits for copies that have not answered: what
 * follows their answers (decoding, the operation's settle) must fit in it even on a loaded machine.
 */
const PATIENCE_RESERVE = 1 / 4

export class ReplicatedSessions {
  readonly #options: ReplicaOptions
  readonly #patience: Deadlines<Fanout<unknown>>
  readonly #margin: number
  readonly counts: ReplicationCounters = { repairs: 0, missingCopies: 0, staleCopies: 0, tombstones: 0, perServer: {} }

  constructor(options: ReplicaOptions) {
    this.#options = options
    this.#margin = options.timeoutMs * PATIENCE_RESERVE
    this.#patience = new Deadlines(options.timeoutMs, (fanout) => fanout.expired())
  }

  copiesOf(key: string): Server[] {
    return this.#options.client.copiesOf(key, this.#options.copies)
  }

  /** One request per copy of `op`'s session (or per server of `servers`), gathered within the operation's time. */
  fanout<T>(
    op: OperationContext,
    request: (server: Server, copy: number, receiver: Receiver<T>, patience: 'wait' | 'refuse') => void,
    servers: Server[] = this.copiesOf(op.key),
    settles?: (value: T) => boolean,
  ): Promise<CopyOutcome<T>[]> {
    const fanout = new Fanout<T>(servers, this.#patience as Deadlines<Fanout<unknown>>, op.scope.deadline - this.#margin, settles)
    let copy = 0
    const indexOf = new Map(servers.map((server) => [server, copy++]))
    return fanout.run((server, receiver, patience) => request(server, indexOf.get(server) as number, receiver, patience))
  }

  /**
   * GET (or get-and-touch by `lifetime` seconds) of every copy; fails when none answered. Copies on
   * servers that are up are waited for (within the operation's patience) unless one answered with a
   * tombstone: a miss may come from a server restarted empty, a session from a copy that missed a
   * logout or a save. A save's re-read after a CAS conflict (`forMerge`) gives them only a grace:
   * its writes are CAS-checked on every copy anyway, and it shares the save's time.
   */
  async read(op: OperationContext, lifetime: number | undefined, forMerge = false): Promise<CopyOutcome<Item | undefined>[]> {
    const expiry = lifetime === undefined ? undefined : memcachedExpiry(lifetime)
    const outcomes = await this.fanout<Item | undefined>(
      op,
      (server, _copy, receiver, patience) => {
        if (expiry === undefined) server.get(op.key, op.scope, receiver, patience)
        else server.getAndTouch(op.key, expiry, op.scope, receiver, patience)
      },
      undefined,
      forMerge ? undefined : (item) => item !== undefined && isTombstone(item.value),
    )
    if (answered(outcomes).length === 0) throw noCopyAnswered(outcomes, op)
    if (this.#options.migration.active && outcomes.every((outcome) => outcome.value === undefined) && (await this.#moved(op))) {
      return this.read(op, lifetime, forMerge)
    }
    return outcomes
  }

  /**
   * While the server list changes, a session none of whose copies is where the ring now places it:
   * looked for on the previous servers, and its newest copy moved (ADD on every new copy, so that a
   * newer write or a logout there wins; then the previous copies deleted). True when one was moved.
   */
  async #moved(op: OperationContext): Promise<boolean> {
    const { migration, loader } = this.#options
    const previous = migration.previousCopiesOf(op.key)
    if (previous.length === 0) return false
    const old = await this.fanout<Item | undefined>(
      op,
      (server, _copy, receiver, patience) => server.get(op.key, op.scope, receiver, patience),
      previous,
    )
    let newest: number | undefined
    const copies = old.map((outcome) => (outcome.settled && outcome.value !== undefined ? readCopy(outcome.value.value) : undefined))
    copies.forEach((copy, i) => {
      if (copy !== undefined && (newest === undefined || newer(copy, copies[newest] as Copy))) newest = i
    })
    if (newest === undefined || (copies[newest] as Copy).kind === 'placeholder') return false
    const best = copies[newest] as Copy
    const expiry = best.kind === 'tombstone' ? memcachedExpiry(loader.tombstoneSeconds()) : this.#sessionExpiry(best, op)
    const moved = await this.#store(op, (old[newest].value as Item).value, expiry, () => undefined, 'add')
    await Promise.all(
      old.map((outcome) => (outcome.value ? outcome.server.delete(op.key, op.scope, outcome.value.cas).catch(() => false) : false)),
    )
    if (!moved.some((outcome) => outcome.settled)) return false
    migration.moved()
    debug('migration: %s moved from %s', op.subject, old[newest].server.address)
    return true
  }

  /** The newest copy's payload when it is a session (what `userOf`'s check reads), else undefined. */
  newestSession(outcomes: CopyOutcome<Item | undefined>[]): Buffer | undefined {
    let best: Copy | undefined
    for (const outcome of outcomes) {
      const copy = outcome.settled && outcome.value !== undefined ? readCopy(outcome.value.value) : undefined
      if (copy !== undefined && (best === undefined || newer(copy, best))) best = copy
    }
    return best?.kind === 'session' ? best.payload : undefined
  }

  /**
   * The newest copy as a session (null for a tombstone, a placeholder or nothing), and what the
   * other copies need: a copy that is missing or older is rewritten with the newest's bytes. A
   * session handed out to the application (`carry`) carries its origin through a framework's copy.
   */
  toSession(
    outcomes: CopyOutcome<Item | undefined>[],
    op: OperationContext,
    extension: Extension | undefined,
    carry = false,
  ): Loaded & { fixes: CopyFix[] } {
    const copies = outcomes.map((outcome) => (outcome.settled && outcome.value !== undefined ? readCopy(outcome.value.value) : undefined))
    let newest: number | undefined
    copies.forEach((copy, i) => {
      if (copy !== undefined && (newest === undefined || newer(copy, copies[newest] as Copy))) newest = i
    })
    if (newest === undefined) return { sess: null, followUp: undefined, fixes: [] }
    const best = copies[newest] as Copy
    const bestItem = outcomes[newest].value as Item
    if (best.kind === 'tombstone') {
      this.counts.tombstones++
      debug('replicas: %s is logged out (a tombstone on %s)', op.subject, outcomes[newest].server.address)
    }
    const fixes: CopyFix[] = []
    if (best.kind === 'placeholder' && extension !== undefined) {
      // A reserved ID read before its first save: its placeholders go back to the reservation's lifetime.
      outcomes.forEach((outcome, i) => {
        const reset = outcome.value && placeholderReset(outcome.value.value, extension)
        if (reset?.what === 'touch') fixes.push({ copy: i, action: 'touch', expiry: reset.expiry })
      })
    }
    if (best.kind !== 'placeholder') {
      const expiry = best.kind === 'tombstone' ? memcachedExpiry(this.#options.loader.tombstoneSeconds()) : this.#sessionExpiry(best, op)
      outcomes.forEach((outcome, i) => {
        if (i === newest || !outcome.settled || outcome.error !== undefined) return
        const copy = copies[i]
        if (copy === undefined) {
          this.#count(outcome.server, 'missingCopies')
          debug(
            'replicas: %s has no copy on %s: rewritten from %s',
            op.subject,
            outcome.server.address,
            outcomes[newest as number].server.address,
          )
          fixes.push({ copy: i, action: 'store', value: bestItem.value, expiry })
        } else if (copy.kind !== best.kind || copy.version !== best.version) {
          if (!newer(best, copy)) return
          this.#count(outcome.server, 'staleCopies')
          debug(
            'replicas: %s on %s is older than on %s: rewritten',
            op.subject,
            outcome.server.address,
            outcomes[newest as number].server.address,
          )
          fixes.push({ copy: i, action: 'store', value: bestItem.value, cas: (outcome.value as Item).cas, expiry })
        }
      })
    }
    if (best.kind !== 'session') return { sess: null, followUp: undefined, fixes }
    const loaded = this.#options.loader.toSession(best.payload, bestItem.cas, op, extension, carry, {
      cas: outcomes.map((outcome) => (outcome.settled ? outcome.value?.cas : undefined)),
      version: best.version,
    })
    // The loader's own follow-ups (an expired session deleted, a mis-extended one set back) apply to every copy.
    for (const [i, outcome] of outcomes.entries()) {
      if (loaded.followUp === undefined || !outcome.settled || outcome.value === undefined) continue
      if (loaded.followUp.what === 'delete') fixes.push({ copy: i, action: 'delete', cas: outcome.value.cas })
      else fixes.push({ copy: i, action: 'touch', expiry: loaded.followUp.expiry })
    }
    return { sess: loaded.sess, followUp: undefined, fixes }
  }

  /** The fixes a read left, done as an operation of their own (their failures are logged by the caller). */
  async fix(op: OperationContext, fixes: readonly CopyFix[]): Promise<void> {
    const servers = this.copiesOf(op.key)
    await Promise.all(
      fixes.map(async ({ copy, action, value, cas, expiry }) => {
        const server = servers[copy]
        if (action === 'delete') return server.delete(op.key, op.scope, cas)
        if (action === 'touch') return server.touch(op.key, expiry as number, op.scope)
        this.#options.counters.bytesWritten += (value as Buffer).length
        const stored = await server.store(cas === undefined ? 'add' : 'set', op.key, value as Buffer, expiry as number, op.scope, cas)
        if (stored.status === 'ok') {
          this.#count(server, 'repairs')
          debug('replicas: %s rewritten on %s', op.subject, server.address)
        }
      }),
    )
  }

  /**
   * A new session: ADD on every copy (a CAS write over its own placeholder where `genid` reserved the
   * ID). A copy that already holds the key is a collision: every copy then gets a tombstone (neither
   * holder reads the other's session, and a retried save is refused too) and the save fails.
   */
  async saveNew(
    op: OperationContext,
    sess: object,
    encoded: Encoded,
    reserved?: Array<bigint | undefined>,
  ): Promise<WriteKind | 'collision'> {
    const version = nextVersion()
    const value = sessionValue(version, encoded.value)
    const outcomes = await this.#store(op, value, encoded.expiry, (copy) => reserved?.[copy], 'add')
    const replies = answered(outcomes)
    if (replies.length === 0) throw noCopyAnswered(outcomes, op)
    // A placeholder that expired before the first save (a very slow request) is no collision.
    if (replies.some(({ value }) => value.status === 'exists')) return 'collision'
    const missed = outcomes.flatMap((outcome, i) => (outcome.settled && outcome.value?.status === 'miss' ? [i] : []))
    if (missed.length > 0) await this.#store(op, value, encoded.expiry, () => undefined, 'add', missed)
    this.#options.origins.remember(sess, {
      key: op.key,
      cas: undefined,
      text: encoded.text,
      storedExpiry: encoded.cookieExpiry,
      storedMaxAge: encoded.cookieMaxAge,
      extendedUntil: 0,
      copies: outcomes.map((outcome) => (outcome.value?.status === 'ok' ? outcome.value.cas : undefined)),
      version,
      owner: encoded.owner,
    })
    return 'added'
  }

  /** A tombstone on every copy: what a collision leaves (so that neither holder reads the other's session). */
  async bury(op: OperationContext): Promise<void> {
    const expiry = memcachedExpiry(this.#options.loader.tombstoneSeconds())
    await this.#store(op, tombstoneValue(nextVersion()), expiry, () => undefined, 'set')
  }

  /** SET on every copy, whatever they hold: plain session data that did not come from this store. */
  async upsert(op: OperationContext, encoded: Encoded): Promise<WriteKind> {
    const outcomes = await this.#store(op, sessionValue(nextVersion(), encoded.value), encoded.expiry, () => undefined, 'set')
    if (!outcomes.some((outcome) => outcome.value?.status === 'ok')) throw noCopyAnswered(outcomes, op)
    return 'upserted'
  }

  /**
   * A logout: a tombstone over every copy that holds the session (REPLACE: an ID that was never
   * stored, such as the one express-session's regenerate drops, leaves nothing), living as long as
   * the session could have. It succeeds when a copy took it, or when every copy answered that it
   * holds nothing. When no copy held it but one could not be reached (it may hold the session), the
   * copies that answered get a tombstone anyway, so that the unreachable one cannot win when it is
   * back. A copy that missed the logout is overwritten by the next read that sees both.
   */
  async destroy(op: OperationContext): Promise<void> {
    const expiry = memcachedExpiry(this.#options.loader.tombstoneSeconds())
    const tombstone = tombstoneValue(nextVersion())
    const { migration } = this.#options
    if (migration.active) {
      // While sessions move, the tombstone goes on every new copy (so that a copy still on a previous
      // server is never moved over it), and the previous copies are deleted.
      const [outcomes] = await Promise.all([
        this.#store(op, tombstone, expiry, () => undefined, 'set'),
        ...migration.previousCopiesOf(op.key).map((server) => server.delete(op.key, op.scope).catch(() => false)),
      ])
      if (!outcomes.some((outcome) => outcome.value?.status === 'ok')) throw noCopyAnswered(outcomes, op)
      return
    }
    const outcomes = await this.#store(op, tombstone, expiry, () => undefined, 'replace')
    const replies = answered(outcomes)
    if (replies.some(({ value }) => value.status === 'ok') || replies.length === outcomes.length) return
    const missed = outcomes.flatMap((outcome, i) => (outcome.settled && outcome.value?.status === 'miss' ? [i] : []))
    if (missed.length === 0) throw noCopyAnswered(outcomes, op)
    const stored = await this.#store(op, tombstone, expiry, () => undefined, 'set', missed)
    if (!stored.some((outcome) => outcome.value?.status === 'ok')) throw noCopyAnswered(outcomes, op)
  }

  /** TOUCH of every copy: true when any copy holds the session. */
  async touch(op: OperationContext, expiry: number): Promise<boolean> {
    const outcomes = await this.fanout<boolean>(op, (server, _copy, receiver, patience) =>
      server.touch(op.key, expiry, op.scope, receiver, patience),
    )
    const replies = answered(outcomes)
    if (replies.length === 0) throw noCopyAnswered(outcomes, op)
    return replies.some(({ value }) => value)
  }

  /**
   * A loaded session saved on every copy, each write checked against the CAS this request read from
   * that copy (ADD where the copy was missing). A copy changed meanwhile means another writer: every
   * copy is read again, and the save merges with the newest (or stops at a tombstone: a logout stays
   * final). A session that every answering copy has lost is not re-created.
   */
  async saveLoaded(op: OperationContext, origin: Origin, encoded: Encoded): Promise<WriteKind> {
    const { writer } = this.#options
    let cas = origin.copies ?? []
    let base = origin.version ?? 0
    let payload = encoded.value
    for (let merges = 0; ; merges++) {
      const version = nextVersion(base)
      const value = sessionValue(version, payload)
      const outcomes = await this.#store(op, value, encoded.expiry, (copy) => cas[copy], 'add')
      const replies = answered(outcomes)
      if (replies.length === 0) throw noCopyAnswered(outcomes, op)
      if (!replies.some(({ value: reply }) => reply.status === 'exists')) {
        if (!replies.some(({ value: reply }) => reply.status === 'ok')) {
          // Moved from previous servers meanwhile (the server list changed): merged like another writer's save.
          if (merges < MAX_MERGES && this.#options.migration.active && (await this.#moved(op))) {
            cas = []
            base = 0
            continue
          }
          return 'none'
        }
        origin.copies = outcomes.map((outcome) => (outcome.value?.status === 'ok' ? outcome.value.cas : undefined))
        origin.version = version
        // After a merge the request's own session object lacks the other writer's changes: its next
        // save must merge again rather than overwrite them.
        writer.update(origin, 0n, encoded, merges === 0)
        if (merges > 0) origin.copies = outcomes.map(() => undefined)
        return merges === 0 ? 'cas' : 'merged'
      }
      if (merges === MAX_MERGES) throw writer.conflict(op)
      debug('replicas: %s changed on a copy since this request read it (attempt %d)', op.subject, merges + 1)
      const again = await this.read(op, undefined, true)
      const copies = again.map((outcome) => (outcome.settled && outcome.value !== undefined ? readCopy(outcome.value.value) : undefined))
      let newest: number | undefined
      copies.forEach((copy, i) => {
        if (copy !== undefined && (newest === undefined || newer(copy, copies[newest] as Copy))) newest = i
      })
      const best = newest === undefined ? undefined : (copies[newest] as Copy)
      if (best === undefined || best.kind === 'placeholder') return 'none'
      if (best.kind === 'tombstone') {
        // Logged out meanwhile: copies this save wrote must not outlive the tombstone.
        const tombstone = (again[newest as number].value as Item).value
        const expiry = memcachedExpiry(this.#options.loader.tombstoneSeconds())
        const ours = copies.flatMap((copy, i) => (copy?.kind === 'session' ? [i] : []))
        await this.#store(op, tombstone, expiry, (copy) => again[copy].value?.cas, 'set', ours)
        return 'none'
      }
      cas = again.map((outcome) => (outcome.settled ? outcome.value?.cas : undefined))
      base = best.version
      if (this.#options.merge) {
        const merged = writer.mergedWith(op, origin, encoded, best.payload)
        if (merged === undefined) return 'none'
        payload = merged
      }
    }
  }

  /**
   * Writes `value` to every copy (or those in `only`): a CAS write where `casOf(copy)` gives one,
   * else `mode`. The outcomes of the copies not written are left unsettled.
   */
  #store(
    op: OperationContext,
    value: Buffer,
    expiry: number,
    casOf: (copy: number) => bigint | undefined,
    mode: 'add' | 'set' | 'replace',
    only?: readonly number[],
  ): Promise<CopyOutcome<Reply>[]> {
    return this.fanout<Reply>(op, (server, copy, receiver, patience) => {
      if (only !== undefined && !only.includes(copy)) return receiver.rejected(new Error('not written'))
      this.#options.counters.bytesWritten += value.length
      const cas = casOf(copy)
      server.store(cas === undefined ? mode : 'set', op.key, value, expiry, op.scope, cas, receiver, patience)
    })
  }

  /** The expiry to give a copy rewritten with the newest session: its renewed lifetime's. */
  #sessionExpiry(best: Copy, op: OperationContext): number {
    const decoded = this.#options.writer.peek(best.payload, op)
    if (decoded === undefined) return memcachedExpiry(this.#options.loader.tombstoneSeconds())
    const seconds = renewedLifetimeSeconds(decoded, this.#options.ttl)
    return memcachedExpiry(seconds < 0 ? 1 : seconds)
  }

  #count(server: Server, what: 'repairs' | 'missingCopies' | 'staleCopies'): void {
    this.counts[what]++
    this.counts.perServer[server.address] ??= { repairs: 0, missingCopies: 0, staleCopies: 0 }
    this.counts.perServer[server.address][what]++
  }
}

/** What a read found of the copies, for its trace. */
export function copiesTrace(outcomes: CopyOutcome<Item | undefined>[]): CopiesTrace {
  const copies = outcomes.map((outcome) => (outcome.settled && outcome.value !== undefined ? readCopy(outcome.value.value) : undefined))
  let newest: Copy | undefined
  for (const copy of copies) if (copy !== undefined && (newest === undefined || newer(copy, newest))) newest = copy
  const answeredCount = answered(outcomes).length
  let stale = 0
  for (const copy of copies) if (copy !== undefined && newest !== undefined && newer(newest, copy)) stale++
  const missing =
    newest === undefined
      ? 0
      : outcomes.filter((outcome) => outcome.settled && outcome.error === undefined && outcome.value === undefined).length
  return { answered: answeredCount, missing, stale, tombstone: newest?.kind === 'tombstone' }
}

/**
 * Why no copy answered: the first copy's failure (the key's own server first) when one failed, else
 * ETIMEDOUT (every copy still unanswered when the operation's patience ran out).
 */
function noCopyAnswered<T>(outcomes: CopyOutcome<T>[], op: OperationContext): Error {
  const failed = outcomes.find((outcome) => outcome.error instanceof MemcachedError)
  if (failed?.error) return failed.error
  const servers = outcomes.map((outcome) => outcome.server.address).join(', ')
  return new MemcacheStoreError(
    'ETIMEDOUT',
    op.operation,
    `${op.operation} of ${op.subject}: none of its copies answered in time (${servers})`,
    {
      server: outcomes[0]?.server.address,
      session: op.subject,
      reason: `none of the copies answered in time (${servers})`,
      sent: op.scope.sent,
    },
  )
}

export type { SessionData }
