// Feeds bytes to a protocol's reply reader (binaryProtocol/metaProtocol `reader`) without a socket
// or a server, and records what it made of them: the replies it delivered and the violations it
// reported, in order. Also the ways a byte stream can be cut into chunks (whole, in two at every
// offset, one byte at a time), so that a spec can check that the cut never changes the outcome.
import assert from 'node:assert/strict'
import net from 'node:net'
import type { Expected, Reply, WireProtocol } from '../../lib/memcached/wire.ts'

/** A request waiting for its reply, as the reader sees it (`Expected` in wire.ts: command, key, opaque). */
export type Awaited = Expected

/** One thing the reader did: delivered a reply, or reported a violation. */
export type ReaderEvent = { reply: Reply } | { violation: string }

/**
 * A reader over a queue of requests, oldest first, as a connection keeps them: `expected()` is the
 * oldest one not yet answered, and each delivered reply answers (removes) it.
 */
export function openReader(protocol: WireProtocol, awaited: readonly Awaited[]) {
  const queue = [...awaited]
  const events: ReaderEvent[] = []
  const read = protocol.reader({
    expected: () => queue[0],
    reply: (reply) => {
      queue.shift()
      events.push({ reply })
    },
    violation: (reason) => {
      events.push({ violation: reason })
    },
  })
  return {
    read,
    events,
    /** Requests still waiting for their reply. */
    get waiting(): number {
      return queue.length
    },
  }
}

/** What the reader did with `chunks`, fed in order to one fresh reader. */
export function readChunks(protocol: WireProtocol, awaited: readonly Awaited[], chunks: readonly Buffer[]): ReaderEvent[] {
  const reader = openReader(protocol, awaited)
  for (const chunk of chunks) reader.read(chunk)
  return reader.events
}

/** `bytes` in two chunks, cut at `at`. Each chunk is a copy: nothing the reader keeps can alias another chunk. */
export function cutAt(bytes: Buffer, at: number): Buffer[] {
  return [Buffer.from(bytes.subarray(0, at)), Buffer.from(bytes.subarray(at))]
}

/** `bytes` one byte per chunk. */
export function byteByByte(bytes: Buffer): Buffer[] {
  return Array.from(bytes, (byte) => Buffer.from([byte]))
}

/** `bytes` in chunks of `sizes` bytes, cycling through them. */
export function inChunksOf(bytes: Buffer, sizes: readonly number[]): Buffer[] {
  const chunks: Buffer[] = []
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length]
    chunks.push(Buffer.from(bytes.subarray(at, at + size)))
    at += size
  }
  return chunks
}

/**
 * Every way the specs cut a stream: whole; in two at every offset (an empty first or last chunk
 * included: a socket never delivers one, but the reader must not mind); one byte at a time; and in
 * uneven chunks of 1 to 7 bytes.
 */
export function chunkings(bytes: Buffer): Array<{ label: string; chunks: Buffer[] }> {
  const all = [{ label: 'whole', chunks: [bytes] }]
  for (let at = 0; at <= bytes.length; at++) all.push({ label: `cut at byte ${at}`, chunks: cutAt(bytes, at) })
  all.push({ label: 'one byte at a time', chunks: byteByByte(bytes) })
  all.push({ label: 'chunks of 1..7 bytes', chunks: inChunksOf(bytes, [3, 1, 7, 2, 5, 4, 6]) })
  return all
}

/** A reply as the specs state it: only the fields that matter, the rest default (no value, no CAS, no message). */
export function reply(status: Reply['status'], fields: { value?: string | Buffer; cas?: bigint; message?: string } = {}): Reply {
  const { value, cas = 0n, message } = fields
  return { status, value: typeof value === 'string' ? Buffer.from(value) : value, cas, message }
}

/**
 * What a reader delivers for a read whose value of `size` bytes is over `maxItemSize`: the value
 * skipped unread, no CAS, and words naming both numbers (the connection is kept).
 */
export function skipped(size: number, maxItemSize: number): Reply {
  return reply('tooLarge', {
    message: `the stored value is ${size} bytes, more than maxItemSize (${maxItemSize}) allows; it was skipped unread`,
  })
}

