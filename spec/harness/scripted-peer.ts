// A fake memcached that plays back a script: a real TCP server on a free loopback port that reads
// the store's requests (binary frames, or meta lines and their data) and, for each one, asks the
// script what to do: send exact bytes, send them in chunks with pauses between, send nothing, close
// the connection (FIN) or reset it (RST). A script can also act on each received chunk instead,
// unparsed. Steps run in order on each connection: the steps for a request start once those for
// the previous one are done, so replies are never reordered by their delays. Every socket has an
// error handler: a client that vanishes mid-script only ends that connection.
import net from 'node:net'
import { binaryResponse, OPCODES, REQUEST_MAGIC, readBinaryFrame, uint32s } from './frames.ts'
import { freePort } from './memcached.ts'

/** One request as the peer read it. */
export interface PeerRequest {
  protocol: 'binary' | 'meta'
  /**
   * binary: the opcode's name (getk, gatk, set, add, replace, delete, touch, noop; `0x..` for any
   * other); meta: the command (mg, ms, md, mn). `unparsed` for bytes that are neither.
   */
  command: string
  /** binary: the opcode. */
  opcode: number | undefined
  key: string
  /** binary: the header's opaque; meta: the number of the O flag (undefined without one). */
  opaque: number | undefined
  /** binary: the header's CAS; meta: the C flag's (0n when none). */
  cas: bigint
  /** meta: the flags after the key (and after the data length of ms). */
  flags: string[]
  value: Buffer | undefined
  /** The request exactly as received. */
  bytes: Buffer
  /** 0-based, over every connection. */
  index: number
  /** Which connection it came on: 1 for the first accepted. */
  connection: number
}

/** Something the peer does: send bytes, pause, close with a FIN, or reset with an RST. */
export type Step = { send: Buffer } | { wait: number } | { close: true } | { reset: true }

/** What the peer does about one request or chunk: one step, several in order, or nothing (undefined or []). */
export type Play = Step | readonly Step[] | undefined

export const send = (bytes: Buffer | string): Step => ({ send: typeof bytes === 'string' ? Buffer.from(bytes) : bytes })
export const wait = (ms: number): Step => ({ wait: ms })
export const close = (): Step => ({ close: true })
export const reset = (): Step => ({ reset: true })

/** `bytes` in chunks of `chunkBytes` (default 1) with `delayMs` between them. */
export function trickle(bytes: Buffer | string, { chunkBytes = 1, delayMs = 0 }: { chunkBytes?: number; delayMs?: number } = {}): Step[] {
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
  const steps: Step[] = []
  for (let at = 0; at < data.length; at += chunkBytes) {
    if (at > 0 && delayMs > 0) steps.push(wait(delayMs))
    steps.push(send(data.subarray(at, at + chunkBytes)))
  }
  return steps
}

export interface ScriptedPeerOptions {
  protocol: 'binary' | 'meta'
  /** What to do about each request (the default: answer as an empty memcached would, see `emptyMemcached`). */
  onRequest?: (request: PeerRequest) => Play
  /** Instead of onRequest: what to do about each chunk received, unparsed. */
  onChunk?: (chunk: Buffer, info: { index: number; connection: number }) => Play
}

export interface ScriptedPeer {
  address: string
  /** Connections accepted so far. */
  readonly connections: number
  /** Every request read so far, in order (onRequest mode). */
  readonly requests: readonly PeerRequest[]
  /** Steps of the form { send } written so far: how many chunks the peer wrote. */
  readonly writes: number
  /** Destroys every open socket, cancels pending steps, stops listening. */
  close(): Promise<void>
}

/** Binary requests that carry a value, even an empty one. */
const STORAGE_OPCODES: ReadonlySet<number> = new Set([OPCODES.set, OPCODES.add, OPCODES.replace])

const OPCODE_NAMES = new Map<number, string>(Object.entries(OPCODES).map(([name, opcode]) => [opcode, name]))

/** Reads as many requests as `data` holds whole; returns them and the bytes left over. */
function parseRequests(protocol: 'binary' | 'meta', data: Buffer): { parsed: Omit<PeerRequest, 'index' | 'connection'>[]; rest: Buffer } {
  const parsed: Omit<PeerRequest, 'index' | 'connection'>[] = []
  let rest = data
  for (;;) {
    if (rest.length === 0) break
    if (protocol === 'binary') {
      if (rest[0] !== REQUEST_MAGIC) {
        parsed.push(unparsed('binary', rest))
        rest = Buffer.alloc(0)
        break
      }
      const read = readBinaryFrame(rest)
      if (read === undefined) break
      const { frame } = read
      parsed.push({
        protocol,
        command: OPCODE_NAMES.get(frame.opcode) ?? `0x${frame.opcode.toString(16).padStart(2, '0')}`,
        opcode: frame.opcode,
        key: frame.key.toString(),
        opaque: frame.opaque,
        cas: frame.cas,
        flags: [],
        value: frame.value.length > 0 || STORAGE_OPCODES.has(frame.opcode) ? Buffer.from(frame.value) : undefined,
        bytes: Buffer.from(rest.subarray(0, read.length)),
      })
      rest = rest.subarray(read.length)
    } else {
      const end = rest.indexOf('\r\n')
      if (end < 0) break
      const [command, ...tokens] = rest.toString('utf8', 0, end).split(' ')
      const key = command === 'mn' ? '' : (tokens.shift() ?? '')
      let length = end + 2
      let value: Buffer | undefined
      if (command === 'ms') {
        const size = Number(tokens.shift())
        if (!Number.isSafeInteger(size) || size < 0) {
          parsed.push(unparsed('meta', rest))
          rest = Buffer.alloc(0)
          break
        }
        if (rest.length < length + size + 2) break
        value = Buffer.from(rest.subarray(length, length + size))
        length += size + 2
      }
      const flag = (letter: string) => tokens.find((token) => token.startsWith(letter))?.slice(1)
      const opaque = flag('O')
      parsed.push({
        protocol,
        command,
        opcode: undefined,
        key,
        opaque: opaque === undefined ? undefined : Number(opaque),
        cas: BigInt(flag('C') ?? 0),
        flags: tokens,
        value,
        bytes: Buffer.from(rest.subarray(0, length)),
      })
      rest = rest.subarray(length)
    }
  }
  return { parsed, rest }
}

