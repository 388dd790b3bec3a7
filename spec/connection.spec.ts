// A store's connection against a scripted peer (spec/harness/scripted-peer.ts), on both protocols,
// through the public API only: a reply that trickles in one byte at a time is reassembled and the
// session served; a reply carrying another request's opaque is EPROTOCOL, and once the peer answers
// honestly the store's next operation opens a new connection and works. Also checks that the peer
// plays back exactly what it is told (chunks, pauses, silence, FIN, RST). A stored value over
// maxItemSize fails only its own get (ETOOLARGE): it is skipped unread and the connection is kept.
import assert from 'node:assert/strict'
import net from 'node:net'
import { describe, it } from 'node:test'
import { MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { sleep } from './harness/memcached.ts'
import { failure, withoutEnvCredentials } from './harness/outcomes.ts'
import {
  close,
  emptyMemcached,
  hit,
  type PeerRequest,
  reset,
  type ScriptedPeer,
  scriptedPeer,
  send,
  trickle,
  wait,
} from './harness/scripted-peer.ts'

const SESSION_JSON = '{"cookie":{"originalMaxAge":null,"expires":null,"path":"/"},"user":"ada"}'
const READS = new Set(['getk', 'gatk', 'mg'])

function storeFor(address: string, protocol: 'binary' | 'meta', timeout: number): MemcacheStore {
  return withoutEnvCredentials(() => new MemcacheStore({ servers: address, protocol, timeout, logger: false }))
}

/** Runs `operation` again while the server is in its back-off (ESERVERDOWN: not sent), for at most 3 s. */
async function afterBackoff<T>(operation: () => Promise<T>): Promise<T> {
  const started = performance.now()
  for (;;) {
    try {
      return await operation()
    } catch (err) {
      if (!(err instanceof MemcacheStoreError) || err.code !== 'ESERVERDOWN' || performance.now() - started > 3000) throw err
      await sleep(20)
    }
  }
}

describe('a store against a scripted peer', () => {
  for (const protocol of ['binary', 'meta'] as const) {
    it(`${protocol}: a get reply trickling in one byte at a time, 3 ms apart, is reassembled and the session served`, async () => {
      const peer = await scriptedPeer({
        protocol,
        onRequest: (request) =>
          READS.has(request.command) ? trickle(hit(request, SESSION_JSON, 7n), { delayMs: 3 }) : emptyMemcached(request),
      })
      const store = storeFor(peer.address, protocol, 2000)
      try {
        const sess = await store.get('trickled')
        assert.equal(sess?.user, 'ada')
        const [request] = peer.requests
        assert.equal(request.key, 'sess:trickled')
        assert.ok(peer.writes >= hit(request, SESSION_JSON).length, `${peer.writes} writes: one per byte`)
        assert.equal(peer.connections, 1)
      } finally {
        await store.close()
        await peer.close()
      }
    })

    it(`${protocol}: a reply carrying the next request's opaque is EPROTOCOL; once the peer answers right, the next get works on a new connection`, async () => {
      let lie = true
      const peer = await scriptedPeer({
        protocol,
        onRequest: (request) => {
          if (!READS.has(request.command)) return emptyMemcached(request)
          const opaque = (request.opaque ?? 0) + (lie ? 1 : 0)
          return send(hit({ ...request, opaque }, SESSION_JSON))
        },
      })
      const store = storeFor(peer.address, protocol, 300)
      try {
        const { err, ms } = await failure(store.get('swapped'))
        assert.equal(err.code, 'EPROTOCOL', err.message)
        assert.equal(err.server, peer.address)
        assert.equal(err.sent, true)
        assert.match(err.reason, /out of order/)
        assert.ok(ms < 300, `refused as soon as the reply came, in ${Math.round(ms)} ms`)
        lie = false
        const sess = await afterBackoff(() => store.get('swapped'))
        assert.equal(sess?.user, 'ada')
        assert.equal(peer.connections, 2, 'the broken connection was reset and a new one opened')
        // On the new connection a no-op goes first: the probe of whether the server is back, which
        // the get waits for.
        assert.deepEqual(
          peer.requests.map((r) => [r.connection, r.key]),
          [
            [1, 'sess:swapped'],
            [2, ''],
            [2, 'sess:swapped'],
          ],
        )
        assert.match(peer.requests[1].command, /noop|mn/)
      } finally {
        await store.close()
        await peer.close()
      }
    })

    it(`${protocol}: a stored value over maxItemSize fails that get with ETOOLARGE naming both sizes; gets of other sessions, pipelined behind it and after it, are served on the same connection`, async () => {
      const BIG = 1_500_000
      /** Chunks the peer had written when the get behind the oversized one reached it. */
      let writtenBeforeBeside: number | undefined
      const peer: ScriptedPeer = await scriptedPeer({
        protocol,
        onRequest: (request) => {
          if (!READS.has(request.command)) return emptyMemcached(request)
          if (request.key === 'sess:beside') writtenBeforeBeside = peer.writes
          return send(hit(request, request.key === 'sess:big' ? Buffer.alloc(BIG, '{') : SESSION_JSON, 7n))
        },
      })
      // The default maxItemSize: 1 MiB, memcached's own default -I.
      const store = storeFor(peer.address, protocol, 2000)
      try {
        const big = failure(store.get('big'))
        const beside = store.get('beside')
        const { err } = await big
        assert.equal(err.code, 'ETOOLARGE', err.message)
        assert.equal(err.server, peer.address)
        assert.match(err.reason, /1500000 bytes, more than maxItemSize \(1048576\)/)
        assert.match(err.message, /1500000 bytes/)
        assert.equal(writtenBeforeBeside, 0, 'both gets were in flight before any reply: the second reply follows the skipped value')
        assert.equal((await beside)?.user, 'ada', 'the get pipelined behind the oversized value')
        assert.equal((await store.get('after'))?.user, 'ada', 'a get after it')
        assert.equal(peer.connections, 1, 'no reconnection: the skipped value did not break the connection')
        assert.deepEqual(
          peer.requests.filter((r) => READS.has(r.command)).map((r) => [r.connection, r.key]),
          [
            [1, 'sess:big'],
            [1, 'sess:beside'],
            [1, 'sess:after'],
          ],
        )
        const [server] = store.diagnostics().servers
        assert.equal(server.state, 'up')
        assert.equal(server.lastError, undefined)
      } finally {
        await store.close()
        await peer.close()
      }
    })
  }
})

/** Connects to `address`, writes `request`, and collects what comes back: chunks (with when they came) and how the connection ended. */
function exchange(address: string, request: Buffer, untilMs: number) {
  const colon = address.lastIndexOf(':')
  const socket = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon))
  const started = performance.now()
  const chunks: Array<{ at: number; data: string }> = []
  return new Promise<{ chunks: typeof chunks; ended: 'fin' | 'reset' | 'open' }>((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ chunks, ended: 'open' })
    }, untilMs)
    socket.on('data', (chunk: Buffer) => chunks.push({ at: performance.now() - started, data: chunk.toString() }))
    socket.on('end', () => {
      clearTimeout(timer)
      resolve({ chunks, ended: 'fin' })
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve({ chunks, ended: err.code === 'ECONNRESET' ? 'reset' : 'open' })
    })
    socket.write(request)
  })
}

