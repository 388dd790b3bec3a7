import type tls from 'node:tls'
import type { SessionData } from 'express-session'
import type { Serializer } from './codec.js'
import { checkSecret, type SecretKeyring, type SecretOption } from './crypto.js'
import { randomSessionId } from './genid.js'
import { keyProblem } from './keys.js'
import type { Logger } from './log.js'
import type { Credentials, Hints, ServerConfig } from './memcached/index.js'
import type { TtlOption } from './ttl.js'

/** A server with its relative share of sessions: `{ address: 'cache-1:11211', weight: 2 }`. */
export interface WeightedServer {
  /** `host:port` or `user:pass@host:port`; a host without a port means 11211. */
  address: string
  /**
   * The server's share of sessions relative to the others (ketama weighting).
   * @default 1
   */
  weight?: number
}

/** What the store reads from a memjs Client passed as `client`: its servers and their credentials. */
export interface MemjsClientLike {
  servers: ReadonlyArray<{ host: string; port: number; username?: string; password?: string }>
  /** memjs's documented placement hook: the index in `servers` of the server that holds a key. */
  getServer?(key: string): number | string
}

export interface MemcacheStoreOptions {
  /**
   * memcached servers as `"host:port,host:port"` or an array, each optionally `user:pass@host:port`
   * or a `{ address, weight }` object; a host without a port means 11211. Several servers share the
   * sessions by ketama consistent hashing.
   * @default process.env.MEMCACHIER_SERVERS, then process.env.MEMCACHE_SERVERS, then "localhost:11211"
   */
  servers?: string | Array<string | WeightedServer>
  /**
   * Username for every server without credentials in its address: SASL with the binary protocol,
   * memcached's token authentication (-Y) with meta.
   * @default process.env.MEMCACHIER_USERNAME, then process.env.MEMCACHE_USERNAME
   */
  username?: string
  /**
   * Password, given together with `username`.
   * @default process.env.MEMCACHIER_PASSWORD, then process.env.MEMCACHE_PASSWORD
   */
  password?: string
  /**
   * `'binary'` (memjs) or `'meta'` (memcached's meta commands, for servers that refuse the binary
   * protocol: ElastiCache Serverless, memcached -B ascii, memcached's proxy).
   * @default "binary"
   */
  protocol?: 'binary' | 'meta'
  /**
   * TLS for every connection: `true`, or Node's `tls.connect` options (`ca`, `cert`/`key` for mutual
   * TLS, `servername`, `rejectUnauthorized`...). Certificates and host names are verified by default.
   * @default undefined (plain TCP)
   */
  tls?: boolean | tls.ConnectionOptions
  /** A memjs Client whose servers and credentials the store uses (it opens its own connections to them). */
  client?: MemjsClientLike
  /**
   * Prepended to every session ID to form its memcached key.
   * @default "sess:"
   */
  prefix?: string
  /**
   * Session lifetime in seconds when the cookie has no expiry, or a function of the session
   * returning seconds (used for every session). `0` means no expiry: memcached's LRU decides.
   * @default 86400
   */
  ttl?: number | ((sess: SessionData) => number)
  /**
   * Turns session data into text and back; both functions must be synchronous.
   * @default JSON
   */
  serializer?: Serializer
  /**
   * When true, `touch` (and a save of an unmodified session) does nothing and reads do not extend the expiry: sessions
   * expire a TTL after their last write.
   * @default false
   */
  disableTouch?: boolean
  /**
   * Seconds during which `touch` is skipped for a session this process already wrote or touched
   * (connect-mongo's option). Memory is bounded (at most 40,000 remembered sessions). `0` touches every time.
   * @default 0
   */
  touchAfter?: number
  /**
   * When true, a memcached failure is logged (once per burst) instead of passed on: `get` yields no
   * session and `set` and `touch` succeed without writing. `destroy` always passes its error on: a
   * logout that did not happen must not look like one.
   * @default false
   */
  failOpen?: boolean
  /**
   * When true, a save that lost a race with another request's save (detected with memcached's CAS)
   * merges both at the top level of the session instead of erasing the other's changes. `false`
   * means plain last-write-wins, as with MemoryStore.
   * @default true
   */
  merge?: boolean
  /**
   * Milliseconds after which any store operation settles with an error, whatever memcached does
   * (the wait for the session's lock included).
   * @default 1000
   */
  timeout?: number
  /**
   * memcached's item size limit in bytes (its `-I` option); larger sessions are refused before sending.
   * @default 1048576
   */
  maxItemSize?: number
  /**
   * Receives one line per burst of swallowed failures (with `failOpen`) and per unreadable stored
   * value. `false` silences the store.
   * @default console
   */
  logger?: Logger | false
  /**
   * Encrypts sessions at rest (AES-256-GCM). At least 32 characters (`openssl rand -base64 32`) or a
   * 32-byte Buffer. An array rotates secrets: the first encrypts, every one decrypts.
   * @default undefined (sessions are stored as plain serialized text)
   */
  secret?: SecretOption
  /**
   * Stores each session under a hash of its ID (HMAC-SHA-256 keyed from `secret`, else SHA-256):
   * reading memcached's keys then yields nothing that works as a cookie. `ids()` and `all()` are
   * refused under it (the keys no longer hold the IDs); `length()`, `clear()` and `sessionsOf()`
   * (with `secret`) work. Turning it on moves every key: sessions stored before are not found (their
   * users log in again, once). See docs/security.md.
   * @default false
   */
  hashIds?: boolean
  /**
   * Which user a session belongs to, for `sessionsOf` and `destroySessionsOf` (a user logged out
   * everywhere): for example `(sess) => sess.passport?.user`. `undefined` for a session without one.
   * @default undefined (no session belongs to a user)
   */
  userOf?: (sess: SessionData) => string | number | undefined
  /**
   * Makes candidate session IDs for `store.genid`, which reserves each in memcached before handing
   * it out. Its IDs must be usable as memcached keys after the prefix.
   * @default 24 random bytes in base64url, as express-session's own IDs
   */
  generateId?: () => string
  /**
   * Take the server list from an ElastiCache configuration endpoint (auto discovery), polled every
   * `interval` ms, instead of `servers`. TLS and credentials apply to the endpoint as to the nodes.
   * @default undefined (the servers are `servers`)
   */
  discovery?: { endpoint: string; interval?: number }
  /**
   * How many more servers keep a copy of each session, besides its own: 1 keeps two copies, on the
   * key's server and the next distinct one on the ring. With copies, no session is lost when one
   * server dies, freezes or restarts empty, and a logout stays final (see docs/clusters.md). At most
   * the number of servers minus one.
   * @default 0
   */
  replicas?: number
}

