// memcached's meta protocol (mg, ms, md, mn): for servers that refuse the binary protocol (memcached
// -B ascii, ElastiCache Serverless, memcached's proxy) and for memcached's token authentication (-Y).
// Every request carries an opaque (`O`) and reads ask for the key back (`k`), so each reply is checked
// against the request it answers. Replies are read with one grammar, straight from the bytes: a
// string is made only for what a reply says in words (SERVER_ERROR) and for describing a violation.
import { echoesKey, type Frame, type FrameParser, frameReader } from './frames.js'
import {
  type Command,
  type CommandName,
  type Expected,
  MAX_EXPIRY,
  MAX_VALUE_BYTES,
  type Reply,
  type ReplyStatus,
  type WireProtocol,
} from './wire.js'

/** The longest reply line accepted: memcached's are a few dozen bytes plus the key. */
export const MAX_LINE_BYTES = 2048

const CRLF = Buffer.from('\r\n')
const MODE: Partial<Record<CommandName, string>> = { set: 'MS', cas: 'MS', add: 'ME', replace: 'MR' }

function encode(command: Command, opaque: number): Buffer {
  const { name, key } = command
  const expiry = Math.min(command.expiry ?? 0, MAX_EXPIRY)
  switch (name) {
    case 'get':
      return Buffer.from(`mg ${key} v c k O${opaque}\r\n`)
    case 'gat':
      return Buffer.from(`mg ${key} v c k O${opaque} T${expiry}\r\n`)
    case 'touch':
      return Buffer.from(`mg ${key} k O${opaque} T${expiry}\r\n`)
    case 'delete':
      return Buffer.from(`md ${key} O${opaque}${command.cas ? ` C${command.cas}` : ''}\r\n`)
    case 'noop':
      return Buffer.from('mn\r\n')
    default: {
      const value = command.value ?? Buffer.alloc(0)
      const cas = command.cas ? ` C${command.cas}` : ''
      const line = `ms ${key} ${value.length} T${expiry} c O${opaque} ${MODE[name]}${cas}\r\n`
      const lineBytes = Buffer.byteLength(line)
      const buf = Buffer.allocUnsafe(lineBytes + value.length + 2)
      buf.write(line, 0)
      value.copy(buf, lineBytes)
      CRLF.copy(buf, lineBytes + value.length)
      return buf
    }
  }
}

// Reply codes as their two bytes.
const VA = 0x5641
const HD = 0x4844
const EN = 0x454e
const NS = 0x4e53
const EX = 0x4558
const NF = 0x4e46
const MN = 0x4d4e

/** What a read's reply may return: opaque, key (base64 with `b`), CAS, TTL, client flags, size, and the stale/win marks. */
const READ_FLAGS = 'OkbctfsWXZ'
/** What a write's or a miss's reply may return. */
const WRITE_FLAGS = 'Ockb'
const MISS_FLAGS = 'Okb'

/** The allow-list: for each command, the reply codes it may get (besides SERVER_ERROR), and the flags each may carry. */
const ALLOWED: Record<CommandName, ReadonlyMap<number, string>> = {
  get: new Map([
    [VA, READ_FLAGS],
    [EN, MISS_FLAGS],
  ]),
  gat: new Map([
    [VA, READ_FLAGS],
    [EN, MISS_FLAGS],
  ]),
  touch: new Map([
    [HD, READ_FLAGS],
    [EN, MISS_FLAGS],
  ]),
  set: writeCodes(),
  cas: writeCodes(),
  add: writeCodes(),
  replace: writeCodes(),
  delete: new Map([
    [HD, MISS_FLAGS],
    [NF, MISS_FLAGS],
    [EX, MISS_FLAGS],
  ]),
  noop: new Map([[MN, '']]),
}

function writeCodes(): ReadonlyMap<number, string> {
  return new Map([
    [HD, WRITE_FLAGS],
    [NS, WRITE_FLAGS],
    [EX, WRITE_FLAGS],
    [NF, WRITE_FLAGS],
  ])
}

function statusOf(code: number, command: CommandName): ReplyStatus {
  switch (code) {
    case VA:
    case HD:
    case MN:
      return 'ok'
    case EN:
    case NF:
      return 'miss'
    case NS:
      // Not stored: ADD found the key; REPLACE did not.
      return command === 'replace' ? 'miss' : 'exists'
    default:
      return 'exists'
  }
}

const SERVER_ERROR = Buffer.from('SERVER_ERROR')
const CLIENT_ERROR = Buffer.from('CLIENT_ERROR')

