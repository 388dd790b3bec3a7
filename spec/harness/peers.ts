// Small real TCP peers that misbehave on purpose, each on a free loopback port: a proxy that cuts
// replies short, a proxy that hands back get replies in the wrong order, a proxy that asks memcached
// for another key than its client did, a proxy whose key dump says other expiries than memcached's,
// and a fake memcached whose key dump trickles and never ends. Every socket has an error handler: a
// client or server that vanishes mid-stream only ends that connection.
import net from 'node:net'
import { freePort } from './memcached.ts'

/** A listener on a free loopback port that knows its open sockets. */
interface Listener {
  port: number
  sockets: Set<net.Socket>
  /** Destroys every open socket, then stops listening. */
  close(): Promise<void>
}

async function listen(onConnection: (socket: net.Socket) => void): Promise<Listener> {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    onConnection(socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  return {
    port,
    sockets,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/**
 * Connects to `target` ("host:port") for a proxied client. When the client goes, so does the
 * upstream; when the upstream goes, the client gets what was already written to it, then a FIN.
 */
function connectUpstream(client: net.Socket, target: string): net.Socket {
  const colon = target.lastIndexOf(':')
  const upstream = net.connect(Number(target.slice(colon + 1)), target.slice(0, colon))
  upstream.on('error', () => upstream.destroy())
  upstream.on('close', () => endThenDestroy(client))
  client.on('close', () => upstream.destroy())
  return upstream
}

/** Ends `socket` after `last` and whatever is still queued (destroy alone would drop it), then destroys it. */
function endThenDestroy(socket: net.Socket, last?: Buffer): void {
  if (socket.destroyed || socket.writableEnded) return
  const done = () => socket.destroy()
  if (last?.length) socket.end(last, done)
  else socket.end(done)
}

/** Writes `chunk` to `to`, pausing `from` until `to` drains: a slow reader does not make the proxy buffer without bound. */
function relay(from: net.Socket, to: net.Socket, chunk: Buffer): void {
  if (to.destroyed) return
  if (!to.write(chunk)) {
    from.pause()
    to.once('drain', () => from.resume())
  }
}

export interface CuttingProxyOptions {
  /** Cut the reply to the Nth request: the Nth client write (1-based), counted over every connection. */
  cutRequest?: number
  /** How many bytes of that reply get through before the cut (default 0). */
  afterBytes?: number
  /** Cut any reply that grows past this many bytes (server bytes since the client's last write): a cut mid large reply. */
  cutLargeReplyAfter?: number
}

export interface CuttingProxy {
  address: string
  /** Connections accepted so far. */
  readonly connections: number
  /** Connections open now. */
  readonly live: number
  /** Requests (client writes) forwarded so far. */
  readonly requests: number
  /** Connections cut so far (cutNext, cutRequest, large replies). */
  readonly cuts: number
  /** Connections destroyed by resetAll. */
  readonly resets: number
  /** One shot: the reply to the next request (on any connection) gets `afterBytes` bytes through, then that connection closes. */
  cutNext(options: { afterBytes: number }): void
  /** From now on cut every reply that grows past `bytes`; undefined stops it. */
  cutLargeReplies(bytes: number | undefined): void
  /** Destroys every live connection at once (the client sees a reset); returns how many. */
  resetAll(): number
  close(): Promise<void>
}

/**
 * A TCP proxy in front of a real memcached that forwards everything until told to cut. It does not
 * parse either protocol: "the reply to a request" is every server byte that follows the client's
 * write on that connection, so a cut is exact for a client that waits for each reply (not for one
 * that pipelines more requests while a reply is still arriving). A cut forwards exactly the allowed
 * bytes, then closes the client connection (a FIN after those bytes) and its upstream. Other
 * connections, and every connection made afterwards, are proxied normally.
 */
export async function cuttingProxy(target: string, options: CuttingProxyOptions = {}): Promise<CuttingProxy> {
  let connections = 0
  let requests = 0
  let cuts = 0
  let resets = 0
  let armed: number | undefined
  let largeAfter = options.cutLargeReplyAfter
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>()

  const listener = await listen((client) => {
    connections++
    const upstream = connectUpstream(client, target)
    const pair = { client, upstream }
    pairs.add(pair)
    client.on('close', () => pairs.delete(pair))
    // Bytes of the current reply still allowed through before a cut; undefined when no cut is due here.
    let budget: number | undefined
    // Server bytes since the client's last write: the size of the reply so far.
    let replied = 0
    let cut = false

    client.on('data', (chunk: Buffer) => {
      requests++
      replied = 0
      if (budget === undefined && armed !== undefined) {
        budget = armed
        armed = undefined
      } else if (budget === undefined && requests === options.cutRequest) {
        budget = options.afterBytes ?? 0
      }
      relay(client, upstream, chunk)
    })

    upstream.on('data', (chunk: Buffer) => {
      if (cut) return
      let allowed = Number.POSITIVE_INFINITY
      if (budget !== undefined && chunk.length >= budget) allowed = budget
      if (largeAfter !== undefined && replied + chunk.length > largeAfter) allowed = Math.min(allowed, Math.max(0, largeAfter - replied))
      if (allowed === Number.POSITIVE_INFINITY) {
        if (budget !== undefined) budget -= chunk.length
        replied += chunk.length
        relay(upstream, client, chunk)
        return
      }
      cut = true
      cuts++
      endThenDestroy(client, chunk.subarray(0, allowed))
      upstream.destroy()
    })
  })

  return {
    address: `127.0.0.1:${listener.port}`,
    get connections() {
      return connections
    },
    get live() {
      return pairs.size
    },
    get requests() {
      return requests
    },
    get cuts() {
      return cuts
    },
    get resets() {
      return resets
    },
    cutNext({ afterBytes }) {
      armed = afterBytes
    },
    cutLargeReplies(bytes) {
      largeAfter = bytes
    },
    resetAll() {
      const count = pairs.size
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy()
        upstream.destroy()
      }
      pairs.clear()
      resets += count
      return count
    },
    close: () => listener.close(),
  }
}

export interface ReplyHookProxy {
  address: string
  close(): Promise<void>
}

/**
 * A TCP proxy in front of a real memcached that hands every chunk of every reply to `onReply`
 * before forwarding it (in order, per connection): a test can act on memcached between a reply
 * being sent and the store receiving it.
 */
export async function replyHookProxy(target: string, onReply: (chunk: Buffer) => Promise<void> | void): Promise<ReplyHookProxy> {
  const listener = await listen((client) => {
    const upstream = connectUpstream(client, target)
    let forwarded: Promise<void> = Promise.resolve()
    client.on('data', (chunk: Buffer) => relay(client, upstream, chunk))
    upstream.on('data', (chunk: Buffer) => {
      forwarded = forwarded.then(async () => {
        await onReply(chunk)
        relay(upstream, client, chunk)
      })
    })
  })
  return { address: `127.0.0.1:${listener.port}`, close: () => listener.close() }
}

export interface SwappingImpostorOptions {
  /** Give each swapped reply the opaque (binary) or O token (meta) of the position it now takes: a FIFO answer with the wrong bodies. */
  rewriteOpaque?: boolean
  /** How long a lone get reply waits for a second one before it goes out unswapped (default 50 ms; Infinity: until something else arrives). */
  holdMs?: number
  /** Swap at most this many pairs, then pass everything through (default: no limit). */
  maxSwaps?: number
}

export interface SwappingImpostor {
  address: string
  /** Connections accepted so far. */
  readonly connections: number
  /** Pairs of get replies sent back swapped. */
  readonly swaps: number
  close(): Promise<void>
}

/** Binary get opcodes whose replies the impostor swaps: GET, GETK, GAT, GATK. */
const BINARY_GETS = new Set([0x00, 0x0c, 0x1d, 0x23])

/** One complete reply at the start of a buffer: its length and whether it answers a get; 'garbage' when it cannot be framed. */
type Frame = { length: number; get: boolean } | 'garbage' | undefined

/** Frames a binary reply: 24-byte header (magic 0x81), total body length at offset 8. */
function binaryFrame(data: Buffer): Frame {
  if (data.length === 0) return undefined
  if (data[0] !== 0x81) return 'garbage'
  if (data.length < 24) return undefined
  const length = 24 + data.readUInt32BE(8)
  return data.length < length ? undefined : { length, get: BINARY_GETS.has(data[1]) }
}

/** Frames a text or meta reply: one line, or a VA/VALUE line followed by its data and "\r\n". */
function metaFrame(data: Buffer): Frame {
  const newline = data.indexOf('\n')
  if (newline < 0) return data.length > 65536 ? 'garbage' : undefined
  const tokens = data.toString('latin1', 0, newline).trimEnd().split(' ')
  const size = tokens[0] === 'VA' ? tokens[1] : tokens[0] === 'VALUE' ? tokens[3] : undefined
  if (size !== undefined && !/^\d+$/.test(size)) return 'garbage'
  const length = newline + 1 + (size === undefined ? 0 : Number(size) + 2)
  return data.length < length ? undefined : { length, get: tokens[0] === 'VA' || tokens[0] === 'EN' }
}

/** `reply` carrying the binary opaque of `source`. */
function withBinaryOpaque(reply: Buffer, source: Buffer): Buffer {
  const copy = Buffer.from(reply)
  copy.writeUInt32BE(source.readUInt32BE(12), 12)
  return copy
}

/** `reply` carrying the meta O token of `source` (in place of its own; none when `source` has none). */
function withMetaOpaque(reply: Buffer, source: Buffer): Buffer {
  const flagsOf = (line: string) => line.split(' ').slice(line.startsWith('VA ') ? 2 : 1)
  const header = (data: Buffer) => data.toString('latin1', 0, data.indexOf('\r\n'))
  const line = header(reply)
  const opaque = flagsOf(header(source)).find((flag) => flag.startsWith('O'))
  const tokens = line.split(' ')
  const head = tokens.slice(0, line.startsWith('VA ') ? 2 : 1)
  const flags = flagsOf(line)
  const at = flags.findIndex((flag) => flag.startsWith('O'))
  if (at >= 0) flags.splice(at, 1, ...(opaque ? [opaque] : []))
  else if (opaque) flags.push(opaque)
  return Buffer.concat([Buffer.from([...head, ...flags].join(' '), 'latin1'), reply.subarray(line.length)])
}

/**
 * A proxy to a real memcached that answers get requests in the wrong order: it holds one complete
 * get reply (binary GET/GETK/GAT/GATK, or meta VA/EN) until the next complete reply arrives; when
 * that is a get reply too, both go out in one write, swapped. Any other reply passes in order, after
 * the held one. With rewriteOpaque the swapped replies trade opaques (or O tokens), so each carries
 * the one of the request whose position it took, while GETK/GATK keep their own echoed key (and meta
 * its k flag): only a client that checks keys, not just opaques, notices. Replies are framed across
 * chunk boundaries; bytes that cannot be framed switch that connection to plain forwarding.
 */
export async function swappingImpostor(
  target: string,
  protocol: 'binary' | 'meta',
  options: SwappingImpostorOptions = {},
): Promise<SwappingImpostor> {
  const frame = protocol === 'binary' ? binaryFrame : metaFrame
  const withOpaque = protocol === 'binary' ? withBinaryOpaque : withMetaOpaque
  const holdMs = options.holdMs ?? 50
  const maxSwaps = options.maxSwaps ?? Number.POSITIVE_INFINITY
  let connections = 0
  let swaps = 0

  const listener = await listen((client) => {
    connections++
    const upstream = connectUpstream(client, target)
    let pending: Buffer = Buffer.alloc(0)
    let held: Buffer | undefined
    let timer: NodeJS.Timeout | undefined
    let framing = true

    const flush = () => {
      clearTimeout(timer)
      timer = undefined
      if (held) relay(upstream, client, held)
      held = undefined
    }
    client.on('close', () => clearTimeout(timer))
    upstream.on('end', flush)
    client.on('data', (chunk: Buffer) => relay(client, upstream, chunk))

    upstream.on('data', (chunk: Buffer) => {
      if (!framing) return relay(upstream, client, chunk)
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
      for (;;) {
        const next = frame(pending)
        if (next === undefined) return
        if (next === 'garbage') {
          framing = false
          flush()
          relay(upstream, client, pending)
          pending = Buffer.alloc(0)
          return
        }
        // A copy: a subarray would keep the whole received buffer alive while the reply is held.
        const reply = Buffer.from(pending.subarray(0, next.length))
        pending = pending.subarray(next.length)
        if (!next.get || swaps >= maxSwaps) {
          flush()
          relay(upstream, client, reply)
        } else if (held) {
          const first = options.rewriteOpaque ? withOpaque(reply, held) : reply
          const second = options.rewriteOpaque ? withOpaque(held, reply) : held
          held = undefined
          flush()
          swaps++
          relay(upstream, client, Buffer.concat([first, second]))
        } else {
          held = reply
          if (holdMs !== Number.POSITIVE_INFINITY) timer = setTimeout(flush, holdMs).unref()
        }
      }
    })
  })

  return {
    address: `127.0.0.1:${listener.port}`,
    get connections() {
      return connections
    },
    get swaps() {
      return swaps
    },
    close: () => listener.close(),
  }
}

export interface KeyRewritingProxy {
  address: string
  /** Client chunks in which `from` was replaced so far. */
  readonly rewrites: number
  close(): Promise<void>
}

/**
 * A TCP proxy in front of a real memcached that asks for another key than its client did: every
 * occurrence of `from` in a client's bytes becomes `to` before it is forwarded. The two must have
 * the same length in bytes, so that a binary header's lengths stay right. memcached then answers
 * honestly, for `to`: a get of `from` comes back with `to`'s value and, where the key is echoed
 * (binary GETK/GATK, meta `k`), with `to`. Replies pass untouched. Keys are matched within each chunk
 * received: a client that writes each small request whole is rewritten every time; a key split
 * across two chunks would pass unchanged (and not be counted).
 */
export async function keyRewritingProxy(target: string, from: string, to: string): Promise<KeyRewritingProxy> {
  const needle = Buffer.from(from)
  const replacement = Buffer.from(to)
  if (needle.length !== replacement.length || needle.length === 0) {
    throw new Error(`keyRewritingProxy needs two non-empty keys of the same length in bytes, got ${JSON.stringify([from, to])}`)
  }
  let rewrites = 0
  const listener = await listen((client) => {
    const upstream = connectUpstream(client, target)
    client.on('data', (chunk: Buffer) => {
      let at = chunk.indexOf(needle)
      if (at >= 0) {
        chunk = Buffer.from(chunk)
        for (; at >= 0; at = chunk.indexOf(needle, at + needle.length)) replacement.copy(chunk, at)
        rewrites++
      }
      relay(client, upstream, chunk)
    })
    upstream.on('data', (chunk: Buffer) => relay(upstream, client, chunk))
  })
  return {
    address: `127.0.0.1:${listener.port}`,
    get rewrites() {
      return rewrites
    },
    close: () => listener.close(),
  }
}

export interface DumpRewritingProxy {
  address: string
  /** `lru_crawler metadump` requests forwarded so far. */
  readonly dumps: number
  /** Dump lines that `rewrite` changed so far. */
  readonly rewritten: number
  /** How many client chunks on connections that were not dumping contained `text`: the requests that named a key. */
  requestsMentioning(text: string): number
  close(): Promise<void>
}

/**
 * A TCP proxy in front of a real memcached that forwards everything, except that on a connection
 * whose client asked for `lru_crawler metadump`, every line of the dump (a `key=... exp=...` line,
 * without its "\n") goes through `rewrite` before it reaches the client: the dump can then say what
 * memcached would not, such as an expiry in the past for a key memcached still serves. The dump is
 * reframed by lines, so a line split across chunks is rewritten whole; END and any other reply pass
 * as they are. The other connections pass untouched, and their client chunks are kept so that a test
 * can tell which keys were asked for.
 */
export async function dumpRewritingProxy(target: string, rewrite: (line: string) => string): Promise<DumpRewritingProxy> {
  let dumps = 0
  let rewritten = 0
  const requests: Buffer[] = []
  const listener = await listen((client) => {
    const upstream = connectUpstream(client, target)
    let dumping = false
    // The start of a dump line whose "\n" has not arrived yet.
    let partial = ''
    client.on('data', (chunk: Buffer) => {
      if (!dumping && chunk.includes('lru_crawler metadump')) {
        dumping = true
        dumps++
      }
      if (!dumping) requests.push(Buffer.from(chunk))
      relay(client, upstream, chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!dumping) return relay(upstream, client, chunk)
      // Dump lines are ASCII (memcached URL-encodes keys): latin1 keeps every byte as it is.
      const text = partial + chunk.toString('latin1')
      const complete = text.lastIndexOf('\n') + 1
      partial = text.slice(complete)
      if (complete === 0) return
      const lines = text
        .slice(0, complete - 1)
        .split('\n')
        .map((line) => {
          if (!line.startsWith('key=')) return line
          const changed = rewrite(line)
          if (changed !== line) rewritten++
          return changed
        })
      relay(upstream, client, Buffer.from(`${lines.join('\n')}\n`, 'latin1'))
    })
  })
  return {
    address: `127.0.0.1:${listener.port}`,
    get dumps() {
      return dumps
    },
    get rewritten() {
      return rewritten
    },
    requestsMentioning(text) {
      const needle = Buffer.from(text)
      return requests.filter((chunk) => chunk.includes(needle)).length
    },
    close: () => listener.close(),
  }
}

export interface TricklingServerOptions {
  /** Key prefix of the dumped lines (default 'trickle:'). */
  prefix?: string
  /** Pause between dumped lines (default 100 ms). */
  intervalMs?: number
  /** Send the first line, then nothing more, holding the connection open. */
  stallAfterFirstLine?: boolean
}

export interface TricklingServer {
  address: string
  /** Connections accepted so far. */
  readonly connections: number
  /** metadump requests received. */
  readonly dumps: number
  /** Dump lines sent, over every connection. */
  readonly linesSent: number
  close(): Promise<void>
}

/**
 * A fake memcached whose key dump never finishes: `lru_crawler metadump hash` (or `all`) gets a
 * `key=<prefix><n> exp=-1 la=1 cas=1 fetch=no cls=1 size=100` line at once and then one every
 * intervalMs, forever, with no END (or only the first, with stallAfterFirstLine). It also answers
 * `version` and `mn`; any other line gets ERROR. A connection that is dumping reads nothing more.
 */
export async function tricklingServer(options: TricklingServerOptions = {}): Promise<TricklingServer> {
  const prefix = options.prefix ?? 'trickle:'
  const intervalMs = options.intervalMs ?? 100
  let connections = 0
  let dumps = 0
  let linesSent = 0
  const timers = new Set<NodeJS.Timeout>()

  const listener = await listen((socket) => {
    connections++
    let input = ''
    let dumping = false
    socket.on('data', (chunk: Buffer) => {
      if (dumping) return
      input += chunk.toString('latin1')
      for (let newline = input.indexOf('\n'); newline >= 0 && !dumping; newline = input.indexOf('\n')) {
        const line = input.slice(0, newline).trimEnd()
        input = input.slice(newline + 1)
        if (line === 'version') socket.write('VERSION 1.6.18\r\n')
        else if (line === 'mn') socket.write('MN\r\n')
        else if (/^lru_crawler metadump (hash|all)$/.test(line)) {
          dumping = true
          dumps++
          startDump(socket)
        } else socket.write('ERROR\r\n')
      }
    })
  })

  function startDump(socket: net.Socket): void {
    let n = 0
    const send = () => {
      if (socket.destroyed) return
      socket.write(`key=${prefix}${n++} exp=-1 la=1 cas=1 fetch=no cls=1 size=100\n`)
      linesSent++
    }
    send()
    if (options.stallAfterFirstLine) return
    const timer = setInterval(send, intervalMs)
    timers.add(timer)
    socket.on('close', () => {
      clearInterval(timer)
      timers.delete(timer)
    })
  }

  return {
    address: `127.0.0.1:${listener.port}`,
    get connections() {
      return connections
    },
    get dumps() {
      return dumps
    },
    get linesSent() {
      return linesSent
    },
    close: () => {
      for (const timer of timers) clearInterval(timer)
      timers.clear()
      return listener.close()
    },
  }
}

/**
 * A meta-protocol server that answers `mg` well-framed but with a CAS (`c`) or TTL (`t`) that is not
 * a number, for the keys ending in bad-cas and bad-ttl; any other key is a miss, and `mn` (the recovery probe) is answered.
 */
export async function malformedMetaPeer(): Promise<{ address: string; close(): Promise<void> }> {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  const peer = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    let input = ''
    socket.on('data', (chunk: Buffer) => {
      input += chunk.toString('latin1')
      for (let end = input.indexOf('\r\n'); end >= 0; end = input.indexOf('\r\n')) {
        const [command, key, ...flags] = input.slice(0, end).split(' ')
        input = input.slice(end + 2)
        const opaque = flags.find((flag) => flag.startsWith('O')) ?? ''
        if (command === 'mn') socket.write('MN\r\n')
        else if (command !== 'mg') socket.write('ERROR\r\n')
        else if (key.endsWith('bad-cas')) socket.write(`VA 2 cnot-a-cas t-1 k${key} ${opaque}\r\nhi\r\n`)
        else if (key.endsWith('bad-ttl')) socket.write(`VA 2 c1 tsoon k${key} ${opaque}\r\nhi\r\n`)
        else socket.write(`EN k${key} ${opaque}\r\n`)
      }
    })
  })
  await new Promise<void>((resolve) => peer.listen(port, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        peer.close(() => resolve())
      }),
  }
}