/** One server, parsed: credentials from the address itself win over `username`/`password`. */
export type ServerOption = ServerConfig

export interface ResolvedOptions {
  servers: ServerOption[]
  /** Where the server list came from, for messages about connection failures. */
  serversFrom: 'servers' | 'client' | 'MEMCACHIER_SERVERS' | 'MEMCACHE_SERVERS' | 'default' | 'discovery'
  /** Credentials for servers without their own (options, then the environment). */
  credentials: Credentials | undefined
  /** A given memjs client's own placement (its `getServer` replaced by the user), else undefined: ketama. */
  placement: ((key: string) => number) | undefined
  protocol: 'binary' | 'meta'
  tls: tls.ConnectionOptions | undefined
  prefix: string
  ttl: TtlOption
  serializer: Serializer
  disableTouch: boolean
  touchAfter: number
  failOpen: boolean
  merge: boolean
  timeout: number
  maxItemSize: number
  logger: Logger | undefined
  secrets: SecretKeyring | undefined
  hashIds: boolean
  userOf: ((sess: SessionData) => string | number | undefined) | undefined
  generateId: () => string
  replicas: number
  /** The configuration endpoint and its polling interval (ms), with `discovery`. */
  discovery: { host: string; port: number; interval: number } | undefined
}

/** Every default, in one place. */
export const DEFAULTS = {
  protocol: 'binary',
  prefix: 'sess:',
  ttl: 86_400,
  serializer: JSON as Serializer,
  disableTouch: false,
  touchAfter: 0,
  failOpen: false,
  merge: true,
  timeout: 1000,
  maxItemSize: 1_048_576,
  hashIds: false,
  replicas: 0,
  discoveryInterval: 60_000,
} as const

