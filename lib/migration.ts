// A change of the server list without logging anyone out. The new ring is used at once; the rings
// before it are kept, newest first, while their sessions move: a session that misses on its new
// server(s) is looked for on the previous ones and moved (ADD on the new, so a newer write or a
// logout there wins, then DELETE of the old copy), and every previous server that still answers is
// drained in the background: its keys listed with the crawler and each moved by a read. A ring is
// dropped once drained; one that cannot be listed is consulted until its sessions would have expired.
import { isCopy, isTombstone, nextVersion, readCopy, tombstoneValue } from './copies.js'
import type { BurstLog } from './log.js'
import { type Item, type MemcachedClient, MemcachedError, metadump, type Ring, type Server, type ServerConfig } from './memcached/index.js'
import { debug } from './observability.js'
import { isMarker } from './reservations.js'
import type { OperationContext } from './runner.js'
import { memcachedExpiry } from './ttl.js'

export interface MigrationOptions {
  client: MemcachedClient
  /** How many copies each session has (1 + replicas). */
  copies: number
  timeoutMs: number
  log: BurstLog
  /** Reads a session (by its key) through the store, which moves it when it is found on a previous ring only. */
  pull(key: string): Promise<unknown>
  /** How long a session can live (seconds, 0 for ever): how long a ring that cannot be drained is consulted. */
  longestLifetime(): number
  /** Whether a listed key is one of this store's sessions. */
  isSessionKey(key: string): boolean
  /** How long a stored session (a copy's payload) has left to live, in seconds; -1 when it is not one. */
  lifetimeOfStored(value: Buffer, op: OperationContext): number
}

/** What `diagnostics().migration` shows. */
export interface MigrationState {
  /** Sessions moved to their new server(s) since the store was created. */
  moved: number
  /** Servers of previous rings still consulted, with those being drained. */
  previous: string[]
  draining: string[]
}

/** Sessions moved at once while draining; the rest wait, so that none of them times out in a queue. */
const DRAIN_CONCURRENCY = 16

export class Migration {
  readonly #options: MigrationOptions
  /** Rings used before the current one, newest first, while their sessions move. */
  #previous: Ring[] = []
  readonly #draining = new Set<string>()
  readonly #abort = new AbortController()
  #moved = 0
  /** The server list in use, as placement sees it. */
  #signature: string

  constructor(options: MigrationOptions, initial: readonly ServerConfig[]) {
    this.#options = options
    this.#signature = signatureOf(initial)
  }

  /** Whether a previous ring is still consulted. */
  get active(): boolean {
    return this.#previous.length > 0
  }

