import type { SessionData } from 'express-session'
import type { Serializer } from './codec.js'
import { keyProblem } from './keys.js'
import type { TtlOption } from './ttl.js'

/** Where the store writes what it logs: anything with a `warn` method, such as `console`. */
export interface Logger {
  warn(message: string): void
}

/**
 * What the store reads from a memjs `Client` passed as `client` (declared here so that the
 * package's types do not depend on memjs's). A memjs 1.3 `Client` satisfies it.
 */
export interface MemjsClientLike {
  servers: ReadonlyArray<{
    host: string
    port: number
    username?: string
    password?: string
    options?: { timeout?: number; keepAlive?: boolean; conntimeout?: number }
  }>
}

/**
 * The memjs `ClientOptions` and `ServerOptions` that the `memjs` option passes on to the client
 * the store creates (declared here so that the package's types do not depend on memjs's).
 */
export interface MemjsOptions {
  /** Seconds before an operation fails (memjs's own timer; the store's `timeout` bounds every operation anyway). */
  timeout?: number
  /** Seconds before a connection attempt fails. */
  conntimeout?: number
  keepAlive?: boolean
  /** Seconds before the first keep-alive probe on an idle socket. */
  keepAliveDelay?: number
  retries?: number
  /** Seconds between retries. */
  retry_delay?: number
  /** Default expiry in seconds of memjs's own writes. */
  expires?: number
  /** Not supported: the store refuses `true` (see the README, "Running on a cluster"). */
  failover?: boolean
  failoverTime?: number
  username?: string
  password?: string
  /** Receives memjs's own messages. */
  logger?: { log(...args: unknown[]): void }
}

/** A server with its relative share of sessions: `{ address: 'cache-1:11211', weight: 2 }`. */
export interface WeightedServer {
  /** `host:port` or `user:pass@host:port`. */
  address: string
  /**
   * The server's share of sessions relative to the others (ketama weighting).
   * @default 1
   */
  weight?: number
}

export interface MemcacheStoreOptions {
  /**
   * memcached servers as `"host:port,host:port"` or an array, each optionally `user:pass@host:port`
   * or a `{ address, weight }` object. Several servers share the sessions by ketama consistent hashing.
   * @default process.env.MEMCACHIER_SERVERS, then process.env.MEMCACHE_SERVERS, then "localhost:11211"
   */
  servers?: string | Array<string | WeightedServer>
  /**
   * SASL username for every server without credentials in its address.
   * @default process.env.MEMCACHIER_USERNAME, then process.env.MEMCACHE_USERNAME
   */
  username?: string
  /**
   * SASL password, given together with `username`.
   * @default process.env.MEMCACHIER_PASSWORD, then process.env.MEMCACHE_PASSWORD
   */
  password?: string
  /** An existing memjs client to use instead of creating one; the store then never closes it. */
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
   * Turns session data into text and back.
   * @default JSON
   */
  serializer?: Serializer
  /**
   * When true, `touch` does nothing: sessions expire a TTL after their last write.
   * @default false
   */
  disableTouch?: boolean
  /**
   * Seconds during which `touch` is skipped for a session this process already wrote or touched
   * (connect-mongo's option): fewer writes on read-heavy sites, at the price of the stored expiry
   * lagging the cookie's by up to this long. Keep it well below the session lifetime. Memory is
   * bounded (at most 40,000 remembered sessions). `0` touches every time.
   * @default 0
   */
  touchAfter?: number
  /**
   * When true, a memcached failure is logged (once per burst) instead of passed on: `get` yields no
   * session and `set`, `touch` and `destroy` succeed without writing (Rack::Session::Memcache's way).
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
   * Milliseconds after which any store operation settles with an error, whatever memcached does.
   * @default 1000
   */
  timeout?: number
  /**
   * memcached's item size limit in bytes (its `-I` option); larger sessions are refused before sending.
   * @default 1048576
   */
  maxItemSize?: number
  /** Options for the memjs client the store creates (`username`, `password`, `keepAlive`, ...). */
  memjs?: MemjsOptions
  /**
   * Receives one line per burst of swallowed failures (with `failOpen`) and per unreadable stored
   * value. `false` silences the store.
   * @default console
   */
  logger?: Logger | false
  /**
   * Encrypts sessions at rest (AES-256-GCM, key derived with scrypt). An array rotates secrets: the
   * first encrypts, every one decrypts. Unset, sessions are stored as plain serialized text.
   * @default undefined
   */
  secret?: string | string[]
}

export interface ResolvedOptions {
  servers: string | undefined
  /** Relative shares, one per server in `servers` order; undefined when no server has a weight. */
  weights: number[] | undefined
  credentials: { username: string; password: string } | undefined
  client: MemjsClientLike | undefined
  prefix: string
  ttl: TtlOption
  serializer: Serializer
  disableTouch: boolean
  touchAfter: number
  failOpen: boolean
  merge: boolean
  timeout: number
  maxItemSize: number
  memjs: MemjsOptions
  logger: Logger | undefined
  secrets: string[] | undefined
}

