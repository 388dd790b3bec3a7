import net from 'node:net'
import { type ErrorCode, MemcacheStoreError } from '../errors.js'

/** One live item as `lru_crawler metadump` lists it. */
export interface DumpedKey {
  key: string
  /** Expiry as a Unix time in seconds; -1 when the item never expires. */
  exp: number
}

export interface MetadumpOptions {
  host: string
  port: number
  /** Longest wait for the connection, the first reply line, and between two chunks of the dump. */
  idleTimeoutMs: number
  /** Called for each item, in the server's hash order; keys that are not UTF-8 text are skipped. */
  onKey(item: DumpedKey): void
  /** Aborting ends the dump at once with an ECLOSED error. */
  signal?: AbortSignal
}

const COMMAND = 'lru_crawler metadump hash\r\n'

/**
 * Lists every live key of one server with `lru_crawler metadump hash`, over its own text-protocol
 * connection (memjs's connection speaks the binary protocol, which has no such command). `hash`
 * walks the hash table: unlike `all`, it does not miss keys that move between LRUs mid-crawl.
 * Rejects with a MemcacheStoreError that names the server when it cannot list: a crawl is already
 * running (EBUSY), the server does not allow it (ENOTSUPPORTED), or it does not answer in time.
 */
export function metadump(options: MetadumpOptions): Promise<void> {
  const { host, port, idleTimeoutMs, onKey, signal } = options
  const address = `${host}:${port}`
  return new Promise((resolve, reject) => {
    let pending = ''
    let answered = false
    let settled = false
    const finish = (err?: MemcacheStoreError) => {
      if (settled) return
      settled = true
      signal?.removeEventListener('abort', abort)
      socket.destroy()
      if (err) reject(err)
      else resolve()
    }
    const fail = (code: ErrorCode, reason: string, cause?: unknown) =>
      finish(new MemcacheStoreError(code, 'metadump', `memcached metadump on ${address} failed: ${reason}`, { server: address, cause }))

    const abort = () => fail('ECLOSED', 'abandoned: the store was closed')
    if (signal?.aborted)
      return reject(new MemcacheStoreError('ECLOSED', 'metadump', `memcached metadump on ${address} refused: the store was closed`))
    signal?.addEventListener('abort', abort, { once: true })
    const socket = net.connect({ host, port })
    socket.setNoDelay(true)
    // An idle timer, not a deadline: a large dump may take seconds, but it never pauses for long.
    socket.setTimeout(idleTimeoutMs, () =>
      fail(
        'ETIMEDOUT',
        answered
          ? `the dump stalled: nothing received for ${idleTimeoutMs} ms`
          : `no answer to \`lru_crawler metadump\` within ${idleTimeoutMs} ms: the server is frozen or overloaded, or its crawler is held by another dump whose client is not reading`,
      ),
    )
    socket.once('connect', () => socket.write(COMMAND))
    socket.on('error', (err) => fail('ECONNECTION', err.message, err))
    socket.on('close', () =>
      fail(
        'ECONNCLOSED',
        answered
          ? 'the server closed the connection before the end of the dump'
          : 'the server closed the connection without answering the text-protocol command: it speaks only the binary protocol (started with -S for SASL, or -B binary), so its keys cannot be listed',
      ),
    )
    socket.on('data', (chunk: Buffer) => {
      answered = true
      // Keys are URL-encoded in the dump, so every line is ASCII. Lines end in \n (END in \r\n).
      const text = pending + chunk.toString('latin1')
      const complete = text.lastIndexOf('\n') + 1
      pending = text.slice(complete)
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

    /** Anything but a key line or END: memcached's reasons for not dumping. */
    function refusal(line: string): void {
      if (line.startsWith('BUSY')) fail('EBUSY', `a crawl is already running on this server (${line})`)
      else if (/crawler disabled/i.test(line)) {
        fail('ENOTSUPPORTED', `its LRU crawler is disabled (started with -o no_lru_crawler), so its keys cannot be listed (${line})`)
      } else if (/not allowed/i.test(line)) {
        fail('ENOTSUPPORTED', `dumping keys is disabled on this server (started with -X) (${line})`)
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
  return key === undefined || !Number.isInteger(exp) ? undefined : { key, exp }
}

/**
 * memcached URL-encodes every byte outside [A-Za-z0-9-._~]. A key whose bytes are not valid UTF-8
 * cannot be a session key (the store only writes well-formed strings), so it is skipped.
 */
function decodeKey(encoded: string): string | undefined {
  if (!encoded.includes('%')) return encoded
  try {
    return decodeURIComponent(encoded)
  } catch {
    return undefined
  }
}
