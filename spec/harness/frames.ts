// memcached's binary-protocol frames written and read by the tests themselves, field by field as
// doc/protocol-binary.txt lays them out (a 24-byte header, then extras, key, value), independently
// of lib/: the reader specs build their replies with it, and the scripted peer reads requests and
// answers with it. binary-reader.spec.ts checks these frames against bytes real memcached sent.

export const REQUEST_MAGIC = 0x80
export const RESPONSE_MAGIC = 0x81
export const HEADER_BYTES = 24

/** The opcodes the store sends, and the SASL ones. */
export const OPCODES = {
  set: 0x01,
  add: 0x02,
  replace: 0x03,
  delete: 0x04,
  noop: 0x0a,
  getk: 0x0c,
  touch: 0x1c,
  gatk: 0x23,
} as const

export interface BinaryFrame {
  opcode: number
  /** Response status (a reply) or vbucket (a request); 0 unless given. */
  status?: number
  opaque?: number
  cas?: bigint
  extras?: Buffer
  key?: string | Buffer
  value?: string | Buffer
  /** Data type byte (0 unless given). */
  dataType?: number
}

const bytesOf = (data: string | Buffer | undefined): Buffer =>
  data === undefined ? Buffer.alloc(0) : typeof data === 'string' ? Buffer.from(data) : data

/** A frame with the given magic: the header's lengths are those of the parts given. */
function frame(magic: number, fields: BinaryFrame): Buffer {
  const extras = fields.extras ?? Buffer.alloc(0)
  const key = bytesOf(fields.key)
  const value = bytesOf(fields.value)
  const header = Buffer.alloc(HEADER_BYTES)
  header[0] = magic
  header[1] = fields.opcode
  header.writeUInt16BE(key.length, 2)
  header[4] = extras.length
  header[5] = fields.dataType ?? 0
  header.writeUInt16BE(fields.status ?? 0, 6)
  header.writeUInt32BE(extras.length + key.length + value.length, 8)
  header.writeUInt32BE(fields.opaque ?? 0, 12)
  header.writeBigUInt64BE(fields.cas ?? 0n, 16)
  return Buffer.concat([header, extras, key, value])
}

/** A reply frame (magic 0x81). */
export function binaryResponse(fields: BinaryFrame): Buffer {
  return frame(RESPONSE_MAGIC, fields)
}

/** A request frame (magic 0x80). */
export function binaryRequestFrame(fields: BinaryFrame): Buffer {
  return frame(REQUEST_MAGIC, fields)
}

/** 4 bytes of flags or expiry; 8 for both (set, add, replace). */
export function uint32s(...numbers: number[]): Buffer {
  const buf = Buffer.alloc(4 * numbers.length)
  numbers.forEach((n, i) => {
    buf.writeUInt32BE(n, 4 * i)
  })
  return buf
}

/** One binary frame read from the start of `data`, or undefined while it is incomplete. */
export function readBinaryFrame(
  data: Buffer,
): { frame: Required<Omit<BinaryFrame, 'key' | 'value'>> & { key: Buffer; value: Buffer; magic: number }; length: number } | undefined {
  if (data.length < HEADER_BYTES) return undefined
  const length = HEADER_BYTES + data.readUInt32BE(8)
  if (data.length < length) return undefined
  const keyLength = data.readUInt16BE(2)
  const extrasLength = data[4]
  const extrasEnd = HEADER_BYTES + extrasLength
  return {
    length,
    frame: {
      magic: data[0],
      opcode: data[1],
      dataType: data[5],
      status: data.readUInt16BE(6),
      opaque: data.readUInt32BE(12),
      cas: data.readBigUInt64BE(16),
      extras: data.subarray(HEADER_BYTES, extrasEnd),
      key: data.subarray(extrasEnd, extrasEnd + keyLength),
      value: data.subarray(extrasEnd + keyLength, length),
    },
  }
}
