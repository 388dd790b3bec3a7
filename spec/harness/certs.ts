// Test certificates for memcached's TLS mode, made with the openssl CLI in a temporary directory
// once per test process (later calls return the same files) and removed when the process exits.
// EC P-256 keys: quick to generate, and every TLS stack involved (OpenSSL, Node) accepts them.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

const INSTALL_HINT =
  'openssl was not found. The TLS tests make their certificates with the openssl command: install it with ' +
  '`sudo apt-get install openssl` (Debian/Ubuntu) or `brew install openssl` (macOS), or point OPENSSL_BIN at the binary.'

/** A certificate and its private key: file paths (for memcached's -o ssl_*) and PEM text (for node:tls). */
export interface CertificatePair {
  cert: string
  key: string
  certPem: string
  keyPem: string
}

export interface Certificates {
  /** The temporary directory holding every file. */
  dir: string
  /** The test CA: it signs server, wrongHost and client. */
  ca: CertificatePair
  /** CN localhost, SAN DNS:localhost and IP:127.0.0.1, signed by the CA. */
  server: CertificatePair
  /** Signed by the CA, but SAN only DNS:wrong.example: a host-name mismatch for localhost and 127.0.0.1. */
  wrongHost: CertificatePair
  /** Self-signed, names localhost and 127.0.0.1: a server certificate from an unknown CA. */
  selfSigned: CertificatePair
  /** A client certificate (extendedKeyUsage clientAuth) signed by the CA, for mutual TLS. */
  client: CertificatePair
}

let cached: Certificates | undefined

/** The test certificates, generated on the first call. Throws an Error saying how to install openssl when it is missing. */
export function makeCertificates(): Certificates {
  if (cached) return cached
  const openssl = opensslBinary()
  const dir = mkdtempSync(path.join(tmpdir(), 'memcached-tls-'))
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string) => path.join(dir, name)
  const run = (args: string[]) => execFileSync(openssl, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  // A config of our own, so neither a missing nor an unusual system openssl.cnf changes the result.
  writeFileSync(file('openssl.cnf'), '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n')
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-config', file('openssl.cnf')]
  let serial = 1
  const read = (name: string): CertificatePair => ({
    cert: file(`${name}.crt`),
    key: file(`${name}.key`),
    certPem: readFileSync(file(`${name}.crt`), 'utf8'),
    keyPem: readFileSync(file(`${name}.key`), 'utf8'),
  })

  // A self-signed certificate: the CA, and the "unknown CA" server certificate.
  const selfSigned = (name: string, subject: string, extensions: string[]) => {
    const addext = extensions.flatMap((extension) => ['-addext', extension])
    run([
      'req',
      '-x509',
      ...newKey,
      '-keyout',
      file(`${name}.key`),
      '-out',
      file(`${name}.crt`),
      '-days',
      '3650',
      '-subj',
      subject,
      ...addext,
    ])
    return read(name)
  }
  // A certificate signed by the CA.
  const signed = (name: string, subject: string, extensions: string[]) => {
    writeFileSync(file(`${name}.ext`), `[ext]\n${extensions.join('\n')}\n`)
    run(['req', '-new', ...newKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject])
    run([
      'x509',
      '-req',
      '-in',
      file(`${name}.csr`),
      '-CA',
      file('ca.crt'),
      '-CAkey',
      file('ca.key'),
      '-set_serial',
      String(++serial),
      '-days',
      '3650',
      '-out',
      file(`${name}.crt`),
      '-extfile',
      file(`${name}.ext`),
      '-extensions',
      'ext',
    ])
    return read(name)
  }

  const serverExtensions = (names: string) => [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    'extendedKeyUsage = serverAuth',
    `subjectAltName = ${names}`,
  ]
  const ca = selfSigned('ca', '/CN=express-session-memcache test CA', [
    'basicConstraints = critical, CA:TRUE',
    'keyUsage = critical, keyCertSign, cRLSign',
  ])
  cached = {
    dir,
    ca,
    server: signed('server', '/CN=localhost', serverExtensions('DNS:localhost, IP:127.0.0.1')),
    wrongHost: signed('wrong-host', '/CN=wrong.example', serverExtensions('DNS:wrong.example')),
    selfSigned: selfSigned('self-signed', '/CN=localhost', [
      'basicConstraints = critical, CA:FALSE',
      'subjectAltName = DNS:localhost, IP:127.0.0.1',
    ]),
    client: signed('client', '/CN=express-session-memcache test client', [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = clientAuth',
    ]),
  }
  return cached
}

function opensslBinary(): string {
  const candidates = [process.env.OPENSSL_BIN, 'openssl'].filter((candidate): candidate is string => !!candidate)
  for (const candidate of candidates) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' })
      return candidate
    } catch {}
  }
  throw new Error(INSTALL_HINT)
}
