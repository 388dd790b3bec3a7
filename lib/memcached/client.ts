import type { ServerConfig } from './config.js'
import type { Connection, Patience } from './connection.js'
import type { Failure } from './errors.js'
import { consistentPlacement, customPlacement, type Placement } from './ring.js'
import type { Command, Receiver, Reply, RequestScope, Transport } from './wire.js'

/** What a read found: the value, its CAS and (meta only) the seconds it had left. */
export type Item = Reply & { value: Buffer }

export type StorageMode = 'set' | 'add' | 'replace'

export interface ServerState {
  address: string
  state: 'up' | 'down' | 'probing'
  lastError: string | undefined
  /** When the last failure happened (ms since the epoch). */
  lastErrorAt: number | undefined
}

/**
 * One server and the commands it takes, their replies turned into results or MemcachedErrors. Each
 * command returns a promise or, given a receiver, hands its outcome to it. `patience` says what a
 * request does while the server is being probed after a failure: `wait` goes along with the probe
 * (the default: a caller with one server has nowhere else to go), `refuse` fails at once (a caller
 * with another copy elsewhere).
 */
export class Server {
  readonly address: string
  readonly host: string
  readonly port: number
  readonly connection: Connection
  /** Opens text-protocol connections to the server (TLS and token auth as configured), for `lru_crawler metadump`. */
  readonly lister: Transport

  constructor(host: string, port: number, connection: Connection, lister: Transport) {
    this.address = `${host}:${port}`
    this.host = host
    this.port = port
    this.connection = connection
    this.lister = lister
  }

  get(key: string, scope: RequestScope): Promise<Item | undefined>
  get(key: string, scope: RequestScope, receiver: Receiver<Item | undefined>, patience?: Patience): void
  get(key: string, scope: RequestScope, receiver?: Receiver<Item | undefined>, patience?: Patience): Promise<Item | undefined> | undefined {
    return this.#send({ name: 'get', key }, scope, asItem, receiver, patience)
  }

  /** Get-and-touch: the item, its expiry moved to `expiry` in the same round trip. */
  getAndTouch(key: string, expiry: number, scope: RequestScope): Promise<Item | undefined>
  getAndTouch(key: string, expiry: number, scope: RequestScope, receiver: Receiver<Item | undefined>, patience?: Patience): void
  getAndTouch(
    key: string,
    expiry: number,
    scope: RequestScope,
    receiver?: Receiver<Item | undefined>,
    patience?: Patience,
  ): Promise<Item | undefined> | undefined {
    return this.#send({ name: 'gat', key, expiry }, scope, asItem, receiver, patience)
  }

  /**
   * SET, ADD or REPLACE; with `cas`, a SET that only succeeds while the item's CAS is unchanged.
   * Status `ok` (stored; `cas` is the new one), `exists` (ADD found the key, or the CAS did not
   * match) or `miss` (REPLACE or CAS found no key).
   */
  store(mode: StorageMode, key: string, value: Buffer, expiry: number, scope: RequestScope, cas?: bigint): Promise<Reply>
  store(
    mode: StorageMode,
    key: string,
    value: Buffer,
    expiry: number,
    scope: RequestScope,
    cas: bigint | undefined,
    receiver: Receiver<Reply>,
    patience?: Patience,
  ): void
  store(
    mode: StorageMode,
    key: string,
    value: Buffer,
    expiry: number,
    scope: RequestScope,
    cas?: bigint,
    receiver?: Receiver<Reply>,
    patience?: Patience,
  ): Promise<Reply> | undefined {
    return this.#send({ name: cas === undefined ? mode : 'cas', key, value, expiry, cas }, scope, asStorage, receiver, patience)
  }

  /** DELETE (only while the CAS is unchanged, when given); false when there was nothing to delete. */
  delete(key: string, scope: RequestScope, cas?: bigint): Promise<boolean>
  delete(key: string, scope: RequestScope, cas: bigint | undefined, receiver: Receiver<boolean>, patience?: Patience): void
  delete(key: string, scope: RequestScope, cas?: bigint, receiver?: Receiver<boolean>, patience?: Patience): Promise<boolean> | undefined {
    return this.#send({ name: 'delete', key, cas }, scope, asFound, receiver, patience)
  }

