// memcached's binary protocol: the requests the store sends and a reader that checks every reply
// before trusting it. memjs's own parser keeps its buffer across reconnects (a reply cut by a dead
// connection swallowed every later one) and matches replies by opaque alone (a proxy that swapped two
// replies handed one user another's session); this reader starts afresh with every connection and
// checks magic, opcode, opaque, length and, for reads, the echoed key.
import type { Command, CommandName, Pending, Reply, ReplyHandlers, ReplyStatus, WireProtocol } from './wire.js'

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

const NO_EXTRAS: Buffer = Buffer.alloc(0)

/** One binary-protocol request in a single buffer (header, extras, key, value). */
export function binaryRequest(opcode: number, key: string, opaque: number, extras = NO_EXTRAS, value?: Buffer, cas = 0n): Buffer {
  const buf = frame(opcode, key, opaque, extras.length, value, cas)
  extras.copy(buf, HEADER_BYTES)
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
  switch (name) {
    case 'get':
      return frame(Opcode.getk, key, opaque, 0, undefined, 0n)
    case 'gat':
    case 'touch': {
      // 4 bytes of extras: the expiry.
      const buf = frame(OPCODE_OF[name], key, opaque, 4, undefined, 0n)
      buf.writeUInt32BE(command.expiry ?? 0, HEADER_BYTES)
      return buf
    }
    case 'delete':
      return frame(Opcode.delete, key, opaque, 0, undefined, command.cas ?? 0n)
    case 'noop':
      return frame(Opcode.noop, '', opaque, 0, undefined, 0n)
    default: {
      // SET, ADD, REPLACE: 4 bytes of flags (always 0: the store keeps nothing in them), 4 of expiry.
      const buf = frame(OPCODE_OF[name], key, opaque, 8, command.value, command.cas ?? 0n)
      buf.writeUInt32BE(0, HEADER_BYTES)
      buf.writeUInt32BE(command.expiry ?? 0, HEADER_BYTES + 4)
      return buf
    }
  }
}

function statusOf(status: number): ReplyStatus | undefined {
  switch (status) {
    case Status.ok:
      return 'ok'
    case Status.notFound:
      return 'miss'
    case Status.exists:
    case Status.notStored:
      return 'exists'
    case Status.tooLarge:
      return 'tooLarge'
    case Status.authError:
      return 'authError'
    default:
      return undefined
  }
}

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

/** A first byte that is not the binary magic, explained: most often a server that speaks only text/meta. */
export function describeForeignByte(byte: number): string {
  const shown = `0x${byte.toString(16).padStart(2, '0')}`
  if (byte >= 0x41 && byte <= 0x5a) {
    return `the reply starts with ${shown} ('${String.fromCharCode(byte)}'), text not binary: the server does not accept the binary protocol (memcached -B ascii, ElastiCache Serverless or a proxy); use \`protocol: 'meta'\``
  }
  return `the reply starts with ${shown}, not the binary protocol's magic byte 0x81`
}

/**
 * Reads one connection's replies. Headers are checked as soon as they arrive, so a wrong or
 * oversized reply is refused before its body is waited for; a body is assembled once it is whole.
 */
export function binaryReader(handlers: ReplyHandlers, limit: number): (chunk: Buffer) => void {
  let chunks: Buffer[] = []
  let buffered = 0
  /** Bytes the frame at the start of the buffer needs in all; 0 while its header is not yet read. */
  let needed = 0
  let broken = false

  const fail = (reason: string) => {
    broken = true
    chunks = []
    buffered = 0
    handlers.violation(reason)
  }

  return (chunk: Buffer) => {
    if (broken) return
    chunks.push(chunk)
    buffered += chunk.length
    if (buffered < HEADER_BYTES || buffered < needed) return
    let buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, buffered)
    let offset = 0
    while (buf.length - offset >= HEADER_BYTES) {
      const expected = handlers.expected()
      const problem = checkHeader(buf, offset, expected, limit)
      if (problem !== undefined) return fail(problem)
      const frameBytes = HEADER_BYTES + buf.readUInt32BE(offset + 8)
      if (buf.length - offset < frameBytes) {
        needed = frameBytes
        break
      }
      const reply = replyOf(buf, offset, expected as Pending)
      if (typeof reply === 'string') return fail(reply)
      offset += frameBytes
      needed = 0
      handlers.reply(reply)
      if (broken) return
    }
    if (offset === buf.length) {
      chunks = []
      buffered = 0
    } else {
      buf = buf.subarray(offset)
      chunks = [buf]
      buffered = buf.length
    }
  }
}

/** Why the header at `offset` cannot answer `expected`, or undefined when it can. */
function checkHeader(buf: Buffer, offset: number, expected: Pending | undefined, limit: number): string | undefined {
  if (buf[offset] !== RESPONSE_MAGIC) return describeForeignByte(buf[offset])
  if (expected === undefined) return 'a reply arrived with no request waiting for it'
  const opcode = buf[offset + 1]
  const opaque = buf.readUInt32BE(offset + 12)
  if (opaque !== expected.opaque || opcode !== OPCODE_OF[expected.command]) {
    return `a reply out of order (opcode 0x${opcode.toString(16)}, opaque ${opaque}) where the answer to ${expected.command} (opaque ${expected.opaque}) was due`
  }
  const body = buf.readUInt32BE(offset + 8)
  if (body > limit) return `a reply announcing ${body} bytes, more than any item can hold (${limit})`
  if (buf.readUInt16BE(offset + 2) + buf[offset + 4] > body) return 'a reply whose key and extras exceed its length'
  return undefined
}

function replyOf(buf: Buffer, offset: number, expected: Pending): Reply | string {
  const status = buf.readUInt16BE(offset + 6)
  const keyLength = buf.readUInt16BE(offset + 2)
  const extrasLength = buf[offset + 4]
  const end = offset + HEADER_BYTES + buf.readUInt32BE(offset + 8)
  const keyStart = offset + HEADER_BYTES + extrasLength
  const echoesKey = expected.command === 'get' || expected.command === 'gat'
  // GETK and GATK echo the key on hits and misses alike: a reply for another key is refused.
  if (
    echoesKey &&
    (status === Status.ok || status === Status.notFound) &&
    buf.toString('utf8', keyStart, keyStart + keyLength) !== expected.key
  ) {
    return `a reply for another key where the answer to ${expected.command} of the requested key was due`
  }
  const kind = statusOf(status)
  if (kind === undefined) {
    return {
      status: 'serverError',
      value: undefined,
      cas: 0n,
      message: STATUS_TEXT[status] ?? `status 0x${status.toString(16).padStart(4, '0')}`,
    }
  }
  const hasValue = echoesKey && status === Status.ok
  return {
    status: kind,
    value: hasValue ? buf.subarray(keyStart + keyLength, end) : undefined,
    cas: status === Status.ok ? buf.readBigUInt64BE(offset + 16) : 0n,
    message: undefined,
  }
}

export const binaryProtocol = (limit: number): WireProtocol => ({
  name: 'binary',
  encode,
  reader: (handlers) => binaryReader(handlers, limit),
})