function parseMeta(maxItemSize: number): FrameParser {
  return (buf: Buffer, offset: number, expected: Expected | undefined, out: Frame): Frame => {
    const lineEnd = buf.indexOf(CRLF, offset)
    if (lineEnd < 0 ? buf.length - offset > MAX_LINE_BYTES + 1 : lineEnd - offset > MAX_LINE_BYTES) {
      return out.violated(`a reply line longer than ${MAX_LINE_BYTES} bytes`)
    }
    const lf = buf.indexOf(0x0a, offset)
    if (lf >= 0 && (lineEnd < 0 || lf < lineEnd))
      return out.violated('a reply line ended by LF alone, where memcached ends every line with CRLF')
    if (lineEnd < 0) return out.need(buf.length + 1)
    if (expected === undefined) return out.violated(`a reply arrived with no request waiting for it (${quoted(buf, offset, lineEnd, 60)})`)
    const command = expected.command
    const refusal = errorReply(buf, offset, lineEnd)
    if (refusal !== undefined) return out.replied(refusal, lineEnd + 2)
    const code = lineEnd - offset === 2 || (lineEnd - offset > 2 && buf[offset + 2] === 0x20) ? (buf[offset] << 8) | buf[offset + 1] : -1
    const flags = ALLOWED[command].get(code)
    if (flags === undefined || (code === MN && lineEnd - offset !== 2)) {
      return out.violated(`${quoted(buf, offset, lineEnd, 80)} where the answer to ${command === 'noop' ? 'mn' : command} was due`)
    }
    const reply: Reply = { status: statusOf(code, command), value: undefined, cas: 0n, message: undefined }
    // memcached before 1.6.18 answers a miss with a bare EN, without the O and k it echoes everywhere
    // else: taken as the answer to the oldest request (at worst a miss for the wrong one, never a session).
    if (code === MN || (code === EN && lineEnd - offset === 2)) return out.replied(reply, lineEnd + 2)
    let at = offset + 3
    let length = -1
    if (code === VA) {
      const lengthEnd = tokenEnd(buf, at, lineEnd)
      const announced = digits(buf, at, lengthEnd)
      if (announced === undefined) return out.violated(`a value length that is not a number in ${quoted(buf, offset, lineEnd, 80)}`)
      if (announced > MAX_VALUE_BYTES) return out.violated(`a reply announcing ${announced} bytes, more than any memcached item can hold`)
      length = announced
      at = lengthEnd + 1
    }
    if (!readFlags(buf, offset, at, lineEnd, expected, flags, reply, out)) return out
    if (length < 0) return out.replied(reply, lineEnd + 2)
    if (length > maxItemSize) {
      reply.status = 'tooLarge'
      reply.cas = 0n
      reply.message = `the stored value is ${length} bytes, more than maxItemSize (${maxItemSize}) allows; it was skipped unread`
      return out.skipped(reply, lineEnd + 2, length + 2, CRLF)
    }
    const dataEnd = lineEnd + 2 + length
    if (buf.length < dataEnd + 2) return out.need(dataEnd + 2)
    if (buf[dataEnd] !== 0x0d || buf[dataEnd + 1] !== 0x0a)
      return out.violated('a value not followed by CRLF where its announced length ends')
    reply.value = buf.subarray(lineEnd + 2, dataEnd)
    return out.replied(reply, dataEnd + 2)
  }
}

/** SERVER_ERROR (any command), or CLIENT_ERROR for want of authentication: memcached's refusals in words. */
function errorReply(buf: Buffer, start: number, end: number): Reply | undefined {
  if (startsWith(buf, start, end, SERVER_ERROR)) {
    const message = buf.toString('utf8', start + SERVER_ERROR.length + 1, end)
    return { status: /too large/i.test(message) ? 'tooLarge' : 'serverError', value: undefined, cas: 0n, message }
  }
  if (startsWith(buf, start, end, CLIENT_ERROR) && /unauthenticated|authentication/i.test(buf.toString('latin1', start, end))) {
    return { status: 'authError', value: undefined, cas: 0n, message: buf.toString('utf8', start, end) }
  }
  return undefined
}

/**
 * The flags of the line `buf[lineStart, end)` from `at`: each must be one `flags` allows, the opaque
 * must be the request's, and a read's echoed key its key. The CAS goes into `reply`. False after
 * `out.violated`.
 */
