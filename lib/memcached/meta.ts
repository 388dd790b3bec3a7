// memcached's meta protocol (mg, ms, md, mn) over sockets the store owns: for servers that refuse
// the binary protocol (memcached -B ascii, ElastiCache Serverless, memcached's proxy) and for
// memcached's token authentication (-Y). Every request carries an opaque (`O`) and reads ask for the
// key back (`k`), so each reply is checked against the request it answers.
import type tls from 'node:tls'
import { connectFailureCode, connectFailureReason, type Endpoint, openSocket } from './socket.js'
import type {
  Command,
  CommandName,
  OpenAttempt,
  OpenCallbacks,
  Pending,
  Reply,
  ReplyHandlers,
  ReplyStatus,
  Transport,
  WireProtocol,
} from './wire.js'

/** The longest reply line accepted: memcached's are a few dozen bytes plus the key. */
const MAX_LINE_BYTES = 2048

const CRLF = Buffer.from('\r\n')

/** A CAS as memcached writes it (a 64-bit unsigned integer), and a TTL (seconds, -1 for none). */
const UNSIGNED = /^\d{1,20}$/
const TTL = /^-?\d{1,10}$/

const MODE: Partial<Record<CommandName, string>> = { set: 'MS', cas: 'MS', add: 'ME', replace: 'MR' }

function encode(command: Command, opaque: number): Buffer {
  const { name, key } = command
  switch (name) {
    case 'get':
      return Buffer.from(`mg ${key} v c k O${opaque}\r\n`)
    case 'gat':
      return Buffer.from(`mg ${key} v c k O${opaque} T${command.expiry ?? 0}\r\n`)
    case 'touch':
      return Buffer.from(`mg ${key} k O${opaque} T${command.expiry ?? 0}\r\n`)
    case 'delete':
      return Buffer.from(`md ${key} O${opaque}${command.cas ? ` C${command.cas}` : ''}\r\n`)
    case 'noop':
      return Buffer.from('mn\r\n')
    default: {
      const value = command.value ?? Buffer.alloc(0)
      const cas = command.cas ? ` C${command.cas}` : ''
      const line = `ms ${key} ${value.length} T${command.expiry ?? 0} c O${opaque} ${MODE[name]}${cas}\r\n`
      const lineBytes = Buffer.byteLength(line)
      const buf = Buffer.allocUnsafe(lineBytes + value.length + 2)
      buf.write(line, 0)
      value.copy(buf, lineBytes)
      CRLF.copy(buf, lineBytes + value.length)
      return buf
    }
  }
}

/** The reply codes each command may get (besides SERVER_ERROR); anything else is a protocol error. */
const ALLOWED: Record<CommandName, readonly string[]> = {
  get: ['VA', 'EN'],
  gat: ['VA', 'EN'],
  touch: ['HD', 'EN'],
  set: ['HD', 'NS', 'EX', 'NF'],
  cas: ['HD', 'NS', 'EX', 'NF'],
  add: ['HD', 'NS', 'EX', 'NF'],
  replace: ['HD', 'NS', 'EX', 'NF'],
  delete: ['HD', 'NF', 'EX'],
  noop: ['MN'],
}

function statusOf(code: string, command: CommandName): ReplyStatus {
  switch (code) {
    case 'VA':
    case 'HD':
    case 'MN':
      return 'ok'
    case 'EN':
    case 'NF':
      return 'miss'
    case 'NS':
      // Not stored: ADD found the key; REPLACE did not.
      return command === 'replace' ? 'miss' : 'exists'
    default:
      return 'exists'
  }
}

