// The test harness itself, checked against real memcached processes with raw sockets and node:tls
// (never the store): the TLS, -Y token and -B ascii variants of MemcachedServer, the certificates,
// and the misbehaving peers. Each test asserts the exact bytes that went over the wire.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import tls from 'node:tls'
import { makeCertificates } from './harness/certs.ts'
import { MemcachedServer, sleep } from './harness/memcached.ts'
import {
  cuttingProxy,
  dumpRewritingProxy,
  keyRewritingProxy,
  type SwappingImpostorOptions,
  swappingImpostor,
  tricklingServer,
} from './harness/peers.ts'

/** One raw connection: everything it received, the error it ended with, and waits on both. */
class Peer {
  received: Buffer = Buffer.alloc(0)
  error: (Error & { code?: string }) | undefined
  readonly closed: Promise<void>
  readonly #checks = new Set<() => void>()

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk])
      for (const check of this.#checks) check()
    })
    socket.on('error', (error) => {
      this.error = error
    })
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        for (const check of this.#checks) check()
        resolve()
      }),
    )
  }

  send(data: string | Buffer): void {
    this.socket.write(data)
  }

  /** Resolves with everything received from `from` on once `done` accepts it; rejects on close or after 3 s. */
  until(done: (data: Buffer) => boolean, from = 0): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const data = this.received.subarray(from)
        if (done(data)) finish(() => resolve(data))
        else if (this.socket.destroyed) finish(() => reject(new Error(`closed first (${this.error?.code}); got ${show(data)}`)))
      }
      const timer = setTimeout(
        () => finish(() => reject(new Error(`no complete reply in 3 s; got ${show(this.received.subarray(from))}`))),
        3000,
      )
      const finish = (settle: () => void) => {
        clearTimeout(timer)
        this.#checks.delete(check)
        settle()
      }
      this.#checks.add(check)
      check()
    })
  }

  /** Sends `request` and resolves with the reply once it ends with `ending`. */
  async ask(request: string | Buffer, ending = '\r\n'): Promise<string> {
    const from = this.received.length
    this.send(request)
    return (await this.until((data) => data.toString('latin1').endsWith(ending), from)).toString('latin1')
  }

  /** Resolves once the connection has closed, failing after 3 s. */
  async closedWithin(): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still open after 3 s; got ${show(this.received)}`)), 3000)
    })
    await Promise.race([this.closed, late]).finally(() => clearTimeout(timer))
  }

  end(): void {
    this.socket.destroy()
  }
}

function show(data: Buffer): string {
  return JSON.stringify(data.toString('latin1').slice(0, 200))
}

function tcp(address: string): Peer {
  const [host, port] = address.split(':')
  return new Peer(net.connect(Number(port), host))
}

/** A TLS connection; writes before the handshake completes are queued by node:tls. */
function secure(port: number, options: tls.ConnectionOptions = {}): Peer {
  return new Peer(tls.connect({ host: '127.0.0.1', port, ...options }))
}

/** A binary-protocol request with a key and no extras or value. */
function binaryRequest(opcode: number, key: string, opaque: number): Buffer {
  const header = Buffer.alloc(24)
  header[0] = 0x80
  header[1] = opcode
  header.writeUInt16BE(Buffer.byteLength(key), 2)
  header.writeUInt32BE(Buffer.byteLength(key), 8)
  header.writeUInt32BE(opaque, 12)
  return Buffer.concat([header, Buffer.from(key)])
}

interface BinaryReply {
  opcode: number
  status: number
  opaque: number
  key: string
  value: Buffer
}

/** The complete binary replies at the start of `data`. */
function binaryReplies(data: Buffer): BinaryReply[] {
  const replies: BinaryReply[] = []
  for (let at = 0; data.length - at >= 24; ) {
    const body = data.readUInt32BE(at + 8)
    if (data.length - at < 24 + body) break
    const keyLength = data.readUInt16BE(at + 2)
    const extras = data[at + 4]
    const start = at + 24 + extras
    replies.push({
      opcode: data[at + 1],
      status: data.readUInt16BE(at + 6),
      opaque: data.readUInt32BE(at + 12),
      key: data.toString('latin1', start, start + keyLength),
      value: data.subarray(start + keyLength, at + 24 + body),
    })
    at += 24 + body
  }
  return replies
}

const GET = 0x00
const NOOP = 0x0a
const GETK = 0x0c

const certs = makeCertificates()

describe('MemcachedServer variants', () => {
  it('TLS: answers version to a client that trusts the CA, not to plain TCP; command, inspect and restart work over TLS', async () => {
    const server = await MemcachedServer.start({ tls: { cert: certs.server.cert, key: certs.server.key } })
    try {
      const client = secure(server.port, { ca: certs.ca.certPem })
      assert.equal(await client.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      assert.equal((client.socket as tls.TLSSocket).authorized, true)
      // The harness's own channel: a meta set, then the item as inspect (meta get, base64 key) sees it.
      assert.equal(await client.ask(`ms ${Buffer.from('tls-key').toString('base64')} 2 b T60\r\nhi\r\n`), 'HD\r\n')
      client.end()
      assert.equal((await server.inspect('tls-key'))?.value.toString(), 'hi')
      assert.equal(await server.command('version'), 'VERSION 1.6.18\r\n')

      const plain = tcp(server.address)
      plain.send('version\r\n')
      await plain.closedWithin()
      assert.equal(plain.received.length, 0, `plain TCP got ${show(plain.received)}`)

      const port = server.port
      await server.restart()
      assert.equal(server.port, port)
      const again = secure(server.port, { ca: certs.ca.certPem })
      assert.equal(await again.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      again.end()
    } finally {
      await server.stop()
    }
  })

  it('TLS: the wrong-host certificate fails the host check for 127.0.0.1, the self-signed one the chain check', async () => {
    const wrong = await MemcachedServer.start({ tls: { cert: certs.wrongHost.cert, key: certs.wrongHost.key } })
    const unknown = await MemcachedServer.start({ tls: { cert: certs.selfSigned.cert, key: certs.selfSigned.key } })
    try {
      const mismatch = secure(wrong.port, { ca: certs.ca.certPem })
      await mismatch.closedWithin()
      assert.equal(mismatch.error?.code, 'ERR_TLS_CERT_ALTNAME_INVALID')
      // The same certificate passes for the name it carries: it is the CA's, only the name is wrong.
      const named = secure(wrong.port, { ca: certs.ca.certPem, servername: 'wrong.example' })
      assert.equal(await named.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      named.end()

      const untrusted = secure(unknown.port, { ca: certs.ca.certPem })
      await untrusted.closedWithin()
      assert.equal(untrusted.error?.code, 'DEPTH_ZERO_SELF_SIGNED_CERT')
    } finally {
      await Promise.all([wrong.stop(), unknown.stop()])
    }
  })

  it('TLS with verifyClient: no answer without a client certificate or with one from another CA; the harness presents its own', async () => {
    const server = await MemcachedServer.start({
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca.cert, verifyClient: true, client: certs.client },
    })
    try {
      const anonymous = secure(server.port, { ca: certs.ca.certPem })
      anonymous.send('version\r\n')
      await anonymous.closedWithin()
      assert.equal(anonymous.received.length, 0, `got ${show(anonymous.received)}`)
      // TLS 1.3 (what Node and memcached agree on here) has an alert of its own for this; TLS 1.2 says handshake failure.
      assert.match(anonymous.error?.code ?? '', /^ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED$|^ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE$/)

      const stranger = secure(server.port, { ca: certs.ca.certPem, cert: certs.selfSigned.certPem, key: certs.selfSigned.keyPem })
      stranger.send('version\r\n')
      await stranger.closedWithin()
      assert.equal(stranger.received.length, 0)
      assert.equal(stranger.error?.code, 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA')

      const known = secure(server.port, { ca: certs.ca.certPem, cert: certs.client.certPem, key: certs.client.keyPem })
      assert.equal(await known.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      known.end()

      assert.equal(await server.command('version'), 'VERSION 1.6.18\r\n')
      await server.restart()
      assert.equal(await server.command('mn'), 'MN\r\n')
    } finally {
      await server.stop()
    }
  })

  it('tokens (-Y): every command is refused until a set carrying "user password" authenticates the connection', async () => {
    const server = await MemcachedServer.start({
      tokens: [
        ['alice', 'secret'],
        ['bob', 'hunter2'],
      ],
    })
    try {
      const client = tcp(server.address)
      assert.equal(await client.ask('version\r\n'), 'CLIENT_ERROR unauthenticated\r\n')
      assert.equal(await client.ask('mn\r\n'), 'CLIENT_ERROR unauthenticated\r\n')
      assert.equal(await client.ask('set auth 0 0 9\r\nalice bad\r\n'), 'CLIENT_ERROR authentication failure\r\n')
      assert.equal(await client.ask('set auth 0 0 11\r\nbob hunter2\r\n'), 'STORED\r\n')
      assert.equal(await client.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      // The authenticating set stores nothing.
      assert.equal(await client.ask('mg auth v\r\n'), 'EN\r\n')
      assert.equal(await client.ask(`ms ${Buffer.from('token-key').toString('base64')} 2 b T60\r\nhi\r\n`), 'HD\r\n')
      client.end()
      // The harness authenticates its own connections with the first token.
      assert.equal((await server.inspect('token-key'))?.value.toString(), 'hi')
      assert.equal(await server.command('mn'), 'MN\r\n')

      const file = server.authFile
      await server.restart()
      assert.equal(server.authFile, file)
      const again = tcp(server.address)
      assert.equal(await again.ask('version\r\n'), 'CLIENT_ERROR unauthenticated\r\n')
      again.end()
      assert.equal(await server.command('version'), 'VERSION 1.6.18\r\n')
    } finally {
      await server.stop()
    }
  })

  it('authFile (-Y): an existing file is used as is; the harness authenticates with its first line', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'memcached-spec-'))
    const file = path.join(dir, 'authfile')
    writeFileSync(file, 'carol:first\ndave:second\n')
    const server = await MemcachedServer.start({ authFile: file })
    try {
      assert.equal(server.authFile, file)
      assert.equal(await server.command('version'), 'VERSION 1.6.18\r\n')
      const client = tcp(server.address)
      assert.equal(await client.ask('mn\r\n'), 'CLIENT_ERROR unauthenticated\r\n')
      assert.equal(await client.ask('set x 0 0 11\r\ndave second\r\n'), 'STORED\r\n')
      assert.equal(await client.ask('mn\r\n'), 'MN\r\n')
      client.end()
    } finally {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('-B ascii: meta commands answer; a binary request is read as a text line (no reply until a newline, then ERROR)', async () => {
    const [ascii, auto] = await Promise.all([MemcachedServer.start({ protocol: 'ascii' }), MemcachedServer.start()])
    try {
      const client = tcp(ascii.address)
      assert.equal(await client.ask('mn\r\n'), 'MN\r\n')
      assert.equal(await client.ask('ms k 2 T60\r\nhi\r\n'), 'HD\r\n')
      assert.equal(await client.ask('mg k v k O123\r\n'), 'VA 2 kk O123\r\nhi\r\n')
      client.end()

      // A connection's first byte picks its protocol, so the binary request must come first on a fresh one.
      const binary = tcp(ascii.address)
      binary.send(binaryRequest(GET, 'k', 1))
      await sleep(100)
      assert.equal(binary.received.length, 0, 'nothing for the binary request alone')
      assert.equal(await binary.ask('\r\n'), 'ERROR\r\n')
      binary.end()

      // The same request to an auto-negotiating memcached gets a binary reply.
      const other = tcp(auto.address)
      other.send(binaryRequest(GET, 'k', 1))
      const [reply] = binaryReplies(await other.until((data) => binaryReplies(data).length === 1))
      assert.deepEqual([reply.opcode, reply.status, reply.opaque], [GET, 1, 1])
      other.end()
    } finally {
      await Promise.all([ascii.stop(), auto.stop()])
    }
  })
})

describe('cuttingProxy', () => {
  let server: MemcachedServer
  const value = '0123456789'.repeat(10)
  before(async () => {
    server = await MemcachedServer.start()
    assert.equal(await server.command(`ms cut 100 T0\r\n${value}`), 'HD\r\n')
    assert.equal(await server.command(`ms big ${300 * 1024} T0\r\n${'b'.repeat(300 * 1024)}`), 'HD\r\n')
  })
  after(() => server.stop())

  it('cutNext: a meta reply gets exactly N bytes through, then the connection closes; new connections are proxied whole', async () => {
    const proxy = await cuttingProxy(server.address)
    try {
      const full = `VA 100\r\n${value}\r\n`
      const client = tcp(proxy.address)
      assert.equal(await client.ask('mg cut v\r\n'), full)
      proxy.cutNext({ afterBytes: 40 })
      const from = client.received.length
      client.send('mg cut v\r\n')
      await client.closedWithin()
      assert.equal(client.received.subarray(from).toString('latin1'), full.slice(0, 40))
      assert.equal(proxy.cuts, 1)

      const next = tcp(proxy.address)
      assert.equal(await next.ask('mg cut v\r\n'), full)
      assert.equal(await next.ask('mg cut v\r\n'), full, 'the cut was one shot')
      next.end()
      assert.equal(proxy.cuts, 1)
    } finally {
      await proxy.close()
    }
  })

  it('cutRequest: the binary reply to the Nth request gets afterBytes through', async () => {
    const proxy = await cuttingProxy(server.address, { cutRequest: 2, afterBytes: 30 })
    try {
      const client = tcp(proxy.address)
      client.send(binaryRequest(GET, 'cut', 7))
      const whole = await client.until((data) => binaryReplies(data).length === 1)
      assert.equal(whole.length, 24 + 4 + 100)
      assert.equal(binaryReplies(whole)[0].value.toString(), value)
      client.send(binaryRequest(GET, 'cut', 7))
      await client.closedWithin()
      assert.deepEqual(client.received.subarray(whole.length), whole.subarray(0, 30))
      assert.equal(proxy.requests, 2)
    } finally {
      await proxy.close()
    }
  })

  it('cutLargeReplies: a 300 KB reply stops after exactly 100 KB; small replies pass', async () => {
    const proxy = await cuttingProxy(server.address)
    proxy.cutLargeReplies(100 * 1024)
    try {
      const small = tcp(proxy.address)
      assert.equal(await small.ask('mg cut v\r\n'), `VA 100\r\n${value}\r\n`)
      small.end()

      const client = tcp(proxy.address)
      client.send('mg big v\r\n')
      await client.closedWithin()
      assert.equal(client.received.length, 100 * 1024)
      assert.equal(client.received.toString('latin1', 0, 13), `VA ${300 * 1024}\r\nbb`)
      assert.equal(proxy.cuts, 1)
    } finally {
      await proxy.close()
    }
  })

  it('resetAll: every live connection is reset at once; later ones work', async () => {
    const proxy = await cuttingProxy(server.address)
    try {
      const clients = [tcp(proxy.address), tcp(proxy.address)]
      for (const client of clients) assert.equal(await client.ask('mn\r\n'), 'MN\r\n')
      assert.equal(proxy.live, 2)
      assert.equal(proxy.resetAll(), 2)
      for (const client of clients) {
        await client.closedWithin()
        assert.equal(client.error?.code, 'ECONNRESET')
      }
      const later = tcp(proxy.address)
      assert.equal(await later.ask('mn\r\n'), 'MN\r\n')
      later.end()
      assert.deepEqual([proxy.connections, proxy.resets], [3, 2])
    } finally {
      await proxy.close()
    }
  })
})

describe('swappingImpostor', () => {
  let server: MemcachedServer
  const big = { a: 'a'.repeat(200 * 1024), b: 'b'.repeat(200 * 1024) }
  before(async () => {
    server = await MemcachedServer.start()
    for (const [key, data] of [
      ['k1', 'v1'],
      ['k2', 'v2'],
      ['big1', big.a],
      ['big2', big.b],
    ]) {
      assert.equal(await server.command(`ms ${key} ${data.length} T0\r\n${data}`), 'HD\r\n')
    }
  })
  after(() => server.stop())

  // A get reply waits for its partner as long as it takes (no hold timeout), so a slow machine cannot unswap a pair.
  const patient: SwappingImpostorOptions = { holdMs: Number.POSITIVE_INFINITY }

  /** Sends `requests` in one write through a new binary impostor and returns `count` replies and its swap count. */
  async function throughBinary(requests: Buffer[], count: number, options = patient) {
    const impostor = await swappingImpostor(server.address, 'binary', options)
    try {
      const client = tcp(impostor.address)
      client.send(Buffer.concat(requests))
      const replies = binaryReplies(await client.until((data) => binaryReplies(data).length === count))
      client.end()
      return { replies, swaps: impostor.swaps }
    } finally {
      await impostor.close()
    }
  }

  it('binary: two pipelined GETK replies come back swapped, each with its own key and opaque', async () => {
    const { replies, swaps } = await throughBinary([binaryRequest(GETK, 'k1', 0x11), binaryRequest(GETK, 'k2', 0x22)], 2)
    assert.deepEqual(
      replies.map((reply) => [reply.key, reply.value.toString(), reply.opaque]),
      [
        ['k2', 'v2', 0x22],
        ['k1', 'v1', 0x11],
      ],
    )
    assert.equal(swaps, 1)
  })

  it('binary with rewriteOpaque: the opaques are in request order, the keys and values are not', async () => {
    const { replies } = await throughBinary([binaryRequest(GETK, 'k1', 0x11), binaryRequest(GETK, 'k2', 0x22)], 2, {
      ...patient,
      rewriteOpaque: true,
    })
    assert.deepEqual(
      replies.map((reply) => [reply.key, reply.value.toString(), reply.opaque]),
      [
        ['k2', 'v2', 0x11],
        ['k1', 'v1', 0x22],
      ],
    )
  })

  it('binary: 200 KB replies, framed across many chunks, are swapped whole', async () => {
    const { replies, swaps } = await throughBinary([binaryRequest(GET, 'big1', 1), binaryRequest(GET, 'big2', 2)], 2)
    assert.deepEqual(
      replies.map((reply) => reply.opaque),
      [2, 1],
    )
    assert.equal(replies[0].value.toString(), big.b)
    assert.equal(replies[1].value.toString(), big.a)
    assert.equal(swaps, 1)
  })

  it('binary: a reply that is not a get keeps the order around it', async () => {
    const requests = [binaryRequest(GETK, 'k1', 1), binaryRequest(NOOP, '', 2), binaryRequest(GETK, 'k2', 3)]
    // The default hold: the last GETK, with no partner, goes out 50 ms later.
    const { replies, swaps } = await throughBinary(requests, 3, {})
    assert.deepEqual(
      replies.map((reply) => [reply.opcode, reply.opaque]),
      [
        [GETK, 1],
        [NOOP, 2],
        [GETK, 3],
      ],
    )
    assert.equal(swaps, 0)
  })

  /** Sends `requests` in one write through a new meta impostor and returns the text once it ends with `ending`. */
  async function throughMeta(requests: string, ending: string, options = patient): Promise<string> {
    const impostor = await swappingImpostor(server.address, 'meta', options)
    try {
      const client = tcp(impostor.address)
      const reply = await client.ask(requests, ending)
      client.end()
      return reply
    } finally {
      await impostor.close()
    }
  }

  it('meta: two pipelined mg replies come back swapped (hits and misses), O tokens with them or rewritten', async () => {
    const pair = 'mg k1 v k O1\r\nmg k2 v k O2\r\n'
    assert.equal(await throughMeta(pair, 'v1\r\n'), 'VA 2 kk2 O2\r\nv2\r\nVA 2 kk1 O1\r\nv1\r\n')
    assert.equal(await throughMeta(pair, 'v1\r\n', { ...patient, rewriteOpaque: true }), 'VA 2 kk2 O1\r\nv2\r\nVA 2 kk1 O2\r\nv1\r\n')
    assert.equal(await throughMeta('mg k1 v k O1\r\nmg nokey v k O2\r\n', 'v1\r\n'), 'EN knokey O2\r\nVA 2 kk1 O1\r\nv1\r\n')
  })

  it('meta: other replies keep their place', async () => {
    assert.equal(await throughMeta('mg k1 v O1\r\nmn\r\nmg k2 v O2\r\n', 'v2\r\n', {}), 'VA 2 O1\r\nv1\r\nMN\r\nVA 2 O2\r\nv2\r\n')
  })
})

describe('keyRewritingProxy', () => {
  let server: MemcachedServer
  before(async () => {
    // Both protocols whatever TEST_PROTOCOL says (-B auto, memcached's default): the binary test needs it.
    server = await MemcachedServer.start({ args: ['-B', 'auto'] })
    for (const [key, data] of [
      ['k1', 'v1'],
      ['k2', 'v2'],
    ]) {
      assert.equal(await server.command(`ms ${key} ${data.length} T0\r\n${data}`), 'HD\r\n')
    }
  })
  after(() => server.stop())

  it('meta: a get of one key is asked as the other; memcached answers for that one and echoes it; other keys pass', async () => {
    const proxy = await keyRewritingProxy(server.address, 'k1', 'k2')
    try {
      const client = tcp(proxy.address)
      assert.equal(await client.ask('mg k1 v k O1\r\n', 'v2\r\n'), 'VA 2 kk2 O1\r\nv2\r\n')
      assert.equal(await client.ask('mg k3 v k O2\r\n'), 'EN kk3 O2\r\n')
      client.end()
      assert.equal(proxy.rewrites, 1)
    } finally {
      await proxy.close()
    }
  })

  it('binary: GETK of one key comes back with the other key and its value', async () => {
    const proxy = await keyRewritingProxy(server.address, 'k1', 'k2')
    try {
      const client = tcp(proxy.address)
      client.send(binaryRequest(GETK, 'k1', 0x33))
      const [reply] = binaryReplies(await client.until((data) => binaryReplies(data).length === 1))
      client.end()
      assert.deepEqual([reply.key, reply.value.toString(), reply.opaque], ['k2', 'v2', 0x33])
    } finally {
      await proxy.close()
    }
  })

  it('refuses keys of different lengths, which would break a binary header', async () => {
    await assert.rejects(keyRewritingProxy(server.address, 'k1', 'k22'), /same length in bytes/)
  })
})

describe('dumpRewritingProxy', () => {
  let server: MemcachedServer
  before(async () => {
    server = await MemcachedServer.start()
    assert.equal(await server.command('ms d1 2 T0\r\nv1'), 'HD\r\n')
    assert.equal(await server.command('ms d2 2 T0\r\nv2'), 'HD\r\n')
  })
  after(() => server.stop())

  it("rewrites the dump's lines for the chosen key only; other connections pass, their requests recorded", async () => {
    const proxy = await dumpRewritingProxy(server.address, (line) => line.replace(/^key=d1 exp=-1 /, 'key=d1 exp=123 '))
    try {
      const direct = await server.command('lru_crawler metadump hash')
      assert.match(direct, /^key=d1 exp=-1 /m)
      const client = tcp(proxy.address)
      const dumped = await client.ask('lru_crawler metadump hash\r\n', 'END\r\n')
      client.end()
      assert.equal(dumped, direct.replace(/^key=d1 exp=-1 /m, 'key=d1 exp=123 '))
      assert.match(dumped, /^key=d2 exp=-1 /m)

      const reader = tcp(proxy.address)
      assert.equal(await reader.ask('mg d2 v\r\n', 'v2\r\n'), 'VA 2\r\nv2\r\n')
      reader.end()
      assert.deepEqual([proxy.dumps, proxy.rewritten], [1, 1])
      assert.deepEqual([proxy.requestsMentioning('d2'), proxy.requestsMentioning('d1')], [1, 0])
    } finally {
      await proxy.close()
    }
  })
})

describe('tricklingServer', () => {
  const line = (n: number) => `key=t:${n} exp=-1 la=1 cas=1 fetch=no cls=1 size=100\n`

  it('trickles metadump lines one per interval and never ends; answers version and mn', async () => {
    const server = await tricklingServer({ prefix: 't:', intervalMs: 30 })
    try {
      const other = tcp(server.address)
      assert.equal(await other.ask('version\r\n'), 'VERSION 1.6.18\r\n')
      assert.equal(await other.ask('mn\r\n'), 'MN\r\n')
      other.end()

      const client = tcp(server.address)
      const started = performance.now()
      const dump = await client.ask('lru_crawler metadump hash\r\n', line(3))
      const elapsed = performance.now() - started
      assert.equal(dump, [0, 1, 2, 3].map(line).join(''))
      assert.ok(elapsed >= 80, `4 lines in ${elapsed.toFixed(0)} ms: not trickled`)
      assert.equal(server.dumps, 1)
      client.end()
    } finally {
      await server.close()
    }
  })

  it('stallAfterFirstLine: one line, then silence on an open connection', async () => {
    const server = await tricklingServer({ prefix: 't:', intervalMs: 20, stallAfterFirstLine: true })
    try {
      const client = tcp(server.address)
      assert.equal(await client.ask('lru_crawler metadump all\r\n', '\n'), line(0))
      await sleep(150)
      assert.equal(client.received.toString('latin1'), line(0))
      assert.equal(client.socket.destroyed, false)
      assert.equal(server.linesSent, 1)
      client.end()
    } finally {
      await server.close()
    }
  })
})