function unparsed(protocol: 'binary' | 'meta', bytes: Buffer): Omit<PeerRequest, 'index' | 'connection'> {
  return {
    protocol,
    command: 'unparsed',
    opcode: undefined,
    key: '',
    opaque: undefined,
    cas: 0n,
    flags: [],
    value: undefined,
    bytes: Buffer.from(bytes),
  }
}

const GETS = new Set(['getk', 'gatk'])

/** A hit for a get or get-and-touch: the value, its CAS, the key echoed (GETK/GATK; meta `VA n c k O`). */
export function hit(request: PeerRequest, value: Buffer | string, cas = 1n): Buffer {
  const data = typeof value === 'string' ? Buffer.from(value) : value
  if (request.protocol === 'binary') {
    return binaryResponse({ opcode: request.opcode ?? 0, opaque: request.opaque, cas, extras: uint32s(0), key: request.key, value: data })
  }
  return Buffer.concat([Buffer.from(`VA ${data.length} c${cas} k${request.key} O${request.opaque}\r\n`), data, Buffer.from('\r\n')])
}

/**
 * What an empty memcached answers: a miss for reads, touches, deletes, replaces and CAS writes;
 * stored (CAS 1) for set and add; the no-op's reply; nothing for what cannot be parsed.
 */
export function emptyMemcached(request: PeerRequest): Play {
  const { protocol, command, opaque } = request
  if (command === 'unparsed') return undefined
  if (protocol === 'binary') {
    const opcode = request.opcode ?? 0
    if (command === 'noop') return send(binaryResponse({ opcode, opaque }))
    const stores = (command === 'set' && request.cas === 0n) || command === 'add'
    if (stores) return send(binaryResponse({ opcode, opaque, cas: 1n }))
    if (GETS.has(command)) return send(binaryResponse({ opcode, status: 0x0001, opaque, key: request.key }))
    return send(binaryResponse({ opcode, status: 0x0001, opaque, value: 'Not found' }))
  }
  switch (command) {
    case 'mn':
      return send('MN\r\n')
    case 'mg':
      return send(`EN${request.flags.includes('k') ? ` k${request.key}` : ''} O${opaque}\r\n`)
    case 'md':
      return send(`NF O${opaque}\r\n`)
    case 'ms': {
      const mode = request.flags.find((flag) => flag.startsWith('M'))
      if (request.cas !== 0n) return send(`NF c0 O${opaque}\r\n`)
      if (mode === 'MR') return send(`NS c0 O${opaque}\r\n`)
      return send(`HD c1 O${opaque}\r\n`)
    }
    default:
      return send('ERROR\r\n')
  }
}

/** Starts a scripted peer on a free loopback port. */
export async function scriptedPeer(options: ScriptedPeerOptions): Promise<ScriptedPeer> {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  const timers = new Set<NodeJS.Timeout>()
  const requests: PeerRequest[] = []
  let connections = 0
  let writes = 0
  let chunks = 0
  let closing = false

  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer)
        resolve()
      }, ms)
      timers.add(timer)
    })

  /** Runs `play` on `socket` after whatever it was already doing. */
  const perform = async (socket: net.Socket, play: Play): Promise<void> => {
    const steps: readonly Step[] = play === undefined ? [] : 'length' in play ? play : [play]
    for (const step of steps) {
      if (closing || socket.destroyed) return
      if ('wait' in step) await pause(step.wait)
      else if ('send' in step) {
        writes++
        socket.write(step.send)
      } else if ('close' in step) {
        await new Promise<void>((resolve) => socket.end(resolve))
        socket.destroy()
      } else socket.resetAndDestroy()
    }
  }

  const server = net.createServer((socket) => {
    const connection = ++connections
    sockets.add(socket)
    socket.setNoDelay(true)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    let queue: Promise<void> = Promise.resolve()
    let pending: Buffer = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      const plays: Play[] = []
      if (options.onChunk) {
        plays.push(options.onChunk(chunk, { index: chunks++, connection }))
      } else {
        const { parsed, rest } = parseRequests(options.protocol, pending.length ? Buffer.concat([pending, chunk]) : chunk)
        pending = Buffer.from(rest)
        for (const request of parsed) {
          const full: PeerRequest = { ...request, index: requests.length, connection }
          requests.push(full)
          plays.push((options.onRequest ?? emptyMemcached)(full))
        }
      }
      for (const play of plays) queue = queue.then(() => perform(socket, play))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })

  return {
    address: `127.0.0.1:${port}`,
    get connections() {
      return connections
    },
    get requests() {
      return requests
    },
    get writes() {
      return writes
    },
    close: () =>
      new Promise((resolve) => {
        closing = true
        for (const timer of timers) clearTimeout(timer)
        timers.clear()
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
