import HashRing from 'hashring'

/** memcached's default port: ketama leaves it out of a server's name when placing it on the ring. */
const DEFAULT_PORT = 11211

/**
 * Where each key lives: ketama consistent hashing (memjs's `hash % servers.length` moves about three
 * keys in four when a fourth server joins three; ketama moves about the new server's share).
 * Returns the index of a key's server in `addresses`; `weights[i]` is the relative share of `addresses[i]`.
 */
export function consistentPlacement(addresses: readonly string[], weights?: readonly number[]): (key: string) => number {
  const indexOf = new Map<string, number>()
  for (const [index, address] of addresses.entries()) {
    if (indexOf.has(address)) {
      throw new TypeError(
        `memcached server ${address} is listed twice; each server may appear once (use a weight to give it a larger share)`,
      )
    }
    indexOf.set(address, index)
  }
  if (addresses.length < 2) return () => 0
  // The ring knows servers by "host:port" (never the credentials), weighted as ketama does: 160
  // points per server on average, in proportion to its weight. With the default port, ketama's
  // point names are "host-i" instead of "host:port-i"; hashring does the same when told the port.
  const ring = new HashRing(Object.fromEntries(addresses.map((address, i) => [address, { weight: weights?.[i] ?? 1 }])), 'md5', {
    'default port': DEFAULT_PORT,
  })
  return (key) => indexOf.get(ring.get(key)) ?? 0
}