/** Asserts that `bytes`, however cut, gives exactly `expected` (replies, in order, and nothing else). */
export function assertReadsAs(protocol: WireProtocol, awaited: readonly Awaited[], bytes: Buffer, expected: readonly Reply[]): void {
  const wanted = expected.map((r) => ({ reply: r }))
  for (const { label, chunks } of chunkings(bytes)) {
    assert.deepEqual(readChunks(protocol, awaited, chunks), wanted, `${label} of ${show(bytes)}`)
  }
}

/** Asserts that `bytes`, however cut, gives nothing yet: no reply, no violation, every request still waiting. */
export function assertNothingYet(protocol: WireProtocol, awaited: readonly Awaited[], bytes: Buffer): void {
  for (const { label, chunks } of chunkings(bytes)) {
    const reader = openReader(protocol, awaited)
    for (const chunk of chunks) reader.read(chunk)
    assert.deepEqual(reader.events, [], `${label} of ${show(bytes)}`)
    assert.equal(reader.waiting, awaited.length, `${label} of ${show(bytes)}`)
  }
}

/**
 * Asserts that `bytes`, however cut, gives one violation whose reason matches `reason`, and no reply;
 * then that the broken reader ignores `after` (a valid reply for the next request): it never reads
 * that connection's bytes again.
 */
export function assertViolation(
  protocol: WireProtocol,
  awaited: readonly Awaited[],
  bytes: Buffer,
  reason: RegExp,
  after?: { awaited: Awaited; bytes: Buffer },
): void {
  for (const { label, chunks } of chunkings(bytes)) {
    const queue = after ? [...awaited, after.awaited] : awaited
    const reader = openReader(protocol, queue)
    for (const chunk of chunks) reader.read(chunk)
    if (after) for (const chunk of [after.bytes, ...byteByByte(after.bytes)]) reader.read(chunk)
    const { events } = reader
    assert.equal(events.length, 1, `${label} of ${show(bytes)}: one event, got ${describe(events)}`)
    const [event] = events
    assert.ok('violation' in event, `${label} of ${show(bytes)}: a violation, got ${describe(events)}`)
    assert.match(event.violation, reason, `${label} of ${show(bytes)}`)
  }
}

/** Bytes for an assertion message: text as JSON when it is text, hex otherwise, cut to 120 characters. */
export function show(bytes: Buffer): string {
  const text = bytes.toString('latin1')
  const shown = /^[\x20-\x7e\r\n]*$/.test(text) ? JSON.stringify(text) : bytes.toString('hex')
  return shown.length > 120 ? `${shown.slice(0, 117)}...` : shown
}

function describe(events: readonly ReaderEvent[]): string {
  return JSON.stringify(events, (_key, value) => (typeof value === 'bigint' ? `${value}n` : value))
}

/**
 * Sends `requests` to a real server one at a time over one connection, each once the reply to the
 * previous one is complete (`replyLength` tells how long the reply at the start of the bytes is, or
 * undefined while it is incomplete), and returns the replies' exact bytes. Fails after 3 s.
 */
export async function roundTrips(
  address: string,
  requests: readonly Buffer[],
  replyLength: (data: Buffer) => number | undefined,
): Promise<Buffer[]> {
  const colon = address.lastIndexOf(':')
  const socket = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon))
  const replies: Buffer[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no complete reply to request ${replies.length + 1} within 3 s`)), 3000)
      let received = Buffer.alloc(0)
      const next = () => {
        if (replies.length === requests.length) {
          clearTimeout(timer)
          resolve()
        } else socket.write(requests[replies.length])
      }
      socket.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk])
        const length = replyLength(received)
        if (length === undefined) return
        replies.push(received.subarray(0, length))
        if (length !== received.length) reject(new Error(`${received.length - length} bytes beyond reply ${replies.length}`))
        received = Buffer.alloc(0)
        next()
      })
      socket.once('connect', next)
    })
  } finally {
    socket.destroy()
  }
  return replies
}
