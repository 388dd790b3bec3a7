// ElastiCache auto discovery: the server list comes from a configuration endpoint, polled every
// `interval` with `config get cluster` (engines from 1.4.14; older ones answer `get
// AmazonElastiCache:cluster` with the same body). A version is applied only when it is higher than
// the one in use and names at least one node; a failed poll keeps the list in use (AWS's .NET client
// empties its list after two failed polls; this does not).
import type { Socket } from 'node:net'
import type tls from 'node:tls'
import type { BurstLog } from './log.js'
import type { Credentials } from './memcached/index.js'
import { TextTransport } from './memcached/index.js'
import { debug } from './observability.js'
import type { ServerOption } from './options.js'

export interface DiscoveryOptions {
  host: string
  port: number
  /** Milliseconds between polls. */
  interval: number
  /** How long a poll may take (connecting, authenticating, the answer). */
  timeoutMs: number
  tls: tls.ConnectionOptions | undefined
  credentials: Credentials | undefined
  log: BurstLog
  /** Puts a node list in use. */
  apply(nodes: ServerOption[], version: number): void
}

/** What `diagnostics().discovery` shows. */
export interface DiscoveryState {
  endpoint: string
  /** The configuration version in use; undefined before the first answer. */
  version: number | undefined
  /** When the last poll ended (ms since the epoch). */
  lastPollAt: number | undefined
  /** Why the last poll failed; undefined when it succeeded. */
  lastError: string | undefined
  polls: number
  failures: number
}

/** A configuration body: `<version>\n<host>|<ip>|<port> ...\n`. */
export interface Configuration {
  version: number
  nodes: ServerOption[]
}

/** Before the first answer, how soon a failed poll is retried (doubling up to the interval). */
const FIRST_RETRY_MS = 200

/** The longest answer accepted: a cluster of hundreds of nodes fits in a few kilobytes. */
const MAX_ANSWER_BYTES = 256 * 1024

export class Discovery {
  readonly #options: DiscoveryOptions
  readonly #transport: TextTransport
  #version: number | undefined
  #lastPollAt: number | undefined
  #lastError: string | undefined
  #polls = 0
  #failures = 0
  #timer: NodeJS.Timeout | undefined
  #closed = false
  #polling: Promise<void> | undefined
  /** Resolves at the first node list applied. */
  readonly first: Promise<void>
  #firstApplied: (() => void) | undefined

  constructor(options: DiscoveryOptions) {
    this.#options = options
    this.#transport = new TextTransport({ host: options.host, port: options.port }, options.tls, options.credentials)
    this.first = new Promise((resolve) => {
      this.#firstApplied = resolve
    })
  }

  /** Whether a node list has been applied yet. */
  get answered(): boolean {
    return this.#version !== undefined
  }

  get state(): DiscoveryState {
    return {
      endpoint: `${this.#options.host}:${this.#options.port}`,
      version: this.#version,
      lastPollAt: this.#lastPollAt,
      lastError: this.#lastError,
      polls: this.#polls,
      failures: this.#failures,
    }
  }

  /**
   * Polls now, then every interval. Before the first answer (operations wait for it), a failed poll
   * is retried sooner: after 200 ms, doubling up to the interval.
   */
  start(): void {
    let retry = FIRST_RETRY_MS
    const next = () => {
      if (this.#closed) return
      const wait = this.answered ? this.#options.interval : Math.min(this.#options.interval, retry)
      retry *= 2
      this.#timer = setTimeout(() => void this.poll().finally(next), wait)
      this.#timer.unref()
    }
    void this.poll().finally(next)
  }

  /** One poll (a poll in progress is joined, not doubled). */
  poll(): Promise<void> {
    this.#polling ??= this.#poll().finally(() => {
      this.#polling = undefined
    })
    return this.#polling
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearTimeout(this.#timer)
  }

