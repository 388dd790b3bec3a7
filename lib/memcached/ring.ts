import HashRing from 'hashring'
import { type MemjsClient, serverAddress } from './memjs-internals.js'

/** memcached's default port: ketama leaves it out of a server's name when placing it on the ring. */
const DEFAULT_PORT = 11211

/**
 * Replaces memjs's `hash % servers.length` placement (which moves about three keys in four when a
 * fourth server joins three) with ketama consistent hashing: a server joining or leaving moves only
 * about its own share of keys. memjs documents `getServer` as the place for this; it must return an
 * index into `client.servers`. `weights[i]`, when given, is the relative share of `client.servers[i]`.
 */
export function placeKeysByConsistentHashing(client: MemjsClient, weights?: readonly number[]): void {
  const addresses = client.servers.map(serverAddress)
  const indexOf = new Map<string, number>()
  for (const [index, address] of addresses.entries()) {
    if (indexOf.has(address)) {
      throw new TypeError(
        `memcached server ${address} is listed twice; each server may appear once (use a weight to give it a larger share)`,
      )
    }
    indexOf.set(address, index)
  }
  if (addresses.length < 2) return

  // The ring knows servers by "host:port" (never the credentials), weighted as ketama does: 160
  // points per server on average, in proportion to its weight. With the default port, ketama's
  // point names are "host-i" instead of "host:port-i"; hashring does the same when told the port.
  const ring = new HashRing(Object.fromEntries(addresses.map((address, i) => [address, { weight: weights?.[i] ?? 1 }])), 'md5', {
    'default port': DEFAULT_PORT,
  })
  client.getServer = (key: string): number => indexOf.get(ring.get(key)) ?? 0
}
