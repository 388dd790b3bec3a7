import type tls from 'node:tls'
import type { MemcachedError } from './errors.js'

export interface Credentials {
  username: string
  password: string
}

/** One server of the ring. */
export interface ServerConfig {
  host: string
  port: number
  /** Relative share of keys (ketama weighting). */
  weight: number
  /** Its own credentials (they win over the client's). */
  credentials: Credentials | undefined
}

/** Told when a server starts failing (its back-off begins) and when it answers again. */
export type StateListener = (address: string, change: 'down' | 'up', failure?: MemcachedError) => void

/** A `debug`-style logger: a format string and its arguments. */
export type DebugLog = (format: string, ...args: unknown[]) => void

export interface ClientConfig {
  servers: readonly ServerConfig[]
  /** `binary` (memjs's Server, SASL) or `meta` (memcached's meta commands, token auth). */
  protocol: 'binary' | 'meta'
  /** TLS for every connection; undefined for plain TCP. */
  tls: tls.ConnectionOptions | undefined
  /** Credentials for servers without their own. */
  credentials: Credentials | undefined
  /** Every request settles within this many milliseconds. */
  timeout: number
  /** memcached's item size limit (-I): a value larger than this is skipped and its read fails (ETOOLARGE). */
  maxItemSize: number
  /** Where a key lives (an index into `servers`); ketama consistent hashing when absent. */
  placement?: (key: string) => number
  /** Words added to failures' reasons, for the people who configure the client. */
  hints?: Hints
  onStateChange?: StateListener
  debug?: DebugLog
}

export interface Hints {
  /** Added to the reason of a refused connection: what to check (where the address came from, say). */
  refused?: string
  /** Added when a server wants credentials and none are configured: where they can be given. */
  credentials?: string
}
