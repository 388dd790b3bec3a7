// An ElastiCache configuration endpoint for the tests: answers `config get cluster` byte for byte as
// ElastiCache does (CONFIG cluster 0 <bytes>, the version line ending in LF, the nodes as
// host|ip|port separated by spaces, then an empty line and END), with the version and nodes the test
// sets. It can also answer only the old key (`get AmazonElastiCache:cluster`), answer ERROR to
// everything, close every connection or say nothing. With `tls` it listens with TLS only, as an
// ElastiCache endpoint with in-transit encryption does.
import net from 'node:net'
import tls from 'node:tls'
import type { CertificatePair } from './certs.ts'
import { freePort } from './memcached.ts'

export type EndpointMode = 'config' | 'legacy' | 'error' | 'close' | 'silent'

export interface ConfigEndpoint {
  readonly address: string
  /** Polls answered (or refused) so far. */
  readonly polls: number
  /** What the next polls get: a version and the nodes (host:port each; the IP field is given, the host name is `node<i>`). */
  set(version: number, nodes: readonly string[]): void
  mode(mode: EndpointMode): void
  close(): Promise<void>
}

export interface EndpointOptions {
  /** Listen with TLS only, presenting this certificate. */
  tls?: CertificatePair
  /** The host-name field of every node (default `node<i>.cache.example`, which does not resolve). */
  hostName?: string
}

/** The configuration body: the version line, then the nodes, as ElastiCache writes them. */
export function configurationBody(version: number, nodes: readonly string[], hostName?: string): string {
  const entries = nodes.map((node, i) => {
    const colon = node.lastIndexOf(':')
    return `${hostName ?? `node${i}.cache.example`}|${node.slice(0, colon)}|${node.slice(colon + 1)}`
  })
  return `${version}\n${entries.join(' ')}\n`
}

export async function configEndpoint(version: number, nodes: readonly string[], options: EndpointOptions = {}): Promise<ConfigEndpoint> {
  let body = configurationBody(version, nodes, options.hostName)
  let current: EndpointMode = 'config'
  let polls = 0
  const sockets = new Set<net.Socket>()
  const serve = (socket: net.Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    if (current === 'close') return void socket.destroy()
    let input = ''
    socket.on('data', (chunk: Buffer) => {
      input += chunk.toString('latin1')
      for (let end = input.indexOf('\r\n'); end >= 0; end = input.indexOf('\r\n')) {
        const line = input.slice(0, end)
        input = input.slice(end + 2)
        polls++
        if (current === 'silent') continue
        if (current === 'error') socket.write('ERROR\r\n')
        else if (line === 'config get cluster' && current === 'config')
          socket.write(`CONFIG cluster 0 ${Buffer.byteLength(body)}\r\n${body}\r\nEND\r\n`)
        else if (line === 'get AmazonElastiCache:cluster' && current === 'legacy') {
          socket.write(`VALUE AmazonElastiCache:cluster 0 ${Buffer.byteLength(body)}\r\n${body}\r\nEND\r\n`)
        } else socket.write('ERROR\r\n')
      }
    })
  }
  const server = options.tls ? tls.createServer({ cert: options.tls.certPem, key: options.tls.keyPem }, serve) : net.createServer(serve)
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${port}`,
    get polls() {
      return polls
    },
    set(nextVersion, nextNodes) {
      body = configurationBody(nextVersion, nextNodes, options.hostName)
    },
    mode(mode) {
      current = mode
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