export const DEFAULT_SERVER = 'localhost:11211'

/**
 * What a prefix must end with: session IDs never contain it (express-session's are base64url), so a
 * key is this store's only when nothing after the prefix has one (see isSessionKey).
 */
export const PREFIX_DELIMITER = ':'
const DEFAULT_PORT = 11211

/** Every option, checked by the compiler against the interface: adding one means adding it here. */
const KNOWN_OPTIONS = {
  servers: true,
  username: true,
  password: true,
  protocol: true,
  tls: true,
  client: true,
  prefix: true,
  ttl: true,
  serializer: true,
  disableTouch: true,
  touchAfter: true,
  failOpen: true,
  merge: true,
  timeout: true,
  maxItemSize: true,
  logger: true,
  secret: true,
  hashIds: true,
  userOf: true,
  generateId: true,
  replicas: true,
  discovery: true,
} as const satisfies Record<keyof MemcacheStoreOptions, true>

/** Every option's name, as the README's table must list them. */
export const OPTION_NAMES = Object.keys(KNOWN_OPTIONS) as Array<keyof MemcacheStoreOptions>

/** Options of other stores that users bring along, and what to use here instead. */
const FOREIGN_OPTIONS: Record<string, string> = {
  disableTTL: "this store always gives memcached an expiry; `ttl: 0` stores sessions without one (memcached's LRU decides)",
  scanCount: "listing sessions uses memcached's `lru_crawler metadump`, which has no batch size: call `ids()` or `all()`",
  memjs:
    "the store opens its own connections: pass credentials as `username`/`password` and the deadline as `timeout` (memjs's retries and failover are unsafe for sessions)",
  expires: 'use `ttl` (seconds)',
  hosts: 'use `servers`',
  host: 'use `servers: "host:port"`',
  port: 'use `servers: "host:port"`',
  ttlSeconds: 'use `ttl` (seconds)',
}

// "[user:pass@]host[:port]"; IPv6 literals are not supported.
const SERVER_PATTERN = /^(?:([^@\s,]*)@)?([^:@\s,]+)(?::(\d{1,5}))?$/