/** Reads one connection's replies: a line, and for `VA` a value of the announced length and CRLF. */
export function metaReader(handlers: ReplyHandlers, limit: number): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0)
  /** Bytes the reply at the start of `buf` needs in all, once its line was read (a VA with its value). */
  let needed = 0
  let header: { reply: Reply; lineEnd: number } | undefined
  let broken = false

  const fail = (reason: string) => {
    broken = true
    buf = Buffer.alloc(0)
    handlers.violation(reason)
  }

  return (chunk: Buffer) => {
    if (broken) return
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    if (buf.length < needed) return
    let offset = 0
    for (;;) {
      if (header === undefined) {
        const lineEnd = buf.indexOf(CRLF, offset)
        if (lineEnd < 0) {
          if (buf.length - offset > MAX_LINE_BYTES) return fail(`a reply line longer than ${MAX_LINE_BYTES} bytes`)
          break
        }
        const expected = handlers.expected()
        const parsed =
          parseHeader(buf, offset, lineEnd, expected, limit) ?? parseLine(buf.toString('utf8', offset, lineEnd), expected, limit)
        if (typeof parsed === 'string') return fail(parsed)
        if (parsed.value === undefined) {
          offset = lineEnd + 2
          handlers.reply(parsed.reply)
          if (broken) return
          continue
        }
        header = { reply: parsed.reply, lineEnd }
        needed = lineEnd + 2 + parsed.value + 2 - offset
      }
      const dataStart = header.lineEnd + 2
      const dataEnd = offset + needed - 2
      if (buf.length < dataEnd + 2) break
      if (buf[dataEnd] !== 0x0d || buf[dataEnd + 1] !== 0x0a) return fail('a value not followed by CRLF where its announced length ends')
      const reply = header.reply
      reply.value = buf.subarray(dataStart, dataEnd)
      offset = dataEnd + 2
      header = undefined
      needed = 0
      handlers.reply(reply)
      if (broken) return
    }
    if (offset > 0) {
      if (header !== undefined) header.lineEnd -= offset
      buf = offset === buf.length ? Buffer.alloc(0) : buf.subarray(offset)
    }
  }
}

/** Reply codes as their two bytes: the codes a meta request may get, read without decoding the line. */
const CODES: Record<number, string> = { 22081: 'VA', 18500: 'HD', 17742: 'EN', 20051: 'NS', 17752: 'EX', 20038: 'NF', 19790: 'MN' }

/**
 * The common replies (a known code, flags the store asked for) read straight from the bytes:
 * undefined when the line needs the full, string-based reading below (errors, a base64 key,
 * anything unusual), which words every problem.
 */
function parseHeader(
  buf: Buffer,
  start: number,
  end: number,
  expected: Pending | undefined,
  limit: number,
): { reply: Reply; value?: number } | undefined {
  if (expected === undefined || end - start < 2 || (end - start > 2 && buf[start + 2] !== 0x20)) return undefined
  const code = CODES[(buf[start] << 8) | buf[start + 1]]
  if (code === undefined || !ALLOWED[expected.command].includes(code)) return undefined
  const reply: Reply = { status: statusOf(code, expected.command), value: undefined, cas: 0n, message: undefined }
  if (code === 'MN') return end - start === 2 ? { reply } : undefined
  let at = start + 3
  let valueLength: number | undefined
  if (code === 'VA') {
    const lengthEnd = tokenEnd(buf, at, end)
    valueLength = digits(buf, at, lengthEnd)
    if (valueLength === undefined || valueLength > limit) return undefined
    at = lengthEnd + 1
  }
  let opaqueSeen = false
  let keySeen = false
  for (; at < end; at++) {
    const last = tokenEnd(buf, at, end)
    switch (buf[at]) {
      case 0x4f: // O
        if (digits(buf, at + 1, last) !== expected.opaque) return undefined
        opaqueSeen = true
        break
      case 0x6b: // k
        if (!bytesEqual(buf, at + 1, last, expected.key)) return undefined
        keySeen = true
        break
      case 0x63: {
        // c: digits() reads up to 15 digits, exact as a Number; a longer CAS takes the string reading.
        const cas = digits(buf, at + 1, last)
        if (cas === undefined) return undefined
        reply.cas = BigInt(cas)
        break
      }
      default:
        return undefined
    }
    at = last
  }
  const asksKey = expected.command === 'get' || expected.command === 'gat' || expected.command === 'touch'
  return opaqueSeen && (keySeen || !asksKey) ? { reply, value: valueLength } : undefined
}

