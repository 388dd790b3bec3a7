import type { Credentials, ResolvedOptions } from '../options.js'
import { binaryProtocol } from './binary.js'
import { Connection, type StateListener } from './connection.js'
import { Memcached, type Server } from './memcached.js'
import { MemjsTransport } from './memjs.js'
import { MetaTransport, metaProtocol } from './meta.js'
import { consistentPlacement } from './ring.js'
import { replyLimit } from './wire.js'
import { WriteBatcher } from './write-batcher.js'

export type AccessOptions = Pick<
  ResolvedOptions,
  'servers' | 'serversFrom' | 'credentials' | 'placement' | 'protocol' | 'tls' | 'timeout' | 'maxItemSize'
>

/**
 * The one way into the memcached layer: connections to every server for the chosen protocol
 * (memjs's Server for binary, the store's own sockets for meta), each with its own credentials
 * and TLS, placed on a ketama ring.
 */
export function createMemcached(options: AccessOptions, onStateChange?: StateListener): Memcached {
  const limit = replyLimit(options.maxItemSize)
  const protocol = options.protocol === 'meta' ? metaProtocol(limit) : binaryProtocol(limit)
  const batcher = new WriteBatcher()
  const hint = connectHint(options)
  const silence = silenceHint(options)
  const servers: Server[] = options.servers.map(({ host, port, credentials: own }) => {
    const credentials: Credentials | undefined = own ?? options.credentials
    const endpoint = { host, port }
    const transport =
      options.protocol === 'meta'
        ? new MetaTransport(endpoint, options.tls, credentials)
        : new MemjsTransport(endpoint, credentials, options.tls)
    return {
      address: `${host}:${port}`,
      host,
      port,
      connection: new Connection({
        transport,
        protocol,
        timeoutMs: options.timeout,
        batcher,
        onStateChange,
        connectHint: hint,
        silenceHint: silence,
      }),
      // Listing keys is a text command: SASL credentials are not token credentials.
      lister: new MetaTransport(endpoint, options.tls, options.protocol === 'meta' ? credentials : undefined),
    }
  })
  const ring = consistentPlacement(
    servers.map((server) => server.address),
    options.servers.map((server) => server.weight),
  )
  const custom = options.placement
  // A user's placement that returns no valid index falls back to the ring rather than to no server.
  const placement = custom ? (key: string) => (servers[custom(key)] === undefined ? ring(key) : custom(key)) : ring
  return new Memcached(options.protocol, servers, placement)
}

/** What a refused connection's message adds: where the address came from, and how to change it. */
function connectHint({ serversFrom }: AccessOptions): string | undefined {
  switch (serversFrom) {
    case 'default':
      return 'no servers were configured, so the default localhost:11211 was used: set the `servers` option or MEMCACHE_SERVERS'
    case 'MEMCACHIER_SERVERS':
    case 'MEMCACHE_SERVERS':
      return `the address came from the ${serversFrom} environment variable`
    default:
      return undefined
  }
}

/**
 * Why a server may take connections and never answer the meta protocol. Its no-op (`mn\r\n`, what
 * ready() sends) is 4 bytes: a -Z server waits for the 5 of a TLS record header, a binary-only one for
 * the 24 of a binary header, so both stay silent. (A binary request is long enough: a -Z server resets
 * the connection at once, and ready() already suggests meta when a text-only server stays silent.)
 */
function silenceHint({ protocol, tls }: AccessOptions): string | undefined {
  if (protocol !== 'meta') return undefined
  const tlsHint = tls ? '' : 'if it expects TLS, set `tls`; '
  return `${tlsHint}if it speaks only the binary protocol (SASL, -B binary), use \`protocol: 'binary'\``
}
