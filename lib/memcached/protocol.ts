// The few pieces of memcached's binary protocol the store sends itself. memjs's own methods
// cannot carry a CAS value or item flags, so requests are built here and written through memjs.

export const Opcode = {
  get: 0x00,
  set: 0x01,
  add: 0x02,
  replace: 0x03,
  delete: 0x04,
  noop: 0x0a,
  touch: 0x1c,
} as const

export const Status = {
  ok: 0x0000,
  notFound: 0x0001,
  exists: 0x0002,
  tooLarge: 0x0003,
  invalidArguments: 0x0004,
  notStored: 0x0005,
  authError: 0x0020,
} as const

const STATUS_TEXT: Record<number, string> = {
  3: 'value too large',
  4: 'invalid arguments',
  5: 'item not stored',
  32: 'authentication required or failed',
  129: 'unknown command',
  130: 'out of memory',
  131: 'not supported',
  132: 'internal error',
  133: 'busy',
  134: 'temporary failure',
}

export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? `status 0x${status.toString(16).padStart(4, '0')}`
}

const REQUEST_MAGIC = 0x80
export const RESPONSE_MAGIC = 0x81
const HEADER_BYTES = 24

/** An 8-byte CAS value of zeros: "no CAS check". */
export const NO_CAS: Buffer = Buffer.alloc(8)

/** One binary-protocol request in a single buffer (header, extras, key, value). */
export function buildRequest(opcode: number, key: string, opaque: number, extras?: Buffer, value?: Buffer, cas?: Buffer): Buffer {
  const keyBytes = Buffer.byteLength(key)
  const extrasBytes = extras?.length ?? 0
  const valueBytes = value?.length ?? 0
  const buf = Buffer.allocUnsafe(HEADER_BYTES + extrasBytes + keyBytes + valueBytes)
  buf[0] = REQUEST_MAGIC
  buf[1] = opcode
  buf.writeUInt16BE(keyBytes, 2)
  buf[4] = extrasBytes
  buf[5] = 0 // data type
  buf.writeUInt16BE(0, 6) // vbucket
  buf.writeUInt32BE(extrasBytes + keyBytes + valueBytes, 8)
  buf.writeUInt32BE(opaque, 12)
  ;(cas ?? NO_CAS).copy(buf, 16)
  let offset = HEADER_BYTES
  if (extras) offset += extras.copy(buf, offset)
  offset += buf.write(key, offset)
  if (value) value.copy(buf, offset)
  return buf
}

/** Extras of SET/ADD/REPLACE: 4 bytes of flags (always 0: the store keeps nothing in them), 4 bytes of expiry. */
export function storageExtras(expiry: number): Buffer {
  const extras = Buffer.allocUnsafe(8)
  extras.writeUInt32BE(0, 0)
  extras.writeUInt32BE(expiry, 4)
  return extras
}

/** Extras of TOUCH: 4 bytes of expiry. */
export function touchExtras(expiry: number): Buffer {
  const extras = Buffer.allocUnsafe(4)
  extras.writeUInt32BE(expiry, 0)
  return extras
}