function tokenEnd(buf: Buffer, from: number, end: number): number {
  const space = buf.indexOf(0x20, from)
  return space < 0 || space > end ? end : space
}

/** The decimal number in buf[from, to), or undefined when it is not one. */
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

/** Whether buf[from, to) holds `text`'s UTF-8 bytes (ASCII compared in place). */
function bytesEqual(buf: Buffer, from: number, to: number, text: string): boolean {
  if (to - from === text.length) {
    let ascii = true
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (c >= 0x80) {
        ascii = false
        break
      }
      if (buf[from + i] !== c) return false
    }
    if (ascii) return true
  }
  return buf.toString('utf8', from, to) === text
}

/** A reply line checked against the request it must answer; the length of its value for `VA`. */
function parseLine(line: string, expected: Pending | undefined, limit: number): { reply: Reply; value?: number } | string {
  if (expected === undefined) return `a reply arrived with no request waiting for it (${JSON.stringify(line.slice(0, 60))})`
  const tokens = line.split(' ')
  const code = tokens[0]
  if (code === 'SERVER_ERROR') {
    const message = line.slice(13)
    const status = /too large/i.test(message) ? 'tooLarge' : /out of memory/i.test(message) ? 'serverError' : 'serverError'
    return { reply: { status, value: undefined, cas: 0n, message } }
  }
  if (code === 'CLIENT_ERROR' && /unauthenticated|authentication/i.test(line)) {
    return { reply: { status: 'authError', value: undefined, cas: 0n, message: line } }
  }
  if (!ALLOWED[expected.command].includes(code)) {
    return `${JSON.stringify(line.slice(0, 80))} where the answer to ${expected.command === 'noop' ? 'mn' : expected.command} was due`
  }
  const reply: Reply = { status: statusOf(code, expected.command), value: undefined, cas: 0n, message: undefined }
  if (code === 'MN') return { reply }
  let first = 1
  let valueLength: number | undefined
  if (code === 'VA') {
    valueLength = Number(tokens[1])
    if (!Number.isSafeInteger(valueLength) || valueLength < 0)
      return `a value length that is not a number in ${JSON.stringify(line.slice(0, 80))}`
    if (valueLength > limit) return `a reply announcing ${valueLength} bytes, more than any item can hold (${limit})`
    first = 2
  }
  let opaque: string | undefined
  let key: string | undefined
  let base64Key = false
  for (let i = first; i < tokens.length; i++) {
    const token = tokens[i]
    switch (token.charCodeAt(0)) {
      case 0x62: // b: the key is echoed in base64 (it was stored as a binary key by some client)
        base64Key = token.length === 1
        break
      case 0x4f: // O
        opaque = token.slice(1)
        break
      case 0x6b: // k
        key = token.slice(1)
        break
      case 0x63: // c
        // Checked first: BigInt throws on anything else, and a throw here escapes the socket's data listener.
        if (!UNSIGNED.test(token.slice(1))) return `a CAS that is not a number in ${JSON.stringify(line.slice(0, 80))}`
        reply.cas = BigInt(token.slice(1))
        break
      case 0x74: // t: not asked for, but a malformed one still means a stream not to trust
        if (!TTL.test(token.slice(1))) return `a TTL that is not a number in ${JSON.stringify(line.slice(0, 80))}`
        break
    }
  }
  if (opaque !== String(expected.opaque)) {
    return `a reply out of order (opaque ${opaque ?? 'missing'}) where the answer to opaque ${expected.opaque} was due`
  }
  const asksKey = expected.command === 'get' || expected.command === 'gat' || expected.command === 'touch'
  if (base64Key && key !== undefined) key = Buffer.from(key, 'base64').toString()
  if (asksKey && key !== expected.key) return `a reply for another key where the answer to ${expected.command} of the requested key was due`
  return { reply, value: valueLength }
}

export const metaProtocol = (limit: number): WireProtocol => ({
  name: 'meta',
  encode,
  reader: (handlers) => metaReader(handlers, limit),
})

/**
 * The key of memcached's token authentication (-Y): a -Y server only reads the data ("user pass");
 * a server without -Y would store it, so it is written already expired (exptime -1) under a name no
 * application uses.
 */
