// The memcached client, as the layer above uses it: one factory and the types it needs. Nothing in
// this folder knows about sessions; failures come back as MemcachedErrors (plain facts), and the
// layer above words them.
import { binaryProtocol } from './binary.js'
import { MemcachedClient, Server } from './client.js'
import type { ClientConfig, ServerConfig } from './config.js'
import { Connection } from './connection.js'
import { MemjsTransport } from './memjs.js'
import { metaProtocol } from './meta.js'
import { TextTransport } from './text-transport.js'
import { WriteBatcher } from './write-batcher.js'

export { type Item, MemcachedClient, Ring, Server, type ServerState, type StorageMode } from './client.js'
export type { ClientConfig, Credentials, DebugLog, Hints, ServerConfig, StateListener } from './config.js'
export type { Patience } from './connection.js'
export { metadump } from './crawler.js'
export { type FailureCode, MemcachedError } from './errors.js'
export { TextTransport } from './text-transport.js'
export { MAX_EXPIRY, type Receiver, type Reply, type RequestScope } from './wire.js'

/**
 * Connections to every server for the chosen protocol (memjs's Server for binary, the client's own
 * sockets for meta), each with its own credentials and TLS, placed on a ketama ring.
 */
export function createClient(config: ClientConfig): MemcachedClient {
  const protocol = config.protocol === 'meta' ? metaProtocol(config.maxItemSize) : binaryProtocol(config.maxItemSize)
  const batcher = new WriteBatcher()
  const silence = silenceHint(config)
  const credentialsHint = config.hints?.credentials
  const make = ({ host, port, credentials: own }: ServerConfig): Server => {
    const credentials = own ?? config.credentials
    const endpoint = { host, port }
    const transport =
      config.protocol === 'meta'
        ? new TextTransport(endpoint, config.tls, credentials, credentialsHint)
        : new MemjsTransport(endpoint, config.tls, credentials, credentialsHint)
    const connection = new Connection({
      transport,
      protocol,
      timeoutMs: config.timeout,
      batcher,
      onStateChange: config.onStateChange,
      debug: config.debug,
      refusedHint: config.hints?.refused,
      silenceHint: silence,
    })
    // Listing keys is a text command: SASL credentials are not token credentials.
    const lister = new TextTransport(endpoint, config.tls, config.protocol === 'meta' ? credentials : undefined, credentialsHint)
    return new Server(host, port, connection, lister)
  }
  return new MemcachedClient(config.protocol, make, config.servers, config.placement)
}

/**
 * Why a server may take connections and never answer the meta protocol. Its no-op (`mn\r\n`) is 4
 * bytes: a -Z server waits for the 5 of a TLS record header, a binary-only one for the 24 of a binary
 * header, so both stay silent. (A binary request is long enough: a -Z server resets the connection
 * at once.)
 */
function silenceHint({ protocol, tls }: ClientConfig): string | undefined {
  if (protocol !== 'meta') return undefined
  const tlsHint = tls ? '' : 'if it expects TLS, set `tls`; '
  return `${tlsHint}if it speaks only the binary protocol (SASL, -B binary), use \`protocol: 'binary'\``
}
