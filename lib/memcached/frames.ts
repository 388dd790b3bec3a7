// The reading skeleton both protocols share: bytes arrive in chunks of any size; a protocol's parser
// says what the bytes at the start of the unread data are (too few yet, a whole reply, a reply whose
// value must be skipped, or something not to trust); this reader keeps the chunks, hands replies over
// in order, and stops for good at the first violation. Every connection gets a new reader, so no byte
// of a broken connection is ever read as part of another.
import type { Expected, Reply, ReplyHandlers } from './wire.js'

export const NEED = 0
export const REPLY = 1
export const SKIP = 2
export const VIOLATION = 3

/**
 * What a parser found, written into one object per reader (no allocation per reply):
 * - NEED: nothing can be read before `buf` holds `end` bytes;
 * - REPLY: `reply`, whose bytes end at `end`;
 * - SKIP: `reply` (a value over the size limit), whose header ends at `end`; the `skip` bytes after
 *   it are discarded unread, and the last of them must be `trailer`;
 * - VIOLATION: `reason`.
 */
export class Frame {
  kind = NEED
  reply: Reply | undefined = undefined
  end = 0
  skip = 0
  trailer: Buffer | undefined = undefined
  reason = ''

  need(end: number): Frame {
    this.kind = NEED
    this.end = end
    return this
  }

  replied(reply: Reply, end: number): Frame {
    this.kind = REPLY
    this.reply = reply
    this.end = end
    return this
  }

  skipped(reply: Reply, headerEnd: number, skip: number, trailer: Buffer | undefined): Frame {
    this.kind = SKIP
    this.reply = reply
    this.end = headerEnd
    this.skip = skip
    this.trailer = trailer
    return this
  }

  violated(reason: string): Frame {
    this.kind = VIOLATION
    this.reason = reason
    return this
  }
}

/**
 * Whether buf[from, to) holds `key`'s UTF-8 bytes: how both protocols check the key a reply echoes
 * (ASCII compared in place, anything else through its UTF-8 encoding, never by decoding the reply).
 */
export function echoesKey(buf: Buffer, from: number, to: number, key: string): boolean {
  if (to - from === key.length) {
    let ascii = true
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i)
      if (c >= 0x80) {
        ascii = false
        break
      }
      if (buf[from + i] !== c) return false
    }
    if (ascii) return true
  }
  const bytes = Buffer.from(key)
  return bytes.length === to - from && buf.compare(bytes, 0, bytes.length, from, to) === 0
}

/** Reads the frame that starts at `buf[offset]`, which must answer `expected`, into `frame` (and returns it). */
export type FrameParser = (buf: Buffer, offset: number, expected: Expected | undefined, frame: Frame) => Frame

export function frameReader(parse: FrameParser, handlers: ReplyHandlers): (chunk: Buffer) => void {
  const frame = new Frame()
  let chunks: Buffer[] = []
  let buffered = 0
  /** Bytes the unread data must reach before parsing is worth trying again. */
  let needed = 0
  /** Bytes of a skipped value still to discard, the reply to hand over after them, and their trailer. */
  let skipping = 0
  let skippedReply: Reply | undefined
  let trailer: Buffer | undefined
  let broken = false

  const fail = (reason: string): void => {
    broken = true
    chunks = []
    buffered = 0
    handlers.violation(reason)
  }

  /** Discards up to `skipping` bytes of `buf` from `from`, checking the trailer; the bytes used, or -1 after a violation. */
  const discard = (buf: Buffer, from: number): number => {
    const count = Math.min(skipping, buf.length - from)
    const tail = trailer?.length ?? 0
    for (let i = Math.max(0, skipping - tail); i < count; i++) {
      if (buf[from + i] !== (trailer as Buffer)[tail - (skipping - i)]) {
        fail('a value not followed by CRLF where its announced length ends')
        return -1
      }
    }
    skipping -= count
    return count
  }

  return (chunk: Buffer) => {
    if (broken) return
    let start = 0
    if (skipping > 0) {
      start = discard(chunk, 0)
      if (start < 0) return
      if (skipping > 0) return
      handlers.reply(skippedReply as Reply)
      skippedReply = undefined
      if (broken || start === chunk.length) return
    }
    const piece = start === 0 ? chunk : chunk.subarray(start)
    chunks.push(piece)
    buffered += piece.length
    if (buffered < needed) return
    const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, buffered)
    let offset = 0
    needed = 0
    while (offset < buf.length) {
      parse(buf, offset, handlers.expected(), frame)
      const kind = frame.kind
      if (kind === NEED) {
        needed = frame.end - offset
        break
      }
      if (kind === VIOLATION) return fail(frame.reason)
      const reply = frame.reply as Reply
      frame.reply = undefined
      if (kind === REPLY) {
        offset = frame.end
      } else {
        skipping = frame.skip
        trailer = frame.trailer
        const used = discard(buf, frame.end)
        if (used < 0) return
        offset = frame.end + used
        if (skipping > 0) {
          skippedReply = reply
          chunks = []
          buffered = 0
          return
        }
      }
      handlers.reply(reply)
      if (broken) return
    }
    if (offset === buf.length) {
      chunks = []
      buffered = 0
    } else {
      const rest = offset === 0 ? buf : buf.subarray(offset)
      chunks = [rest]
      buffered = rest.length
    }
  }
}
