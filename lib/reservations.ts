/**
 * What `genid` stores under an ID it reserves: a value no session can have (serialized sessions are
 * text, encrypted ones start with their format byte), so reads treat it as no session.
 */
export const PLACEHOLDER = Buffer.from('\x00express-session-memcache:reserved')

/** How long a reserved ID's placeholder lives in memcached when its ID is never used. */
export const RESERVATION_TTL_SECONDS = 60

/**
 * What the store writes over a session whose ID turned out to be taken by a new session (a
 * collision): like the placeholder, no session can have it, so reads treat it as no session, and an
 * ADD under the ID keeps failing while it lives.
 */
export const COLLISION_MARKER = Buffer.from('\x00express-session-memcache:collided')

export function isPlaceholder(value: Buffer): boolean {
  return value.length === PLACEHOLDER.length && value[0] === 0 && value.equals(PLACEHOLDER)
}

/** A value the store wrote that is not a session: a reservation's placeholder or a collision marker. */
export function isMarker(value: Buffer): boolean {
  return value[0] === 0 && (isPlaceholder(value) || (value.length === COLLISION_MARKER.length && value.equals(COLLISION_MARKER)))
}