/** Checks every option and fills in defaults; a TypeError quotes whatever is wrong. */
export function resolveOptions(options: MemcacheStoreOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected options to be an object, got ${quote(options)}`)
  }
  for (const name of Object.keys(options)) {
    if (!Object.hasOwn(KNOWN_OPTIONS, name)) throw new TypeError(unknownOption(name))
  }
  const { servers, client, logger } = options
  const prefix = options.prefix ?? DEFAULTS.prefix
  const ttl = options.ttl ?? DEFAULTS.ttl
  const serializer = options.serializer ?? DEFAULTS.serializer
  const timeout = options.timeout ?? DEFAULTS.timeout
  const maxItemSize = options.maxItemSize ?? DEFAULTS.maxItemSize
  const touchAfter = options.touchAfter ?? DEFAULTS.touchAfter
  const protocol = options.protocol ?? DEFAULTS.protocol

  if (client !== undefined) {
    if (typeof client !== 'object' || client === null || !Array.isArray((client as { servers?: unknown }).servers)) {
      throw new TypeError(`Expected \`client\` to be a memjs Client, got ${quote(client)}`)
    }
    if (servers !== undefined || options.username !== undefined || options.password !== undefined) {
      throw new TypeError(
        'Pass either `client` or `servers`/`username`/`password`, not both: an existing client brings its own servers and credentials',
      )
    }
  }
  const explicit = checkCredentials(options.username, options.password)
  const credentials = explicit ?? credentialsFromEnv(env)
  const discovery = checkDiscovery(options.discovery, servers, client)
  const { list, from } = discovery ? { list: [], from: 'discovery' as const } : serverList(servers, client, env)
  if (protocol !== 'binary' && protocol !== 'meta') {
    throw new TypeError(`Expected \`protocol\` to be "binary" or "meta", got ${quote(protocol)}`)
  }
  const tlsOptions = checkTls(options.tls)
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${quote(prefix)}`)
  const prefixProblem = prefix === '' ? undefined : keyProblem(prefix)
  if (prefixProblem !== undefined)
    throw new TypeError(`Expected \`prefix\` to be usable in a memcached key, got ${quote(prefix)}: it ${prefixProblem}`)
  if (prefix !== '' && !prefix.endsWith(PREFIX_DELIMITER)) {
    throw new TypeError(
      `Expected \`prefix\` to end with "${PREFIX_DELIMITER}", got ${quote(prefix)}: without the delimiter another application's keys look like this store's (with "sess", the key "session_count" reads as session "ion_count", and clear() would delete it). Use ${JSON.stringify(prefix + PREFIX_DELIMITER)}`,
    )
  }
  if (typeof ttl !== 'function' && !(typeof ttl === 'number' && Number.isFinite(ttl) && ttl >= 0)) {
    throw new TypeError(`Expected \`ttl\` to be a non-negative number of seconds or a function returning one, got ${quote(ttl)}`)
  }
  if (typeof serializer?.stringify !== 'function' || typeof serializer?.parse !== 'function') {
    throw new TypeError(`Expected \`serializer\` to have \`stringify\` and \`parse\` functions, got ${quote(serializer)}`)
  }
  const disableTouch = checkBoolean('disableTouch', options.disableTouch ?? DEFAULTS.disableTouch)
  const failOpen = checkBoolean('failOpen', options.failOpen ?? DEFAULTS.failOpen)
  const merge = checkBoolean('merge', options.merge ?? DEFAULTS.merge)
  const hashIds = checkBoolean('hashIds', options.hashIds ?? DEFAULTS.hashIds)
  const userOf = options.userOf
  if (userOf !== undefined && typeof userOf !== 'function') {
    throw new TypeError(`Expected \`userOf\` to be a function returning a session's user (or undefined), got ${quote(userOf)}`)
  }
  if (!(typeof touchAfter === 'number' && Number.isFinite(touchAfter) && touchAfter >= 0)) {
    throw new TypeError(`Expected \`touchAfter\` to be a non-negative number of seconds, got ${quote(touchAfter)}`)
  }
  if (!(typeof timeout === 'number' && Number.isFinite(timeout) && timeout > 0)) {
    throw new TypeError(`Expected \`timeout\` to be a positive number of milliseconds, got ${quote(timeout)}`)
  }
  if (!(Number.isSafeInteger(maxItemSize) && maxItemSize >= 1024)) {
    throw new TypeError(`Expected \`maxItemSize\` to be a whole number of bytes of at least 1024, got ${quote(maxItemSize)}`)
  }
  const generateId = options.generateId ?? randomSessionId
  if (typeof generateId !== 'function')
    throw new TypeError(`Expected \`generateId\` to be a function returning a session ID, got ${quote(generateId)}`)
  const replicas = options.replicas ?? DEFAULTS.replicas
  if (!(Number.isSafeInteger(replicas) && replicas >= 0 && (discovery !== undefined || replicas < list.length))) {
    const most = list.length - 1
    throw new TypeError(
      `Expected \`replicas\` to be a whole number from 0 to ${most} (the number of servers minus one: each copy needs a server of its own), got ${quote(replicas)}`,
    )
  }
  if (logger !== undefined && logger !== false && typeof (logger as Logger | null)?.warn !== 'function') {
    throw new TypeError(`Expected \`logger\` to have a \`warn\` method, or to be false, got ${quote(logger)}`)
  }

  return {
    servers: list,
    serversFrom: from,
    credentials,
    placement: clientPlacement(client),
    protocol,
    tls: tlsOptions,
    prefix,
    ttl: typeof ttl === 'number' ? Math.ceil(ttl) : ttl,
    serializer,
    disableTouch,
    touchAfter,
    failOpen,
    merge,
    timeout,
    maxItemSize,
    logger: logger === false ? undefined : (logger ?? console),
    secrets: options.secret === undefined ? undefined : checkSecret(options.secret),
    hashIds,
    userOf,
    generateId,
    replicas,
    discovery,
  }
}