  /** A new expiry without rewriting the value; false when the key is missing. */
  touch(key: string, expiry: number, scope: RequestScope): Promise<boolean>
  touch(key: string, expiry: number, scope: RequestScope, receiver: Receiver<boolean>, patience?: Patience): void
  touch(key: string, expiry: number, scope: RequestScope, receiver?: Receiver<boolean>, patience?: Patience): Promise<boolean> | undefined {
    return this.#send({ name: 'touch', key, expiry }, scope, asFound, receiver, patience)
  }

  /** A no-op round trip (after authentication), ignoring any back-off. */
  ping(scope: RequestScope): Promise<void> {
    return this.connection.request({ name: 'noop', key: '' }, scope, asNothing, 'force')
  }

  /** Whether the server is answering (its circuit closed). */
  get up(): boolean {
    return this.connection.health.failures === 0
  }

  #send<T>(
    command: Command,
    scope: RequestScope,
    interpret: (reply: Reply) => T,
    receiver?: Receiver<T>,
    patience?: Patience,
  ): Promise<T> | undefined {
    if (receiver === undefined) return this.connection.request(command, scope, interpret, patience)
    this.connection.send(command, scope, interpret, receiver, patience)
    return undefined
  }
}

/**
 * A set of servers and where each key lives among them (ketama, or the application's own
 * placement). A client uses one ring at a time; a ring it no longer uses can still be read from
 * (its servers stay open until retired), which is how sessions move when the server list changes.
 */
export class Ring {
  readonly servers: readonly Server[]
  readonly #placement: Placement
  readonly #single: Server | undefined

  constructor(servers: readonly Server[], placement: Placement) {
    this.servers = servers
    this.#placement = placement
    this.#single = servers.length === 1 ? servers[0] : undefined
  }

  serverFor(key: string): Server {
    const server = this.#single ?? this.servers[this.#placement.place(key)]
    if (server === undefined) throw new Error('this ring has no servers')
    return server
  }

  /** The `count` distinct servers that keep copies of a key: its own server first, then the next ones on the ring. */
  copiesOf(key: string, count: number): Server[] {
    if (this.#single) return [this.#single]
    return this.#placement.copies(key, count).map((index) => this.servers[index])
  }

  has(server: Server): boolean {
    return this.servers.includes(server)
  }
}

/**
 * A memcached client: which server holds a key (and which hold its copies), and the commands, sent
 * to the key's server on the ring in use. Every request settles within the configured timeout (see
 * Connection); none is ever retried (a timed-out write may still be applied).
 */
export class MemcachedClient {
  readonly protocol: 'binary' | 'meta'
  #ring: Ring
  /** Every server made and not retired, by address: a ring that names one again reuses it (its connection and health). */
  readonly #known = new Map<string, Server>()
  readonly #make: (config: ServerConfig) => Server

  constructor(
    protocol: 'binary' | 'meta',
    make: (config: ServerConfig) => Server,
    servers: readonly ServerConfig[],
    placement?: (key: string) => number,
  ) {
    this.protocol = protocol
    this.#make = make
    this.#ring = this.ringOf(servers, placement)
  }

  /** The ring in use. */
  get ring(): Ring {
    return this.#ring
  }

  get servers(): readonly Server[] {
    return this.#ring.servers
  }

  /**
   * A ring of these servers (ketama, weighted; or `placement`), reusing the servers this client
   * already has by address. It is used once passed to `use`.
   */
  ringOf(configs: readonly ServerConfig[], placement?: (key: string) => number): Ring {
    const servers = configs.map((config) => {
      const address = `${config.host}:${config.port}`
      let server = this.#known.get(address)
      if (server === undefined) {
        server = this.#make(config)
        this.#known.set(address, server)
      }
      return server
    })
    const ring = consistentPlacement(
      servers.map((server) => server.address),
      configs.map((config) => config.weight),
    )
    return new Ring(servers, placement ? customPlacement(placement, servers.length, ring) : ring)
  }

  /** From now on, keys are placed on `ring`. Requests in flight finish on the servers they were sent to. */
  use(ring: Ring): void {
    this.#ring = ring
  }

