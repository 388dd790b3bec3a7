import { MemcacheStoreError } from './errors.js'
import type { MemcachedClient, MemcachedError } from './memcached/index.js'

/**
 * A no-op round trip to every server; rejects with one error naming each server that did not
 * answer, why, and what to change when the cause is recognisable (protocol, TLS). A cause shared by
 * every failure that names a fix (credentials, TLS, protocol) keeps its code; otherwise ESERVERDOWN.
 */
export async function checkReady(client: MemcachedClient, timeoutMs: number, usesTls: boolean): Promise<void> {
  const servers = client.servers
  const results = await Promise.allSettled(
    servers.map((server) => client.ping(server, { deadline: performance.now() + timeoutMs, sent: false, answered: false })),
  )
  const failures = results.flatMap((result, i) =>
    result.status === 'rejected' ? [{ server: servers[i], err: result.reason as MemcachedError }] : [],
  )
  if (failures.length === 0) return
  const codes = new Set(failures.map(({ err }) => err.code))
  const [only] = codes
  const code = codes.size === 1 && (only === 'EAUTH' || only === 'ETLS' || only === 'EPROTOCOL') ? only : 'ESERVERDOWN'
  const described = failures.map(({ server, err }) => `${server.address} (${err.reason}${hint(err, client.protocol, usesTls)})`)
  throw new MemcacheStoreError(
    code,
    'ready',
    `memcached is not ready: ${failures.length} of ${servers.length} server(s) did not answer: ${described.join('; ')}`,
    {
      server: failures.length === 1 ? failures[0].server.address : undefined,
      reason: described.join('; '),
      sent: failures.some(({ err }) => err.sent),
    },
  )
}

/** What to change, when a failure's kind suggests it. */
function hint(err: MemcachedError, protocol: 'binary' | 'meta', usesTls: boolean): string {
  if (err.code === 'ETIMEDOUT' && protocol === 'binary') {
    return "; if the server accepts only text and meta commands (memcached -B ascii, ElastiCache Serverless, a proxy), use `protocol: 'meta'`"
  }
  if (err.code === 'ECONNCLOSED') {
    const tls = usesTls ? '' : '; if the server expects TLS, set `tls`'
    const binary = protocol === 'meta' ? "; if it speaks only the binary protocol (SASL, -B binary), use `protocol: 'binary'`" : ''
    return tls + binary
  }
  return ''
}