/** What the memcached client adds to its failures' reasons: where the servers and credentials come from. */
export function clientHints({ serversFrom }: Pick<ResolvedOptions, 'serversFrom'>): Hints {
  const credentials = 'options `username`/`password`, `user:pass@host:port` in `servers`, or MEMCACHE_USERNAME/MEMCACHE_PASSWORD'
  switch (serversFrom) {
    case 'default':
      return {
        credentials,
        refused: 'no servers were configured, so the default localhost:11211 was used: set the `servers` option or MEMCACHE_SERVERS',
      }
    case 'MEMCACHIER_SERVERS':
    case 'MEMCACHE_SERVERS':
      return { credentials, refused: `the address came from the ${serversFrom} environment variable` }
    default:
      return { credentials }
  }
}

/** An unknown option's message: what to use instead for other stores' options, else the closest known name. */
function unknownOption(name: string): string {
  const pointer = FOREIGN_OPTIONS[name]
  if (pointer) return `Unknown option \`${name}\`: ${pointer}`
  const known = Object.keys(KNOWN_OPTIONS)
  const closest = known
    .map((candidate) => ({ candidate, distance: editDistance(name.toLowerCase(), candidate.toLowerCase()) }))
    .sort((a, b) => a.distance - b.distance)[0]
  const suggestion = closest.distance <= Math.max(2, Math.floor(name.length / 3)) ? ` Did you mean \`${closest.candidate}\`?` : ''
  return `Unknown option \`${name}\`.${suggestion} Known options: ${known.join(', ')}`
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]
}

/** A memjs client's `getServer` when the user replaced memjs's own (`hash % servers.length`). */
function clientPlacement(client: MemjsClientLike | undefined): ((key: string) => number) | undefined {
  const getServer = client?.getServer
  if (typeof getServer !== 'function' || !Object.hasOwn(client as object, 'getServer')) return undefined
  return (key) => Number(getServer.call(client, key))
}

function serverList(
  servers: unknown,
  client: MemjsClientLike | undefined,
  env: NodeJS.ProcessEnv,
): { list: ServerOption[]; from: ResolvedOptions['serversFrom'] } {
  if (client !== undefined) {
    const list = client.servers.map((server) => ({
      host: server.host,
      port: server.port,
      weight: 1,
      credentials: server.username && server.password ? { username: server.username, password: server.password } : undefined,
    }))
    if (list.length === 0) throw new TypeError('Expected `client` to have at least one server')
    return { list, from: 'client' }
  }
  if (servers !== undefined) return { list: checkServers(servers, '`servers`'), from: 'servers' }
  for (const name of ['MEMCACHIER_SERVERS', 'MEMCACHE_SERVERS'] as const) {
    const value = env[name]
    if (value) return { list: checkServers(value, name), from: name }
  }
  return { list: checkServers(DEFAULT_SERVER, 'the default'), from: 'default' }
}

/** The servers, parsed; a weight of 1 unless given. */
export function checkServers(servers: unknown, source: string): ServerOption[] {
  const list = typeof servers === 'string' ? servers.split(',') : servers
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`Expected ${source} to be a "host:port,host:port" string or an array of "host:port", got ${quote(servers)}`)
  }
  const parsed: ServerOption[] = []
  for (const entry of list) {
    const weighted = typeof entry === 'object' && entry !== null
    const address: unknown = weighted ? (entry as WeightedServer).address : entry
    const weight: unknown = weighted ? ((entry as WeightedServer).weight ?? 1) : 1
    const server = typeof address === 'string' ? parseServer(address.trim()) : undefined
    if (server === undefined) {
      throw new TypeError(
        `Expected each of ${source} to look like "host:port", "user:pass@host:port" or { address: "host:port", weight: 2 }, got ${quote(withoutPassword(entry))}`,
      )
    }
    if (weighted) {
      const unknown = Object.keys(entry).filter((name) => name !== 'address' && name !== 'weight')
      if (unknown.length > 0) throw new TypeError(`Unknown field \`${unknown[0]}\` in a \`servers\` entry; known fields: address, weight`)
    }
    if (!(typeof weight === 'number' && Number.isFinite(weight) && weight > 0)) {
      throw new TypeError(`Expected the weight of server ${JSON.stringify(address)} to be a positive number, got ${quote(weight)}`)
    }
    parsed.push({ ...server, weight })
  }
  return parsed
}