function readFlags(
  buf: Buffer,
  lineStart: number,
  at: number,
  end: number,
  expected: Expected,
  flags: string,
  reply: Reply,
  out: Frame,
): boolean {
  let opaque: number | undefined
  let keyFrom = -1
  let keyTo = -1
  let base64 = false
  /** The flags seen, as bits by their place in `flags`: each may appear once. */
  let seen = 0
  const line = () => quoted(buf, lineStart, end, 80)
  if (buf[end - 1] === 0x20) return violated(out, `a reply line ending in a space: ${line()}`)
  for (; at < end; at++) {
    const last = tokenEnd(buf, at, end)
    const flag = buf[at]
    const place = last === at ? -1 : flags.indexOf(String.fromCharCode(flag))
    const single = flag === 0x62 || flag === 0x57 || flag === 0x58 || flag === 0x5a // b, W, X, Z take no token
    if (place < 0 || (single && last !== at + 1) || (seen & (1 << place)) !== 0) {
      return violated(out, `an unexpected token ${quoted(buf, at, last, 20)} in ${line()}`)
    }
    seen |= 1 << place
    switch (flag) {
      case 0x4f: // O: the opaque, echoed
        opaque = digits(buf, at + 1, last)
        if (opaque !== expected.opaque) {
          const seen = buf.toString('latin1', at + 1, last)
          return violated(out, `a reply out of order (opaque ${seen}) where the answer to opaque ${expected.opaque} was due`)
        }
        break
      case 0x6b: // k: the key, echoed
        keyFrom = at + 1
        keyTo = last
        break
      case 0x62: // b: the echoed key is base64 (it was stored as a binary key)
        base64 = true
        break
      case 0x63: {
        // c: a 64-bit unsigned CAS
        const cas = casOf(buf, at + 1, last)
        if (cas === undefined) return violated(out, `a CAS that is not a number in ${line()}`)
        reply.cas = cas
        break
      }
      case 0x74: // t: the remaining TTL, -1 for none
        if (!isTtl(buf, at + 1, last)) return violated(out, `a TTL that is not a number in ${line()}`)
        break
      case 0x66: // f, s: client flags and size
      case 0x73:
        if (digits(buf, at + 1, last) === undefined) return violated(out, `a flag that is not a number in ${line()}`)
        break
    }
    at = last
  }
  if (opaque === undefined)
    return violated(out, `a reply out of order (opaque missing) where the answer to opaque ${expected.opaque} was due`)
  const command = expected.command
  if ((command === 'get' || command === 'gat' || command === 'touch') && !keyMatches(buf, keyFrom, keyTo, base64, expected.key)) {
    return violated(out, `a reply for another key where the answer to ${command} of the requested key was due`)
  }
  return true
}

function violated(out: Frame, reason: string): false {
  out.violated(reason)
  return false
}

function startsWith(buf: Buffer, start: number, end: number, prefix: Buffer): boolean {
  return end - start >= prefix.length && buf.compare(prefix, 0, prefix.length, start, start + prefix.length) === 0
}

function tokenEnd(buf: Buffer, from: number, end: number): number {
  const space = buf.indexOf(0x20, from)
  return space < 0 || space > end ? end : space
}

/** The decimal number in buf[from, to) (at most 15 digits, exact as a Number), or undefined when it is not one. */
function digits(buf: Buffer, from: number, to: number): number | undefined {
  if (to <= from || to - from > 15) return undefined
  let n = 0
  for (let i = from; i < to; i++) {
    const d = buf[i] - 0x30
    if (d < 0 || d > 9) return undefined
    n = n * 10 + d
  }
  return n
}

const MAX_CAS = 2n ** 64n - 1n

/** A CAS as memcached writes it: a 64-bit unsigned number in decimal. */
function casOf(buf: Buffer, from: number, to: number): bigint | undefined {
  const short = digits(buf, from, to)
  if (short !== undefined) return BigInt(short)
  if (to <= from || to - from > 20) return undefined
  for (let i = from; i < to; i++) if (buf[i] < 0x30 || buf[i] > 0x39) return undefined
  const cas = BigInt(buf.toString('latin1', from, to))
  return cas <= MAX_CAS ? cas : undefined
}

/** A TTL as memcached writes it: -1 (none), or an unsigned 32-bit number of seconds. */
function isTtl(buf: Buffer, from: number, to: number): boolean {
  if (to - from === 2 && buf[from] === 0x2d && buf[from + 1] === 0x31) return true
  const seconds = digits(buf, from, to)
  return seconds !== undefined && seconds <= 0xffffffff
}

function keyMatches(buf: Buffer, from: number, to: number, base64: boolean, key: string): boolean {
  if (from < 0) return false
  if (!base64) return echoesKey(buf, from, to, key)
  const decoded = Buffer.from(buf.toString('latin1', from, to), 'base64')
  return echoesKey(decoded, 0, decoded.length, key)
}

/** Part of a reply line as a message quotes it. */
function quoted(buf: Buffer, start: number, end: number, max: number): string {
  return JSON.stringify(buf.toString('utf8', start, Math.min(end, start + max)))
}

/** The meta protocol; read values larger than `maxItemSize` are skipped and answered as `tooLarge`. */
export function metaProtocol(maxItemSize: number): WireProtocol {
  const parse = parseMeta(maxItemSize)
  return { name: 'meta', encode, reader: (handlers) => frameReader(parse, handlers) }
}
