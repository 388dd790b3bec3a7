import type { Socket } from 'node:net'

// The parts of memjs 1.3 the store relies on. They are public properties of memjs's Client and
// Server (memjs's own flush/stats/quit use them the same way) but are missing from @types/memjs.

export interface MemjsResponse {
  header: { magic: number; opcode: number; status: number; opaque: number; cas: Buffer }
  extras: Buffer
  val: Buffer
}

export interface MemjsServer {
  host: string
  port: number
  username?: string
  password?: string
  wakeupAt?: number
  responseCallbacks: Record<number, unknown>
  errorCallbacks: Record<number, unknown>
  requestTimeouts: number[]
  _socket?: Socket
  connected: boolean
  onResponse(seq: number, fn: (response: MemjsResponse) => void): void
  onError(seq: number, fn: (err: unknown) => void): void
  write(request: Buffer): void
  error(err: unknown): void
  close(): void
}

export interface MemjsClient {
  seq: number
  servers: MemjsServer[]
  options: Record<string, unknown>
  server(key: string): MemjsServer | null
  getServer(key: string): number
  close(): void
}

export function serverAddress(server: MemjsServer): string {
  return `${server.host}:${server.port}`
}
