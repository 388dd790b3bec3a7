/**
 * What `genid` stores under an ID it reserves: a value no session can have (serialized sessions are
 * text, encrypted ones start with their format byte), so reads treat it as no session.
 */
export const PLACEHOLDER = Buffer.from('\x00express-session-memcache:reserved')

/** How long a reserved ID's placeholder lives in memcached when its ID is never used. */
export const RESERVATION_TTL_SECONDS = 60

export function isPlaceholder(value: Buffer): boolean {
  return value.length === PLACEHOLDER.length && value[0] === 0 && value.equals(PLACEHOLDER)
}
