// memcached's binary protocol: the requests the client sends and the checks every reply passes before
// it is trusted. memjs's own parser keeps its buffer across reconnects (a reply cut by a dead
// connection swallowed every later one) and matches replies by opaque alone (a proxy that swapped two
// replies handed one user another's session); here each connection gets a new reader, and every reply
// is checked for magic, opcode, opaque, its shape (extras, key, body) and, for reads, the echoed key.
import { echoesKey, type Frame, type FrameParser, frameReader } from './frames.js'
import { type Command, type CommandName, type Expected, MAX_EXPIRY, MAX_VALUE_BYTES, type Reply, type WireProtocol } from './wire.js'

const REQUEST_MAGIC = 0x80
const RESPONSE_MAGIC = 0x81
const HEADER_BYTES = 24

/** GETK and GATK echo the key, so a reply can be checked against the request it answers. */
export const Opcode = {
  set: 0x01,
  add: 0x02,
  replace: 0x03,
  delete: 0x04,
  noop: 0x0a,
  getk: 0x0c,
  touch: 0x1c,
  gatk: 0x23,
  saslList: 0x20,
  saslAuth: 0x21,
} as const

const OPCODE_OF: Record<CommandName, number> = {
  get: Opcode.getk,
  gat: Opcode.gatk,
  set: Opcode.set,
  cas: Opcode.set,
  add: Opcode.add,
  replace: Opcode.replace,
  delete: Opcode.delete,
  touch: Opcode.touch,
  noop: Opcode.noop,
}

export const Status = {
  ok: 0x0000,
  notFound: 0x0001,
  exists: 0x0002,
  tooLarge: 0x0003,
  notStored: 0x0005,
  authError: 0x0020,
  authContinue: 0x0021,
} as const

/** memcached's error replies carry a short text ("Not found", "Out of memory storing object"); anything longer is not one. */
const MAX_MESSAGE_BYTES = 1024

const STATUS_TEXT: Record<number, string> = {
  4: 'invalid arguments',
  32: 'authentication required or failed',
  129: 'unknown command',
  130: 'out of memory',
  131: 'not supported',
  132: 'internal error',
  133: 'busy',
  134: 'temporary failure',
}

/** One binary-protocol request in a single buffer (header, extras, key, value). */
export function binaryRequest(opcode: number, key: string, opaque: number, extras?: Buffer, value?: Buffer, cas = 0n): Buffer {
  const buf = frame(opcode, key, opaque, extras?.length ?? 0, value, cas)
  extras?.copy(buf, HEADER_BYTES)
  return buf
}

/**
 * A request's buffer with its header, key and value written, and `extrasLength` bytes left for
 * the extras right after the header (the caller writes them: no buffer of their own per request).
 */
function frame(opcode: number, key: string, opaque: number, extrasLength: number, value: Buffer | undefined, cas: bigint): Buffer {
  const keyBytes = Buffer.byteLength(key)
  const valueBytes = value === undefined ? 0 : value.length
  const buf = Buffer.allocUnsafe(HEADER_BYTES + extrasLength + keyBytes + valueBytes)
  buf[0] = REQUEST_MAGIC
  buf[1] = opcode
  buf.writeUInt16BE(keyBytes, 2)
  buf[4] = extrasLength
  buf[5] = 0 // data type
  buf.writeUInt16BE(0, 6) // vbucket
  buf.writeUInt32BE(extrasLength + keyBytes + valueBytes, 8)
  buf.writeUInt32BE(opaque, 12)
  if (cas === 0n) {
    buf.writeUInt32BE(0, 16)
    buf.writeUInt32BE(0, 20)
  } else buf.writeBigUInt64BE(cas, 16)
  const offset = HEADER_BYTES + extrasLength
  buf.write(key, offset)
  if (value !== undefined) value.copy(buf, offset + keyBytes)
  return buf
}

function encode(command: Command, opaque: number): Buffer {
  const { name, key } = command
  const expiry = Math.min(command.expiry ?? 0, MAX_EXPIRY)
  switch (name) {
    case 'get':
      return frame(Opcode.getk, key, opaque, 0, undefined, 0n)
    case 'gat':
    case 'touch': {
      // 4 bytes of extras: the expiry.
      const buf = frame(OPCODE_OF[name], key, opaque, 4, undefined, 0n)
      buf.writeUInt32BE(expiry, HEADER_BYTES)
      return buf
    }
    case 'delete':
      return frame(Opcode.delete, key, opaque, 0, undefined, command.cas ?? 0n)
    case 'noop':
      return frame(Opcode.noop, '', opaque, 0, undefined, 0n)
    default: {
      // SET, ADD, REPLACE: 4 bytes of flags (always 0: nothing is kept in them), 4 of expiry.
      const buf = frame(OPCODE_OF[name], key, opaque, 8, command.value, command.cas ?? 0n)
      buf.writeUInt32BE(0, HEADER_BYTES)
      buf.writeUInt32BE(expiry, HEADER_BYTES + 4)
      return buf
    }
  }
}

/** A first byte that is not the binary magic, explained: most often a server that speaks only text/meta. */
export function describeForeignByte(byte: number): string {
  const shown = `0x${byte.toString(16).padStart(2, '0')}`
  if (byte >= 0x41 && byte <= 0x5a) {
    return `the reply starts with ${shown} ('${String.fromCharCode(byte)}'), text not binary: the server does not accept the binary protocol (memcached -B ascii, ElastiCache Serverless or a proxy); use \`protocol: 'meta'\``
  }
  return `the reply starts with ${shown}, not the binary protocol's magic byte 0x81`
}

