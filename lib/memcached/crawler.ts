import type { Socket } from 'node:net'
import { type FailureCode, MemcachedError } from './errors.js'
import { connectFailureCode, connectFailureReason, stalledOpening } from './socket.js'
import type { Transport } from './wire.js'

/** One live item as `lru_crawler metadump` lists it. */
export interface DumpedKey {
  key: string
  /** Expiry as a Unix time in seconds; -1 when the item never expires. */
  exp: number
  /** The item's size in memory (key, value and memcached's own header), in bytes; 0 when the line has none. */
  size: number
}

export interface MetadumpOptions {
  /** Opens the text-protocol connection (TLS and token authentication as the client is configured). */
  transport: Transport
  /** Longest wait for the connection, the first reply line, and between two chunks of the dump. */
  idleTimeoutMs: number
  /** The whole dump must end by then, however steadily it trickles. */
  deadlineMs: number
  /** Called for each item, in the server's hash order; keys that are not UTF-8 text are skipped. */
  onKey(item: DumpedKey): void
  /** Aborting ends the dump at once with an ECLOSED error (the abort's reason, when a string, is its reason). */
  signal?: AbortSignal
}

const COMMAND = 'lru_crawler metadump hash\r\n'

/** A dump line is `key=<at most 750 URL-encoded bytes> exp=... size=...`: anything much longer is not one. */
const MAX_LINE_BYTES = 4096

/**
 * Lists every live key of one server with `lru_crawler metadump hash`, over its own text-protocol
 * connection (the binary protocol has no such command). `hash` walks the hash table: unlike `all`,
 * it does not miss keys that move between LRUs mid-crawl. Rejects with a MemcachedError that
 * names the server when it cannot list: a crawl is already running (EBUSY), the server does not
 * allow it (ENOTSUPPORTED), it stalls, or the dump does not end by its deadline.
 */