const AUTH_KEY = '__express_session_memcache_auth__'

/** Connections for the meta protocol: TCP or TLS, authenticated with memcached's tokens when credentials are given. */
export class MetaTransport implements Transport {
  readonly host: string
  readonly port: number
  readonly #tls: tls.ConnectionOptions | undefined
  readonly #credentials: { username: string; password: string } | undefined

  constructor(
    endpoint: Endpoint,
    tlsOptions: tls.ConnectionOptions | undefined,
    credentials: { username: string; password: string } | undefined,
  ) {
    this.host = endpoint.host
    this.port = endpoint.port
    this.#tls = tlsOptions
    this.#credentials = credentials
  }

  get secure(): boolean {
    return this.#tls !== undefined
  }

  authRefusal(): string {
    if (this.#credentials) return `token authentication failed for user ${JSON.stringify(this.#credentials.username)}`
    return 'the server requires token authentication (memcached -Y) and no credentials are configured (options `username`/`password`, `user:pass@host:port` in `servers`, or MEMCACHE_USERNAME/MEMCACHE_PASSWORD)'
  }

  open(callbacks: OpenCallbacks): OpenAttempt {
    const opened = openSocket(this, this.#tls)
    const { socket, readyEvent } = opened
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      socket.removeListener('data', onData)
      socket.removeListener('error', onError)
      socket.removeListener('close', onClose)
      outcome()
    }
    const onError = (err: Error) =>
      settle(() => {
        const code = connectFailureCode(err)
        // A -Z server resets a plain connection whose first bytes (this set) are not a TLS record:
        // a refusal like a close, which ready() explains (set \`tls\`; or the binary protocol).
        if (code === 'ECONNECTION' && opened.stage === 'authenticating' && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
          return callbacks.failed(
            'ECONNCLOSED',
            `the server reset the connection instead of answering token authentication (${err.message})`,
            err,
          )
        }
        callbacks.failed(code, connectFailureReason(err), err)
      })
    const onClose = () =>
      settle(() =>
        callbacks.failed(
          'ECONNCLOSED',
          opened.stage === 'authenticating'
            ? 'the server closed the connection instead of answering token authentication: it speaks only the binary protocol (started with -S for SASL, or -B binary), where SASL is used instead'
            : `the server closed the connection while it was being opened${this.#tls ? ' (during the TLS handshake)' : ' (if it expects TLS, set `tls`)'}`,
        ),
      )
    let line = ''
    const onData = (chunk: Buffer) => {
      line += chunk.toString('latin1')
      const end = line.indexOf('\r\n')
      if (end < 0) {
        if (line.length > MAX_LINE_BYTES) settle(() => callbacks.failed('EPROTOCOL', 'an endless reply to token authentication'))
        return
      }
      const answer = line.slice(0, end)
      if (answer === 'STORED' && end + 2 === line.length) return settle(() => callbacks.ready(socket))
      socket.destroy()
      if (answer.startsWith('CLIENT_ERROR')) {
        const user = JSON.stringify(this.#credentials?.username)
        return settle(() =>
          callbacks.failed(
            'EAUTH',
            `token authentication failed for user ${user} (${answer}): check the username and password in the server's -Y file`,
          ),
        )
      }
      settle(() => callbacks.failed('EPROTOCOL', `unexpected answer to token authentication: ${JSON.stringify(answer.slice(0, 80))}`))
    }
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.once(readyEvent, () => {
      if (settled) return
      const credentials = this.#credentials
      if (credentials === undefined) return settle(() => callbacks.ready(socket))
      const token = Buffer.from(`${credentials.username} ${credentials.password}`)
      opened.stage = 'authenticating'
      socket.on('data', onData)
      socket.write(Buffer.concat([Buffer.from(`set ${AUTH_KEY} 0 -1 ${token.length}\r\n`), token, CRLF]))
    })
    return {
      get stage() {
        return opened.stage
      },
      abort: () => settle(() => socket.destroy()),
    }
  }
}