/**
 * The shape each reply may have, by the request it answers and its status (the allow-list):
 * - a read's hit (GETK, GATK): 4 bytes of extras (the flags), the echoed key, the value;
 * - a read's miss: the echoed key alone;
 * - TOUCH's success: nothing, or the 4 bytes of flags;
 * - any other success: nothing (the CAS is in the header);
 * - any error: no extras, no key, and at most a short message as the body.
 */
function parseBinary(maxItemSize: number): FrameParser {
  return (buf: Buffer, offset: number, expected: Expected | undefined, out: Frame): Frame => {
    // The first byte is checked at once: a text reply (a server that speaks only text) may never reach 24 bytes.
    if (buf[offset] !== RESPONSE_MAGIC) return out.violated(describeForeignByte(buf[offset]))
    if (buf.length - offset < HEADER_BYTES) return out.need(offset + HEADER_BYTES)
    if (expected === undefined) return out.violated('a reply arrived with no request waiting for it')
    const opcode = buf[offset + 1]
    const opaque = buf.readUInt32BE(offset + 12)
    const command = expected.command
    if (opaque !== expected.opaque || opcode !== OPCODE_OF[command]) {
      return out.violated(
        `a reply out of order (opcode 0x${opcode.toString(16)}, opaque ${opaque}) where the answer to ${command} (opaque ${expected.opaque}) was due`,
      )
    }
    if (buf[offset + 5] !== 0) return out.violated(`a reply with data type ${buf[offset + 5]}, where memcached always sends 0 (raw bytes)`)
    const keyLength = buf.readUInt16BE(offset + 2)
    const extrasLength = buf[offset + 4]
    const status = buf.readUInt16BE(offset + 6)
    const body = buf.readUInt32BE(offset + 8)
    if (keyLength + extrasLength > body) return out.violated('a reply whose key and extras exceed its length')
    const reads = command === 'get' || command === 'gat'
    const problem = shapeProblem(command, reads, status, extrasLength, keyLength, body - keyLength - extrasLength)
    if (problem !== undefined) return out.violated(problem)
    const valueLength = body - keyLength - extrasLength
    const keyStart = offset + HEADER_BYTES + extrasLength
    // GETK and GATK echo the key on hits and misses alike; it is compared before the value is
    // waited for (or skipped).
    const echoes = reads && (status === Status.ok || status === Status.notFound)
    if (echoes && buf.length < keyStart + keyLength) return out.need(keyStart + keyLength)
    if (echoes && !echoesKey(buf, keyStart, keyStart + keyLength, expected.key)) {
      return out.violated(`a reply for another key where the answer to ${command} of the requested key was due`)
    }
    const end = offset + HEADER_BYTES + body
    if (reads && status === Status.ok && valueLength > maxItemSize) {
      const reply: Reply = {
        status: 'tooLarge',
        value: undefined,
        cas: 0n,
        message: `the stored value is ${valueLength} bytes, more than maxItemSize (${maxItemSize}) allows; it was skipped unread`,
      }
      return out.skipped(reply, keyStart + keyLength, valueLength, undefined)
    }
    if (buf.length < end) return out.need(end)
    return out.replied(replyOf(buf, offset, status, reads, keyStart + keyLength, end), end)
  }
}

/** Why a reply's shape does not fit the request it answers, or undefined when it does. */
function shapeProblem(
  command: CommandName,
  reads: boolean,
  status: number,
  extras: number,
  key: number,
  value: number,
): string | undefined {
  if (value > MAX_VALUE_BYTES) return `a reply announcing ${value} bytes, more than any memcached item can hold`
  const shape = `${extras} bytes of extras, ${key} of key and ${value} of value`
  if (status === Status.ok) {
    if (reads) return extras === 4 ? undefined : `a hit with ${shape}; a read's hit carries 4 bytes of flags`
    if (command === 'touch' && (extras === 0 || extras === 4) && key === 0 && value === 0) return undefined
    return extras === 0 && key === 0 && value === 0 ? undefined : `a success answering ${command} with ${shape}, where nothing was due`
  }
  if (reads && status === Status.notFound) {
    return extras === 0 && value === 0 ? undefined : `a miss with ${shape}, where only the echoed key was due`
  }
  if (extras !== 0 || key !== 0 || value > MAX_MESSAGE_BYTES) {
    return `an error reply (status 0x${status.toString(16).padStart(4, '0')}) with ${shape}, where at most a short message was due`
  }
  return undefined
}

function replyOf(buf: Buffer, offset: number, status: number, reads: boolean, valueStart: number, end: number): Reply {
  const cas = status === Status.ok ? buf.readBigUInt64BE(offset + 16) : 0n
  switch (status) {
    case Status.ok:
      return { status: 'ok', value: reads ? buf.subarray(valueStart, end) : undefined, cas, message: undefined }
    case Status.notFound:
      return { status: 'miss', value: undefined, cas, message: undefined }
    case Status.exists:
    case Status.notStored:
      return { status: 'exists', value: undefined, cas, message: undefined }
    case Status.tooLarge:
      return { status: 'tooLarge', value: undefined, cas, message: undefined }
    case Status.authError:
      return { status: 'authError', value: undefined, cas, message: undefined }
    default:
      return {
        status: 'serverError',
        value: undefined,
        cas,
        message: STATUS_TEXT[status] ?? `status 0x${status.toString(16).padStart(4, '0')}`,
      }
  }
}

/** The binary protocol; read values larger than `maxItemSize` are skipped and answered as `tooLarge`. */
export function binaryProtocol(maxItemSize: number): WireProtocol {
  const parse = parseBinary(maxItemSize)
  return { name: 'binary', encode, reader: (handlers) => frameReader(parse, handlers) }
}
