// The client-side limit on this machine: a minimal binary-protocol memcached client over one socket.
// Requests are written corked (one write per event-loop turn), replies are taken in order, values
// are JSON. No checks at all: no opaque, opcode or key comparison, no deadlines, no reconnection,
// no lock, no CAS. Nothing a session store could ship; what every store is measured against.
import net from 'node:net'

type Done = (err?: unknown) => void

const HEADER = 24
const GETK = 0x0c
const SET = 0x01
const TOUCH = 0x1c
const DELETE = 0x04

export class PipelinedClient {
  readonly #socket: net.Socket
  readonly #waiting: Array<{ done: Done; parse: boolean }> = []
  #head = 0
  #buffer: Buffer = Buffer.alloc(0)
  #corked = false

  constructor(address: string) {
    const colon = address.lastIndexOf(':')
    this.#socket = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon))
    this.#socket.setNoDelay(true)
    this.#socket.on('data', (chunk: Buffer) => this.#read(chunk))
  }

  get(key: string, done: Done): void {
    this.#send(frame(GETK, key, 0, undefined), done, true)
  }

  set(key: string, value: unknown, expiry: number, done: Done): void {
    const buf = frame(SET, key, 8, Buffer.from(JSON.stringify(value)))
    buf.writeUInt32BE(0, HEADER)
    buf.writeUInt32BE(expiry, HEADER + 4)
    this.#send(buf, done, false)
  }

  touch(key: string, expiry: number, done: Done): void {
    const buf = frame(TOUCH, key, 4, undefined)
    buf.writeUInt32BE(expiry, HEADER)
    this.#send(buf, done, false)
  }

  delete(key: string, done: Done): void {
    this.#send(frame(DELETE, key, 0, undefined), done, false)
  }

  close(): void {
    this.#socket.destroy()
  }

  #send(bytes: Buffer, done: Done, parse: boolean): void {
    this.#waiting.push({ done, parse })
    if (!this.#corked) {
      this.#corked = true
      this.#socket.cork()
      setImmediate(() => {
        this.#corked = false
        this.#socket.uncork()
      })
    }
    this.#socket.write(bytes)
  }

  #read(chunk: Buffer): void {
    let buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk])
    let offset = 0
    while (buf.length - offset >= HEADER) {
      const end = offset + HEADER + buf.readUInt32BE(offset + 8)
      if (buf.length < end) break
      const waiter = this.#waiting[this.#head++]
      if (waiter.parse && buf.readUInt16BE(offset + 6) === 0) {
        const valueStart = offset + HEADER + buf[offset + 4] + buf.readUInt16BE(offset + 2)
        JSON.parse(buf.toString('utf8', valueStart, end))
      }
      offset = end
      waiter.done()
    }
    if (this.#head === this.#waiting.length) {
      this.#waiting.length = 0
      this.#head = 0
    }
    buf = buf.subarray(offset)
    this.#buffer = buf
  }
}

function frame(opcode: number, key: string, extras: number, value: Buffer | undefined): Buffer {
  const keyBytes = Buffer.byteLength(key)
  const valueBytes = value?.length ?? 0
  const buf = Buffer.alloc(HEADER + extras + keyBytes + valueBytes)
  buf[0] = 0x80
  buf[1] = opcode
  buf.writeUInt16BE(keyBytes, 2)
  buf[4] = extras
  buf.writeUInt32BE(extras + keyBytes + valueBytes, 8)
  buf.write(key, HEADER + extras)
  value?.copy(buf, HEADER + extras + keyBytes)
  return buf
}