  get state(): MigrationState {
    const previous = new Set(this.#previous.flatMap((ring) => ring.servers.map((server) => server.address)))
    return { moved: this.#moved, previous: [...previous], draining: [...this.#draining] }
  }

  moved(): void {
    this.#moved++
  }

  /**
   * Puts a new server list in use; returns the servers added and removed. The previous ring is
   * consulted until its sessions have moved.
   */
  change(configs: readonly ServerConfig[]): { added: string[]; removed: string[] } {
    const { client } = this.#options
    const before = client.ring
    const next = client.ringOf(configs)
    const added = next.servers.filter((server) => !before.has(server)).map((server) => server.address)
    const removed = before.servers.filter((server) => !next.has(server)).map((server) => server.address)
    client.use(next)
    const signature = signatureOf(configs)
    const changed = signature !== this.#signature
    this.#signature = signature
    if (before.servers.length > 0 && changed) {
      this.#previous.unshift(before)
      debug(
        'servers changed: %d added, %d removed; sessions move as they are read and as the previous servers are drained',
        added.length,
        removed.length,
      )
      void this.#drain(before)
    }
    return { added, removed }
  }

  /**
   * The servers of previous rings that may hold a key's copies and that the ring in use does not
   * place them on (newest ring first): where a miss looks next.
   */
  previousCopiesOf(key: string): Server[] {
    const { client, copies } = this.#options
    const current = client.copiesOf(key, copies)
    const found: Server[] = []
    for (const ring of this.#previous) {
      for (const server of ring.copiesOf(key, copies)) if (!current.includes(server) && !found.includes(server)) found.push(server)
    }
    return found
  }

  /**
   * A session without replicas that missed on its server: looked for on the previous servers and
   * moved (ADD on its server, so that a newer write or a logout there wins, then DELETE of the
   * previous copy). Undefined when none holds it.
   */
  async moveSingle(op: OperationContext): Promise<Item | undefined> {
    const { client, lifetimeOfStored } = this.#options
    for (const server of this.previousCopiesOf(op.key)) {
      const old = await server.get(op.key, op.scope).catch(() => undefined)
      if (old === undefined || isMarker(old.value)) continue
      if (isTombstone(old.value)) return undefined
      const seconds = lifetimeOfStored(isCopy(old.value) ? readCopy(old.value).payload : old.value, op)
      if (seconds < 0) continue
      const added = await client.store('add', op.key, old.value, memcachedExpiry(seconds), op.scope)
      await server.delete(op.key, op.scope, old.cas).catch(() => false)
      if (added.status !== 'ok') return client.get(op.key, op.scope) // a newer write or a logout there wins
      this.#moved++
      debug('migration: %s moved from %s to %s', op.subject, server.address, client.addressFor(op.key))
      return { ...old, cas: added.cas }
    }
    return undefined
  }

  /**
   * A logout without replicas while sessions move: a tombstone on its server (so that a copy still on
   * a previous one is never moved over it, for `tombstoneSeconds`) and the previous copies deleted.
   */
  async destroySingle(op: OperationContext, tombstoneSeconds: number): Promise<void> {
    const { client } = this.#options
    await Promise.all([
      client.store('set', op.key, tombstoneValue(nextVersion()), memcachedExpiry(tombstoneSeconds), op.scope),
      ...this.previousCopiesOf(op.key).map((server) => server.delete(op.key, op.scope)),
    ])
  }

  /** Ends every drain and forgets the previous rings (the store is closing). */
  close(): void {
    this.#abort.abort('abandoned: the store was closed')
    this.#previous = []
  }

  /** Lists every server of `ring` and moves each session of this store that it holds for the ring in use. */
  async #drain(ring: Ring): Promise<void> {
    const { client, copies, timeoutMs, log, pull, isSessionKey } = this.#options
    let complete = true
    for (const server of ring.servers) {
      if (this.#abort.signal.aborted) return
      this.#draining.add(server.address)
      try {
        const keys: string[] = []
        await metadump({
          transport: server.lister,
          idleTimeoutMs: timeoutMs,
          deadlineMs: 10 * timeoutMs,
          signal: this.#abort.signal,
          onKey: ({ key }) => {
            if (isSessionKey(key) && !client.copiesOf(key, copies).includes(server)) keys.push(key)
          },
        })
        debug('%s: draining %d session(s) to their new servers', server.address, keys.length)
        let next = 0
        const worker = async () => {
          while (next < keys.length && !this.#abort.signal.aborted) {
            const key = keys[next++]
            // Once the read has put the session where the ring now places it (moved, or repaired from
            // a copy that stayed), the copy here is no longer one of its copies: removed.
            const pulled = await pull(key).then(
              () => true,
              () => false,
            )
            if (pulled && !client.copiesOf(key, copies).includes(server)) {
              await server.delete(key, { deadline: performance.now() + timeoutMs, sent: false, answered: false }).catch(() => false)
            }
          }
        }
        await Promise.all(Array.from({ length: Math.min(DRAIN_CONCURRENCY, keys.length) }, worker))
      } catch (err) {
        if (this.#abort.signal.aborted) return
        complete = false
        const reason = err instanceof MemcachedError ? `${err.code}: ${err.reason}` : String(err)
        log.report('migration', `could not list ${server.address} to move its sessions (${reason}); they move as they are read`)
      } finally {
        this.#draining.delete(server.address)
      }
    }
    if (complete) this.#forget(ring)
    else {
      // A ring that could not be drained is consulted until its sessions would have expired.
      const seconds = this.#options.longestLifetime()
      if (seconds > 0) setTimeout(() => this.#forget(ring), seconds * 1000).unref()
    }
  }

  #forget(ring: Ring): void {
    this.#previous = this.#previous.filter((previous) => previous !== ring)
    const { client } = this.#options
    for (const server of ring.servers) {
      if (!client.ring.has(server) && !this.#previous.some((previous) => previous.has(server))) client.retire(server)
    }
    debug('migration: a previous ring is drained (%d still consulted)', this.#previous.length)
  }
}

/** A server list as placement sees it: addresses and weights, in any order. */
export function signatureOf(configs: readonly ServerConfig[]): string {
  return configs
    .map((config) => `${config.host}:${config.port}*${config.weight}`)
    .sort()
    .join(',')
}
