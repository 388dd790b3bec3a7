// A memcached that requires SASL authentication: a password database made with Cyrus SASL's
// saslpasswd2 in a temporary directory, and memcached started with -S pointing at it.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { MemcachedServer } from './memcached.ts'

const INSTALL_HINT =
  'saslpasswd2 was not found. The SASL tests create a password database with it: install it with ' +
  '`sudo apt-get install sasl2-bin` (Debian/Ubuntu) or `brew install cyrus-sasl` (macOS), or point SASLPASSWD2_BIN at the binary.'

function saslpasswd2(): string {
  const candidates = [
    process.env.SASLPASSWD2_BIN,
    '/usr/sbin/saslpasswd2',
    '/usr/bin/saslpasswd2',
    '/usr/local/sbin/saslpasswd2',
    '/opt/homebrew/sbin/saslpasswd2',
  ]
  const found = candidates.find((candidate): candidate is string => !!candidate && existsSync(candidate))
  if (!found) throw new Error(INSTALL_HINT)
  return found
}

export interface SaslMemcached {
  server: MemcachedServer
  /** Stops memcached and removes the password database. */
  stop(): Promise<void>
}

/** Starts memcached with -S, accepting the PLAIN mechanism for exactly these users. */
export async function startSaslMemcached(users: Record<string, string>): Promise<SaslMemcached> {
  const binary = saslpasswd2()
  const dir = mkdtempSync(path.join(tmpdir(), 'memcached-sasl-'))
  const db = path.join(dir, 'sasldb2')
  // memcached asks Cyrus SASL for the application "memcached": it reads <SASL_CONF_PATH>/memcached.conf.
  writeFileSync(path.join(dir, 'memcached.conf'), `mech_list: plain\nsasldb_path: ${db}\n`)
  for (const [user, password] of Object.entries(users)) {
    execFileSync(binary, ['-p', '-a', 'memcached', '-c', '-f', db, user], { input: password, stdio: ['pipe', 'ignore', 'pipe'] })
  }
  const server = await MemcachedServer.start({ args: ['-S'], env: { SASL_CONF_PATH: dir }, sasl: true })
  return {
    server,
    async stop() {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
