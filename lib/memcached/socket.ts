import net, { type Socket } from 'node:net'
import tls from 'node:tls'
import type { Failure } from './errors.js'

/** Where a server listens. */
export interface Endpoint {
  host: string
  port: number
}

/**
 * A TCP or TLS connection to a server, and the event after which it can carry requests: `connect`,
 * or `secureConnect` once the TLS handshake verified the server (Node verifies certificates and
 * host names unless `rejectUnauthorized: false` is passed). Nothing is written before that event,
 * so nothing leaves in clear when `tls` is set.
 */
export function openSocket(endpoint: Endpoint, tlsOptions: tls.ConnectionOptions | undefined): OpenedSocket {
  const socket =
    tlsOptions === undefined
      ? net.connect({ host: endpoint.host, port: endpoint.port })
      : tls.connect({
          ...tlsOptions,
          host: endpoint.host,
          port: endpoint.port,
          servername: tlsOptions.servername ?? (net.isIP(endpoint.host) ? undefined : endpoint.host),
        })
  socket.setNoDelay(true)
  const opened: OpenedSocket = { socket, readyEvent: tlsOptions ? 'secureConnect' : 'connect', stage: 'connecting' }
  if (tlsOptions)
    socket.once('connect', () => {
      if (opened.stage === 'connecting') opened.stage = 'tls'
    })
  return opened
}

export interface OpenedSocket {
  socket: Socket
  /** The event after which requests may be written. */
  readyEvent: 'connect' | 'secureConnect'
  /** Updated as the connection progresses; transports set `authenticating` themselves. */
  stage: 'connecting' | 'tls' | 'authenticating'
}

/** ETLS for a failed TLS handshake or certificate check (Node's and OpenSSL's codes), else ECONNECTION. */
export function connectFailureCode(err: Error): 'ETLS' | 'ECONNECTION' {
  const code = String((err as NodeJS.ErrnoException).code ?? '')
  const library = (err as { library?: unknown }).library
  return /^(ERR_SSL|ERR_TLS|UNABLE_TO|CERT_|DEPTH_ZERO|SELF_SIGNED|HOSTNAME|ERR_OSSL)/.test(code) || library === 'SSL routines'
    ? 'ETLS'
    : 'ECONNECTION'
}

/**
 * A failed connection's reason. Node's own checks of the server's certificate have readable messages
 * ("self-signed certificate", "Hostname/IP does not match..."); OpenSSL's errors carry their source
 * location and a newline ("80...:error:0A00010B:SSL routines:ssl3_get_record:wrong version
 * number:../deps/openssl/...:350:\n"): those are worded from their `reason`, with what to check.
 */
export function connectFailureReason(err: Error): string {
  const { library, reason } = err as { library?: unknown; reason?: unknown }
  if (library !== 'SSL routines' || typeof reason !== 'string') return err.message
  if (/wrong version number|packet length too long|unknown protocol|http request/.test(reason)) {
    return `the server did not answer in TLS (${reason}): if the port is plain TCP, leave \`tls\` unset`
  }
  if (/alert certificate required/.test(reason)) {
    return 'the server requires a client certificate (TLS alert "certificate required"): set `tls.cert` and `tls.key`'
  }
  const alert = /alert (.+)$/.exec(reason)?.[1]
  if (alert) return `the server ended the TLS handshake with alert "${alert}" (check \`tls.cert\`/\`tls.key\` and the server's CA)`
  return `TLS error: ${reason}`
}

/**
 * Why a connection did not open in time, by where it stood. A stalled handshake is ETLS (a plain
 * port that does not answer one), unless the server `answeredBefore` over TLS: then it is a server
 * that stopped answering (frozen, overloaded), as silent to a handshake as to requests: ETIMEDOUT.
 */
export function stalledOpening(stage: OpenedSocket['stage'], timeout: number, answeredBefore = false): Failure {
  if (stage === 'tls' && answeredBefore) {
    return {
      code: 'ETIMEDOUT',
      reason: `the TLS handshake did not complete within ${timeout} ms (the server answered before: it is stopped or overloaded)`,
      sent: false,
    }
  }
  if (stage === 'tls') {
    return {
      code: 'ETLS',
      reason: `the TLS handshake did not complete within ${timeout} ms (if the port is plain TCP, leave \`tls\` unset)`,
      sent: false,
    }
  }
  if (stage === 'authenticating') return { code: 'ETIMEDOUT', reason: `no answer to authentication within ${timeout} ms`, sent: false }
  return { code: 'ETIMEDOUT', reason: `could not connect within ${timeout} ms`, sent: false }
}
