// The owner header of a stored session that belongs to a user (`userOf`): the user's hash and the
// generation of the user's record it was written under (see users.ts). It sits in front of what the
// codec makes (outside encryption), so that a read knows the user's record key without decrypting.

/** Which user a stored session belongs to, and the generation it was written under. */
export interface Owner {
  /** The user's hash (base64url, 43 characters): the record's key without the prefix. */
  user: string
  generation: number
}

const OWNER_MARK = 0x1d
const HASH_BYTES = 32
export const OWNER_HEADER_BYTES = 1 + 8 + HASH_BYTES

/** The stored bytes with the owner header in front. */
export function withOwner(owner: Owner | undefined, payload: Buffer): Buffer {
  if (owner === undefined) return payload
  const value = Buffer.allocUnsafe(OWNER_HEADER_BYTES + payload.length)
  value[0] = OWNER_MARK
  value.writeUInt32BE(Math.floor(owner.generation / 2 ** 32), 1)
  value.writeUInt32BE(owner.generation % 2 ** 32, 5)
  Buffer.from(owner.user, 'base64url').copy(value, 9)
  payload.copy(value, OWNER_HEADER_BYTES)
  return value
}

/** Sets the generation of a value made by `withOwner` (known once the user's record is read). */
export function setGeneration(value: Buffer, generation: number): void {
  value.writeUInt32BE(Math.floor(generation / 2 ** 32), 1)
  value.writeUInt32BE(generation % 2 ** 32, 5)
}

/** Whether two owners are the same user and generation. */
export function sameOwner(a: Owner | undefined, b: Owner | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.user === b.user && a.generation === b.generation)
}

/** The owner header of stored bytes, if any, and what follows it. */
export function readOwner(value: Buffer): { owner: Owner | undefined; payload: Buffer } {
  if (value.length < OWNER_HEADER_BYTES || value[0] !== OWNER_MARK) return { owner: undefined, payload: value }
  const generation = value.readUInt32BE(1) * 2 ** 32 + value.readUInt32BE(5)
  const user = value.subarray(9, OWNER_HEADER_BYTES).toString('base64url')
  return { owner: { user, generation }, payload: value.subarray(OWNER_HEADER_BYTES) }
}
