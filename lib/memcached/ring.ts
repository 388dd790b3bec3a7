import HashRing from 'hashring'

/** memcached's default port: ketama leaves it out of a server's name when placing it on the ring. */
const DEFAULT_PORT = 11211

/** Where each key lives: `place` gives the index of its server, `copies` the indexes of the `count` distinct servers that keep its copies (its own first). */
export interface Placement {
  place(key: string): number
  copies(key: string, count: number): number[]
}

/**
 * Ketama consistent hashing (memjs's `hash % servers.length` moves about three keys in four when a
 * fourth server joins three; ketama moves about the new server's share). A key's copies go to its
 * own server and the next distinct servers clockwise on the ring. `weights[i]` is the relative
 * share of `addresses[i]`.
 */
export function consistentPlacement(addresses: readonly string[], weights?: readonly number[]): Placement {
  const indexOf = new Map<string, number>()
  for (const [index, address] of addresses.entries()) {
    if (indexOf.has(address)) {
      throw new TypeError(
        `memcached server ${address} is listed twice; each server may appear once (use a weight to give it a larger share)`,
      )
    }
    indexOf.set(address, index)
  }
  if (addresses.length < 2) return { place: () => 0, copies: () => [0] }
  // The ring knows servers by "host:port" (never the credentials), weighted as ketama does: 160
  // points per server on average, in proportion to its weight. With the default port, ketama's
  // point names are "host-i" instead of "host:port-i"; hashring does the same when told the port.
  const ring = new HashRing(Object.fromEntries(addresses.map((address, i) => [address, { weight: weights?.[i] ?? 1 }])), 'md5', {
    'default port': DEFAULT_PORT,
  })
  return {
    place: (key) => indexOf.get(ring.get(key)) ?? 0,
    copies: (key, count) =>
      (ring.range(key, Math.min(count, addresses.length), true) as string[]).map((address) => indexOf.get(address) ?? 0),
  }
}

/** A placement of the application's own (a memjs client's `getServer`): a key's copies follow its server in list order. */
export function customPlacement(place: (key: string) => number, servers: number, fallback: Placement): Placement {
  // An index that names no server falls back to the ring rather than to no server.
  const owner = (key: string) => {
    const index = place(key)
    return Number.isInteger(index) && index >= 0 && index < servers ? index : fallback.place(key)
  }
  return {
    place: owner,
    copies: (key, count) => {
      const first = owner(key)
      return Array.from({ length: Math.min(count, servers) }, (_, i) => (first + i) % servers)
    },
  }
}