  async #poll(): Promise<void> {
    const endpoint = `${this.#options.host}:${this.#options.port}`
    this.#polls++
    try {
      const configuration = await this.#ask()
      this.#lastPollAt = Date.now()
      this.#lastError = undefined
      this.#options.log.recovered('discovery')
      if (configuration.nodes.length === 0) {
        debug('discovery: %s gave version %d with no node: ignored', endpoint, configuration.version)
        return
      }
      if (this.#version !== undefined && configuration.version <= this.#version) return
      debug('discovery: %s gave version %d: %d node(s)', endpoint, configuration.version, configuration.nodes.length)
      this.#options.apply(configuration.nodes, configuration.version)
      const first = this.#version === undefined
      this.#version = configuration.version
      if (first) this.#firstApplied?.()
    } catch (err) {
      this.#failures++
      this.#lastPollAt = Date.now()
      this.#lastError = (err as Error).message
      debug('discovery: polling %s failed: %s', endpoint, this.#lastError)
      const keeping = this.#version === undefined ? 'no server list yet' : `keeping version ${this.#version}`
      this.#options.log.report('discovery', `polling the configuration endpoint ${endpoint} failed (${this.#lastError}); ${keeping}`)
    }
  }

  /** Opens a connection, asks `config get cluster`, falls back to `get AmazonElastiCache:cluster`. */
  #ask(): Promise<Configuration> {
    const { timeoutMs } = this.#options
    return new Promise((resolve, reject) => {
      let socket: Socket | undefined
      let settled = false
      const finish = (outcome: () => void) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        attempt.abort()
        socket?.destroy()
        outcome()
      }
      const fail = (reason: string) => finish(() => reject(new Error(reason)))
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs)
      const attempt = this.#transport.open({
        ready: (opened) => {
          socket = opened
          let text = ''
          let legacy = false
          opened.on('error', (err) => fail(err.message))
          opened.on('close', () => fail('the endpoint closed the connection before answering'))
          opened.on('data', (chunk: Buffer) => {
            text += chunk.toString('latin1')
            if (text.length > MAX_ANSWER_BYTES) return fail(`an answer longer than ${MAX_ANSWER_BYTES} bytes`)
            if (text === 'ERROR\r\n' && !legacy) {
              // Engines before 1.4.14 know only the old key.
              legacy = true
              text = ''
              opened.write('get AmazonElastiCache:cluster\r\n')
              return
            }
            if (text === 'ERROR\r\n' || text === 'END\r\n') {
              return fail(
                'the endpoint knows neither `config get cluster` nor `get AmazonElastiCache:cluster`: it is not an ElastiCache configuration endpoint (plain memcached has no auto discovery; list the servers in `servers` instead)',
              )
            }
            if (!text.endsWith('END\r\n')) return
            try {
              const configuration = parseConfiguration(text, this.#options.tls !== undefined)
              finish(() => resolve(configuration))
            } catch (err) {
              fail((err as Error).message)
            }
          })
          opened.write('config get cluster\r\n')
        },
        failed: (_code, reason) => fail(reason),
      })
    })
  }
}

/**
 * `CONFIG cluster 0 <bytes>\r\n<version>\n<host>|<ip>|<port> ...\n\r\nEND\r\n` (or `VALUE
 * AmazonElastiCache:cluster 0 <bytes>` for the old key): the version, and the nodes, by IP when the
 * IP is given, else by host name (`byName`: by host name, what TLS certificates name).
 */
export function parseConfiguration(text: string, byName = false): Configuration {
  const header = /^(?:CONFIG cluster|VALUE AmazonElastiCache:cluster) \d+ (\d+)\r\n/.exec(text)
  if (!header) throw new Error(`not a cluster configuration: ${JSON.stringify(text.slice(0, 80))}`)
  const body = text.slice(header[0].length, header[0].length + Number(header[1]))
  const [versionLine, nodesLine = ''] = body.split('\n')
  const version = Number(versionLine.trim())
  if (!Number.isSafeInteger(version) || version < 0)
    throw new Error(`a configuration version that is not a number: ${JSON.stringify(versionLine)}`)
  const nodes: ServerOption[] = []
  for (const entry of nodesLine.trim().split(/\s+/)) {
    if (entry === '') continue
    const [host, ip, port] = entry.split('|')
    const portNumber = Number(port)
    if (!host && !ip) throw new Error(`a node without host or IP: ${JSON.stringify(entry)}`)
    if (!Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535)
      throw new Error(`a node without a valid port: ${JSON.stringify(entry)}`)
    nodes.push({ host: (byName ? host : ip) || host || ip, port: portNumber, weight: 1, credentials: undefined })
  }
  return { version, nodes }
}