describe('the scripted peer', () => {
  it('plays back chunks with their pauses, silence, a FIN and an RST, request by request and in order', async () => {
    const seen: PeerRequest[] = []
    const peer = await scriptedPeer({
      protocol: 'meta',
      onRequest: (request) => {
        seen.push(request)
        if (request.key === 'slow') return [...trickle('EN kslow O1\r\n', { chunkBytes: 5, delayMs: 30 }), send('MN\r\n')]
        if (request.key === 'silent') return undefined
        if (request.key === 'fin') return [send('HD O3\r\n'), wait(20), close()]
        return reset()
      },
    })
    try {
      const slow = await exchange(peer.address, Buffer.from('mg slow v k O1\r\nmg silent O2\r\n'), 300)
      // Chunks sent with a pause between arrive apart; the last two, sent back to back, may arrive together.
      assert.equal(slow.chunks.map((c) => c.data).join(''), 'EN kslow O1\r\nMN\r\n')
      assert.deepEqual(
        slow.chunks.slice(0, 2).map((c) => c.data),
        ['EN ks', 'low O'],
      )
      assert.ok(slow.chunks[2].at - slow.chunks[0].at >= 50, 'the pauses were kept')
      assert.equal(slow.ended, 'open', 'silence: nothing more, the connection stays open')
      assert.deepEqual(
        seen.map((r) => [r.command, r.key, r.opaque, r.flags]),
        [
          ['mg', 'slow', 1, ['v', 'k', 'O1']],
          ['mg', 'silent', 2, ['O2']],
        ],
      )

      const fin = await exchange(peer.address, Buffer.from('ms fin 2 T0 O3\r\nhi\r\n'), 1000)
      assert.deepEqual(fin, { chunks: [fin.chunks[0]], ended: 'fin' })
      assert.equal(fin.chunks[0].data, 'HD O3\r\n')
      assert.deepEqual(seen[2].value, Buffer.from('hi'))

      const rst = await exchange(peer.address, Buffer.from('md gone O4\r\n'), 1000)
      assert.deepEqual(rst, { chunks: [], ended: 'reset' })
      assert.equal(peer.connections, 3)
    } finally {
      await peer.close()
    }
  })
})