function parseServer(address: string): Omit<ServerOption, 'weight'> | undefined {
  const match = SERVER_PATTERN.exec(address)
  if (!match) return undefined
  const [, userPass, host, portText] = match
  const port = portText === undefined ? DEFAULT_PORT : Number(portText)
  if (port < 1 || port > 65535) return undefined
  if (userPass === undefined) return { host, port, credentials: undefined }
  const colon = userPass.indexOf(':')
  if (colon <= 0 || colon === userPass.length - 1 || userPass.indexOf(':', colon + 1) >= 0) return undefined
  return { host, port, credentials: { username: userPass.slice(0, colon), password: userPass.slice(colon + 1) } }
}

/** A `servers` entry as it may appear in a message: the password replaced by `***`. */
function withoutPassword(entry: unknown): unknown {
  const hide = (address: unknown) => (typeof address === 'string' ? address.replace(/^([^@:]*):.*@/, '$1:***@') : address)
  return typeof entry === 'object' && entry !== null ? { ...entry, address: hide((entry as WeightedServer).address) } : hide(entry)
}

function checkCredentials(username: unknown, password: unknown): Credentials | undefined {
  if (username === undefined && password === undefined) return undefined
  if (typeof username !== 'string' || username === '' || typeof password !== 'string' || password === '') {
    throw new TypeError(
      `Expected \`username\` and \`password\` to be given together as non-empty strings, got username ${quote(username)} and password of type ${password === null ? 'null' : typeof password}`,
    )
  }
  return { username, password }
}

/** The `discovery` option, checked: the endpoint parsed, the interval filled in. */
function checkDiscovery(discovery: unknown, servers: unknown, client: unknown): ResolvedOptions['discovery'] {
  if (discovery === undefined) return undefined
  if (servers !== undefined || client !== undefined) {
    throw new TypeError(
      'Pass either `discovery` or `servers` (or `client`), not both: with `discovery` the server list comes from the configuration endpoint, and changes with it',
    )
  }
  const { endpoint, interval = DEFAULTS.discoveryInterval, ...rest } = (discovery ?? {}) as { endpoint?: unknown; interval?: unknown }
  const unknown = Object.keys(rest)
  if (typeof discovery !== 'object' || discovery === null || unknown.length > 0) {
    throw new TypeError(`Expected \`discovery\` to be { endpoint: "host:port", interval?: ms }, got ${quote(discovery)}`)
  }
  const parsed = typeof endpoint === 'string' ? parseServer(endpoint.trim()) : undefined
  if (parsed === undefined || parsed.credentials !== undefined) {
    throw new TypeError(`Expected \`discovery.endpoint\` to be "host:port" (the configuration endpoint), got ${quote(endpoint)}`)
  }
  if (!(typeof interval === 'number' && Number.isFinite(interval) && interval >= 100)) {
    throw new TypeError(`Expected \`discovery.interval\` to be a number of milliseconds (at least 100), got ${quote(interval)}`)
  }
  return { host: parsed.host, port: parsed.port, interval }
}

/** memjs's environment variables, in memjs's order. */
function credentialsFromEnv(env: NodeJS.ProcessEnv): Credentials | undefined {
  const username = env.MEMCACHIER_USERNAME || env.MEMCACHE_USERNAME
  const password = env.MEMCACHIER_PASSWORD || env.MEMCACHE_PASSWORD
  return username && password ? { username, password } : undefined
}

function checkTls(option: unknown): tls.ConnectionOptions | undefined {
  if (option === undefined || option === false) return undefined
  if (option === true) return {}
  if (typeof option !== 'object' || option === null || Array.isArray(option)) {
    throw new TypeError(`Expected \`tls\` to be true or an object of Node's tls.connect options, got ${quote(option)}`)
  }
  return option as tls.ConnectionOptions
}

function checkBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`Expected \`${name}\` to be a boolean, got ${quote(value)}`)
  return value
}

/** A value as it should appear in a message: `-5` (number). */
export function quote(value: unknown): string {
  let text: string
  if (typeof value === 'string') text = JSON.stringify(value)
  else if (typeof value === 'function') text = `[function ${value.name || 'anonymous'}]`
  else {
    try {
      text = typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value))
    } catch {
      text = Object.prototype.toString.call(value)
    }
  }
  if (text.length > 80) text = `${text.slice(0, 77)}...`
  return `\`${text}\` (${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value})`
}
