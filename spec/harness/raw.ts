// A plain memcached client of the tests' own, for reading and writing raw bytes behind the store's
// back ("another application"). It speaks meta commands with base64 keys, which every server the
// suite starts understands (-B ascii included), over one connection per server.
import { execFileSync } from 'node:child_process'
import net from 'node:net'

interface Waiter {
  resolve(reply: { line: string; value?: Buffer }): void
  reject(err: Error): void
}

class RawConnection {
  readonly #socket: net.Socket
  readonly #waiting: Waiter[] = []
  #buffer = Buffer.alloc(0)

  constructor(address: string) {
    const [host, port] = address.split(':')
    this.#socket = net.connect(Number(port), host)
    this.#socket.on('data', (chunk) => this.#read(chunk))
    this.#socket.on('error', (err) => {
      for (const waiter of this.#waiting.splice(0)) waiter.reject(err)
    })
  }

  send(request: Buffer): Promise<{ line: string; value?: Buffer }> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject })
      this.#socket.write(request)
    })
  }

  close(): void {
    this.#socket.destroy()
  }

  #read(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk])
    for (;;) {
      const end = this.#buffer.indexOf('\r\n')
      if (end < 0) return
      const line = this.#buffer.toString('latin1', 0, end)
      const size = /^VA (\d+)/.exec(line)?.[1]
      if (size === undefined) {
        this.#buffer = this.#buffer.subarray(end + 2)
        this.#waiting.shift()?.resolve({ line })
        continue
      }
      const total = end + 2 + Number(size) + 2
      if (this.#buffer.length < total) return
      const value = Buffer.from(this.#buffer.subarray(end + 2, end + 2 + Number(size)))
      this.#buffer = this.#buffer.subarray(total)
      this.#waiting.shift()?.resolve({ line, value })
    }
  }
}

/** A raw client over one or more servers (a key goes to the server its hash picks, like any client). */
export class RawClient {
  readonly #connections: RawConnection[]

  constructor(servers: string) {
    this.#connections = servers.split(',').map((address) => new RawConnection(address.trim()))
  }

  async get(key: string): Promise<{ value: Buffer | null }> {
    const { line, value } = await this.#on(key).send(Buffer.from(`mg ${b64(key)} b v\r\n`))
    if (line.startsWith('VA')) return { value: value ?? Buffer.alloc(0) }
    if (line === 'EN') return { value: null }
    throw new Error(`unexpected reply to mg: ${line}`)
  }

  async set(key: string, value: string | Buffer, options: { expires?: number } = {}): Promise<boolean> {
    const data = Buffer.from(value)
    const request = Buffer.concat([Buffer.from(`ms ${b64(key)} ${data.length} b T${options.expires ?? 0}\r\n`), data, Buffer.from('\r\n')])
    const { line } = await this.#on(key).send(request)
    if (line !== 'HD') throw new Error(`unexpected reply to ms: ${line}`)
    return true
  }

  async delete(key: string): Promise<boolean> {
    const { line } = await this.#on(key).send(Buffer.from(`md ${b64(key)} b\r\n`))
    return line === 'HD'
  }

  close(): void {
    for (const connection of this.#connections) connection.close()
  }

  #on(key: string): RawConnection {
    let hash = 0
    for (let i = 0; i < key.length; i++) hash = (31 * hash + key.charCodeAt(i)) | 0
    return this.#connections[Math.abs(hash) % this.#connections.length]
  }
}

function b64(key: string): string {
  return Buffer.from(key).toString('base64')
}

/**
 * Writes a key and returns only once memcached has stored it, blocking the event loop meanwhile (a
 * child process does the write): for a test that must overtake a write the store is about to send.
 */
export function setSync(address: string, key: string, value: string, expires = 0): void {
  const script = `
    const [host, port] = ${JSON.stringify(address)}.split(':')
    const data = Buffer.from(${JSON.stringify(value)})
    const socket = require('node:net').connect(Number(port), host, () => {
      socket.write(Buffer.concat([Buffer.from('ms ' + ${JSON.stringify(b64(key))} + ' ' + data.length + ' b T${expires}\\r\\n'), data, Buffer.from('\\r\\n')]))
    })
    socket.on('data', (reply) => { if (!reply.toString().startsWith('HD')) process.exitCode = 1; socket.destroy() })
  `
  execFileSync(process.execPath, ['-e', script], { stdio: 'inherit', timeout: 5000 })
}