/** Every default, in one place. */
export const DEFAULTS = {
  prefix: 'sess:',
  ttl: 86_400,
  serializer: JSON as Serializer,
  disableTouch: false,
  touchAfter: 0,
  failOpen: false,
  merge: true,
  timeout: 1000,
  maxItemSize: 1_048_576,
} as const

const KNOWN_OPTIONS = new Set([
  'servers',
  'username',
  'password',
  'client',
  'prefix',
  'ttl',
  'serializer',
  'disableTouch',
  'touchAfter',
  'failOpen',
  'merge',
  'timeout',
  'maxItemSize',
  'memjs',
  'logger',
  'secret',
])

// "[user:pass@]host[:port]"; memjs splits on ':' so IPv6 literals cannot be expressed.
const SERVER_PATTERN = /^(?:[^@\s,]*@)?[^:@\s,]+(?::\d{1,5})?$/

/** Checks every option and fills in defaults; a TypeError quotes whatever is wrong. */
export function resolveOptions(options: MemcacheStoreOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected options to be an object, got ${quote(options)}`)
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) throw new TypeError(`Unknown option \`${name}\`; known options: ${[...KNOWN_OPTIONS].join(', ')}`)
  }
  const { servers, client, memjs: memjsOptions, logger } = options
  const prefix = options.prefix ?? DEFAULTS.prefix
  const ttl = options.ttl ?? DEFAULTS.ttl
  const serializer = options.serializer ?? DEFAULTS.serializer
  const timeout = options.timeout ?? DEFAULTS.timeout
  const maxItemSize = options.maxItemSize ?? DEFAULTS.maxItemSize
  const touchAfter = options.touchAfter ?? DEFAULTS.touchAfter

  const serverList = servers === undefined ? undefined : checkServers(servers)
  const credentials = checkCredentials(options.username, options.password, memjsOptions)
  if (client !== undefined) {
    if (typeof client !== 'object' || client === null || !Array.isArray((client as { servers?: unknown }).servers)) {
      throw new TypeError(`Expected \`client\` to be a memjs Client, got ${quote(client)}`)
    }
    if (servers !== undefined || memjsOptions !== undefined || credentials !== undefined) {
      throw new TypeError(
        'Pass either `client` or `servers`/`username`/`password`/`memjs`, not both: an existing client brings its own servers and options',
      )
    }
  }
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${quote(prefix)}`)
  const prefixProblem = prefix === '' ? undefined : keyProblem(prefix)
  if (prefixProblem !== undefined)
    throw new TypeError(`Expected \`prefix\` to be usable in a memcached key, got ${quote(prefix)}: it ${prefixProblem}`)
  if (typeof ttl !== 'function' && !(typeof ttl === 'number' && Number.isFinite(ttl) && ttl >= 0)) {
    throw new TypeError(`Expected \`ttl\` to be a non-negative number of seconds or a function returning one, got ${quote(ttl)}`)
  }
  if (typeof serializer?.stringify !== 'function' || typeof serializer?.parse !== 'function') {
    throw new TypeError(`Expected \`serializer\` to have \`stringify\` and \`parse\` functions, got ${quote(serializer)}`)
  }
  const disableTouch = checkBoolean('disableTouch', options.disableTouch ?? DEFAULTS.disableTouch)
  const failOpen = checkBoolean('failOpen', options.failOpen ?? DEFAULTS.failOpen)
  const merge = checkBoolean('merge', options.merge ?? DEFAULTS.merge)
  if (!(typeof touchAfter === 'number' && Number.isFinite(touchAfter) && touchAfter >= 0)) {
    throw new TypeError(`Expected \`touchAfter\` to be a non-negative number of seconds, got ${quote(touchAfter)}`)
  }
  if (!(typeof timeout === 'number' && Number.isFinite(timeout) && timeout > 0)) {
    throw new TypeError(`Expected \`timeout\` to be a positive number of milliseconds, got ${quote(timeout)}`)
  }
  if (!(Number.isSafeInteger(maxItemSize) && maxItemSize >= 1024)) {
    throw new TypeError(`Expected \`maxItemSize\` to be a whole number of bytes of at least 1024, got ${quote(maxItemSize)}`)
  }
  if (memjsOptions !== undefined && (typeof memjsOptions !== 'object' || memjsOptions === null)) {
    throw new TypeError(`Expected \`memjs\` to be an object of memjs client options, got ${quote(memjsOptions)}`)
  }
  if (memjsOptions?.failover) {
    throw new TypeError(
      '`memjs.failover` is not supported: moving a dead server\'s sessions to another server serves stale sessions when it returns (see the README, "Running on a cluster")',
    )
  }
  if (logger !== undefined && logger !== false && typeof (logger as Logger | null)?.warn !== 'function') {
    throw new TypeError(`Expected \`logger\` to have a \`warn\` method, or to be false, got ${quote(logger)}`)
  }

  return {
    servers: serverList?.servers,
    weights: serverList?.weights,
    credentials,
    client,
    prefix,
    ttl: typeof ttl === 'number' ? Math.ceil(ttl) : ttl,
    serializer,
    disableTouch,
    touchAfter,
    failOpen,
    merge,
    timeout,
    maxItemSize,
    memjs: memjsOptions ?? {},
    logger: logger === false ? undefined : (logger ?? console),
    secrets: options.secret === undefined ? undefined : checkSecrets(options.secret),
  }
}