  /** Closes a server no ring in use needs any more (what is in flight on it fails with ECLOSED). */
  retire(server: Server): void {
    if (this.#ring.has(server)) return
    server.connection.close()
    this.#known.delete(server.address)
  }

  /** Requests in flight on every server, retired ones aside. */
  get inFlight(): number {
    let count = 0
    for (const server of this.#known.values()) count += server.connection.inFlight
    return count
  }

  serverFor(key: string): Server {
    return this.#ring.serverFor(key)
  }

  copiesOf(key: string, count: number): Server[] {
    return this.#ring.copiesOf(key, count)
  }

  /** The address of the server a key lives on, for messages and traces. */
  addressFor(key: string): string {
    return this.#ring.servers.length === 0 ? '' : this.serverFor(key).address
  }

  get(key: string, scope: RequestScope): Promise<Item | undefined>
  get(key: string, scope: RequestScope, receiver: Receiver<Item | undefined>): void
  get(key: string, scope: RequestScope, receiver?: Receiver<Item | undefined>): Promise<Item | undefined> | undefined {
    if (receiver === undefined) return this.serverFor(key).get(key, scope)
    this.serverFor(key).get(key, scope, receiver)
    return undefined
  }

  getAndTouch(key: string, expiry: number, scope: RequestScope): Promise<Item | undefined>
  getAndTouch(key: string, expiry: number, scope: RequestScope, receiver: Receiver<Item | undefined>): void
  getAndTouch(
    key: string,
    expiry: number,
    scope: RequestScope,
    receiver?: Receiver<Item | undefined>,
  ): Promise<Item | undefined> | undefined {
    if (receiver === undefined) return this.serverFor(key).getAndTouch(key, expiry, scope)
    this.serverFor(key).getAndTouch(key, expiry, scope, receiver)
    return undefined
  }

  store(mode: StorageMode, key: string, value: Buffer, expiry: number, scope: RequestScope, cas?: bigint): Promise<Reply> {
    return this.serverFor(key).store(mode, key, value, expiry, scope, cas)
  }

  delete(key: string, scope: RequestScope, cas?: bigint): Promise<boolean>
  delete(key: string, scope: RequestScope, cas: bigint | undefined, receiver: Receiver<boolean>): void
  delete(key: string, scope: RequestScope, cas?: bigint, receiver?: Receiver<boolean>): Promise<boolean> | undefined {
    if (receiver === undefined) return this.serverFor(key).delete(key, scope, cas)
    this.serverFor(key).delete(key, scope, cas, receiver)
    return undefined
  }

  touch(key: string, expiry: number, scope: RequestScope): Promise<boolean>
  touch(key: string, expiry: number, scope: RequestScope, receiver: Receiver<boolean>): void
  touch(key: string, expiry: number, scope: RequestScope, receiver?: Receiver<boolean>): Promise<boolean> | undefined {
    if (receiver === undefined) return this.serverFor(key).touch(key, expiry, scope)
    this.serverFor(key).touch(key, expiry, scope, receiver)
    return undefined
  }

  /** A no-op round trip to one server (after authentication), ignoring any back-off. */
  ping(server: Server, scope: RequestScope): Promise<void> {
    return server.ping(scope)
  }

  /** The state of each server of the ring in use. */
  states(): ServerState[] {
    return this.#ring.servers.map(({ address, connection: { health } }) => ({
      address,
      state: health.state,
      lastError: health.lastFailureAt === 0 ? undefined : health.lastError,
      lastErrorAt: health.lastFailureAt === 0 ? undefined : Date.now() - (performance.now() - health.lastFailureAt),
    }))
  }

  /** Fails whatever is in flight with ECLOSED and closes every connection. */
  close(): void {
    for (const server of this.#known.values()) server.connection.close()
  }
}

function asItem(reply: Reply): Item | undefined {
  if (reply.status === 'ok') return reply as Item
  if (reply.status === 'miss') return undefined
  throw refusal(reply)
}

function asStorage(reply: Reply): Reply {
  if (reply.status === 'ok' || reply.status === 'exists' || reply.status === 'miss') return reply
  throw refusal(reply)
}

function asFound(reply: Reply): boolean {
  if (reply.status === 'ok') return true
  if (reply.status === 'miss') return false
  // A CAS-checked delete of an item that changed meanwhile: nothing was deleted.
  if (reply.status === 'exists') return false
  throw refusal(reply)
}

function asNothing(reply: Reply): void {
  if (reply.status !== 'ok') throw refusal(reply)
}

/** A reply that refuses the request: the connection is fine, the request failed. */
function refusal(reply: Reply): Failure {
  switch (reply.status) {
    case 'tooLarge':
      return {
        code: 'ETOOLARGE',
        reason: reply.message ?? "the value is larger than the server's item size limit (its -I)",
        sent: true,
        refused: true,
      }
    case 'authError':
      return { code: 'EAUTH', reason: 'the server requires authentication, or refused it', sent: true, refused: true }
    default:
      return { code: 'ESERVER', reason: reply.message ?? `unexpected reply (${reply.status})`, sent: true, refused: true }
  }
}