export function metadump(options: MetadumpOptions): Promise<void> {
  const { transport, idleTimeoutMs, deadlineMs, onKey, signal } = options
  const address = `${transport.host}:${transport.port}`
  return new Promise((resolve, reject) => {
    let pending = ''
    let answered = false
    let settled = false
    let socket: Socket | undefined
    const finish = (err?: MemcachedError) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(opening)
      signal?.removeEventListener('abort', abort)
      attempt.abort()
      socket?.destroy()
      if (err) reject(err)
      else resolve()
    }
    const fail = (code: FailureCode, reason: string, cause?: unknown) =>
      finish(new MemcachedError({ code, reason, sent: answered, cause }, address, 'metadump'))

    const abort = () => fail('ECLOSED', typeof signal?.reason === 'string' ? signal.reason : 'abandoned: the dump was aborted')
    const deadline = setTimeout(
      () => fail('ETIMEDOUT', `the dump did not end within ${deadlineMs} ms (the server answers too slowly, or is not memcached)`),
      deadlineMs,
    )
    // Opening (connect, TLS handshake, authentication) is bounded like any wait of the dump: a
    // handshake that never completes (a plain port, a stopped server) fails as the client's requests do.
    const opening = setTimeout(() => {
      const { code, reason } = stalledOpening(attempt.stage, idleTimeoutMs)
      fail(code, reason)
    }, idleTimeoutMs)
    const attempt = transport.open({
      ready: (opened) => {
        clearTimeout(opening)
        socket = opened
        listen(opened)
        opened.write(COMMAND)
      },
      failed: (code, reason, cause) => fail(code, reason, cause),
    })
    if (signal?.aborted) return abort()
    signal?.addEventListener('abort', abort, { once: true })

    function listen(opened: Socket): void {
      // An idle timer besides the deadline: a large dump may take seconds, but it never pauses for long.
      opened.setTimeout(idleTimeoutMs, () =>
        fail(
          'ETIMEDOUT',
          answered
            ? `the dump stalled: nothing received for ${idleTimeoutMs} ms`
            : `no answer to \`lru_crawler metadump\` within ${idleTimeoutMs} ms: the server is frozen or overloaded, or its crawler is held by another dump whose client is not reading`,
        ),
      )
      // ETLS for a TLS alert after the handshake (TLS 1.3: a missing client certificate), as on opening.
      opened.on('error', (err) => fail(connectFailureCode(err), connectFailureReason(err), err))
      opened.on('close', () =>
        fail(
          'ECONNCLOSED',
          answered
            ? 'the server closed the connection before the end of the dump'
            : 'the server closed the connection without answering the text-protocol command: it speaks only the binary protocol (started with -S for SASL, or -B binary), so its keys cannot be listed',
        ),
      )
      opened.on('data', (chunk: Buffer) => {
        answered = true
        // Keys are URL-encoded in the dump, so every line is ASCII. Lines end in \n (END in \r\n).
        const text = pending + chunk.toString('latin1')
        const complete = text.lastIndexOf('\n') + 1
        pending = text.slice(complete)
        if (pending.length > MAX_LINE_BYTES) return fail('EPROTOCOL', 'a dump line of more than 4096 bytes: the server is not memcached')
        for (const line of text.slice(0, complete).split('\n')) {
          if (line.startsWith('key=')) {
            const item = parseKeyLine(line)
            if (item) onKey(item)
          } else if (line === 'END\r' || line === 'END') {
            return finish()
          } else if (line !== '') {
            return refusal(line.replace(/\r$/, ''))
          }
        }
      })
    }

    /** Anything but a key line or END: memcached's reasons for not dumping. */
    function refusal(line: string): void {
      if (line.startsWith('BUSY')) fail('EBUSY', `a crawl is already running on this server (${line})`)
      else if (/crawler disabled/i.test(line)) {
        fail('ENOTSUPPORTED', `its LRU crawler is disabled (started with -o no_lru_crawler), so its keys cannot be listed (${line})`)
      } else if (/not allowed/i.test(line)) {
        fail('ENOTSUPPORTED', `dumping keys is disabled on this server (started with -X) (${line})`)
      } else if (line === 'ERROR' || /unknown command/i.test(line)) {
        fail(
          'ENOTSUPPORTED',
          `the server does not know \`lru_crawler\` (ElastiCache Serverless and proxies do not offer it), so its keys cannot be listed (${line})`,
        )
      } else if (line.startsWith('CLIENT_ERROR') && /unauthenticated|authentication/i.test(line)) {
        // memcached -Y refuses every command of a connection that did not authenticate first.
        fail('EAUTH', `${transport.authRefusal?.() ?? 'the server requires authentication'} (${line})`)
      } else fail('ESERVER', `unexpected reply ${JSON.stringify(line.slice(0, 120))}`)
    }
  })
}

/** `key=<url-encoded> exp=<unix|-1> la=... cas=... fetch=... cls=... size=...`, or undefined when unusable. */
function parseKeyLine(line: string): DumpedKey | undefined {
  const keyEnd = line.indexOf(' ', 4)
  if (keyEnd < 0 || !line.startsWith(' exp=', keyEnd)) return undefined
  const expEnd = line.indexOf(' ', keyEnd + 5)
  const exp = Number(line.slice(keyEnd + 5, expEnd < 0 ? undefined : expEnd))
  const key = decodeKey(line.slice(4, keyEnd))
  const size = Number(/ size=(\d+)/.exec(line)?.[1] ?? 0)
  return key === undefined || !Number.isInteger(exp) ? undefined : { key, exp, size }
}

/**
 * memcached URL-encodes every byte outside [A-Za-z0-9-._~]. A key whose bytes are not valid UTF-8
 * cannot be a key this client wrote (it only writes well-formed strings), so it is skipped.
 */
function decodeKey(encoded: string): string | undefined {
  if (!encoded.includes('%')) return encoded
  try {
    return decodeURIComponent(encoded)
  } catch {
    return undefined
  }
}