/**
 * The servers as memjs wants them (one comma-separated string without spaces) and their weights.
 * memjs splits `user:pass@host:port` on ':' and '@', so neither may appear in a username or password
 * given this way, and IPv6 literals cannot be expressed.
 */
function checkServers(servers: unknown): { servers: string; weights: number[] | undefined } {
  const list = typeof servers === 'string' ? servers.split(',') : servers
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`Expected \`servers\` to be a "host:port,host:port" string or an array of "host:port", got ${quote(servers)}`)
  }
  const addresses: string[] = []
  const weights: number[] = []
  for (const entry of list) {
    const weighted = typeof entry === 'object' && entry !== null
    const address: unknown = weighted ? (entry as WeightedServer).address : entry
    const weight: unknown = weighted ? ((entry as WeightedServer).weight ?? 1) : 1
    if (typeof address !== 'string' || !isServerAddress(address.trim())) {
      throw new TypeError(
        `Expected each of \`servers\` to look like "host:port", "user:pass@host:port" or { address: "host:port", weight: 2 }, got ${quote(withoutPassword(entry))}`,
      )
    }
    if (weighted) {
      const unknown = Object.keys(entry).filter((name) => name !== 'address' && name !== 'weight')
      if (unknown.length > 0) throw new TypeError(`Unknown field \`${unknown[0]}\` in a \`servers\` entry; known fields: address, weight`)
    }
    if (!(typeof weight === 'number' && Number.isFinite(weight) && weight > 0)) {
      throw new TypeError(`Expected the weight of server ${JSON.stringify(address)} to be a positive number, got ${quote(weight)}`)
    }
    addresses.push(address.trim())
    weights.push(weight)
  }
  return { servers: addresses.join(','), weights: weights.every((weight) => weight === 1) ? undefined : weights }
}

/** A `servers` entry as it may appear in a message: the password replaced by `***`. */
function withoutPassword(entry: unknown): unknown {
  const hide = (address: unknown) => (typeof address === 'string' ? address.replace(/^([^@:]*):.*@/, '$1:***@') : address)
  return typeof entry === 'object' && entry !== null ? { ...entry, address: hide((entry as WeightedServer).address) } : hide(entry)
}

function isServerAddress(address: string): boolean {
  if (!SERVER_PATTERN.test(address)) return false
  const at = address.lastIndexOf('@')
  if (at >= 0 && address.slice(0, at).split(':').length !== 2) return false
  const port = /:(\d+)$/.exec(address)?.[1]
  return port === undefined || (Number(port) >= 1 && Number(port) <= 65535)
}

function checkCredentials(username: unknown, password: unknown, memjsOptions: unknown): ResolvedOptions['credentials'] {
  if (username === undefined && password === undefined) return undefined
  if (typeof username !== 'string' || username === '' || typeof password !== 'string' || password === '') {
    throw new TypeError(
      `Expected \`username\` and \`password\` to be given together as non-empty strings, got username ${quote(username)} and password of type ${password === null ? 'null' : typeof password}`,
    )
  }
  const fromMemjs = memjsOptions as { username?: unknown; password?: unknown } | undefined
  if (fromMemjs?.username !== undefined || fromMemjs?.password !== undefined) {
    throw new TypeError('Give SASL credentials once: either `username`/`password` or `memjs.username`/`memjs.password`')
  }
  return { username, password }
}

/** The secrets as a non-empty array of non-empty strings. Messages never quote a secret. */
function checkSecrets(secret: unknown): string[] {
  const list = Array.isArray(secret) ? secret : [secret]
  const bad = list.findIndex((entry) => typeof entry !== 'string' || entry === '')
  if (list.length === 0 || bad >= 0) {
    const got = list.length === 0 ? 'an empty array' : describeSecret(list[bad], Array.isArray(secret) ? bad : undefined)
    throw new TypeError(`Expected \`secret\` to be a non-empty string or a non-empty array of them, got ${got}`)
  }
  return list as string[]
}

function describeSecret(value: unknown, index: number | undefined): string {
  const what = value === '' ? 'an empty string' : value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`
  return index === undefined ? what : `${what} at index ${index}`
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
