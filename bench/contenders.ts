// The session stores compared at store level, behind one callback interface. Each gets its own
// connection(s) and key prefix on the same memcached.
import connectMemcached from 'connect-memcached'
import connectMemjs from 'connect-memjs'
import session, { type SessionData } from 'express-session'
import memjs from 'memjs'
import { MemcacheStore } from './package.ts'
import { PipelinedClient } from './pipelined-client.ts'

export type Done = (err?: unknown) => void
type Sess = Record<string, unknown>

export interface Contender {
  readonly name: string
  set(id: string, sess: Sess, done: Done): void
  get(id: string, done: Done): void
  /** Absent when the store has no touch (express-session then skips it). */
  touch?: (id: string, sess: Sess, done: Done) => void
  destroy(id: string, done: Done): void
  close(): Promise<void>
}

const TTL_SECONDS = 86_400
const SILENT = { log() {} }

/** memjs as fast as it goes: callbacks, JSON, nothing else. The limit for any memjs-based store. */
function rawMemjs(servers: string, prefix: string): Contender {
  const client = memjs.Client.create(servers, { logger: SILENT, keepAlive: true })
  return {
    name: 'raw memjs',
    set: (id, sess, done) => client.set(prefix + id, JSON.stringify(sess), { expires: TTL_SECONDS }, (err) => done(err)),
    get: (id, done) =>
      client.get(prefix + id, (err, value) => {
        if (err) return done(err)
        if (value) JSON.parse(value.toString())
        done()
      }),
    touch: (id, _sess, done) => client.touch(prefix + id, TTL_SECONDS, (err) => done(err)),
    destroy: (id, done) => client.delete(prefix + id, (err) => done(err)),
    close: async () => client.close(),
  }
}

/** The client-side limit: bench/pipelined-client.ts, one socket, no checks at all. */
function pipelined(servers: string, prefix: string): Contender {
  const client = new PipelinedClient(servers.split(',')[0])
  return {
    name: 'pipelined client',
    set: (id, sess, done) => client.set(prefix + id, sess, TTL_SECONDS, done),
    get: (id, done) => client.get(prefix + id, done),
    touch: (id, _sess, done) => client.touch(prefix + id, TTL_SECONDS, done),
    destroy: (id, done) => client.delete(prefix + id, done),
    close: async () => client.close(),
  }
}

function fromStore(name: string, store: session.Store, close: () => void): Contender {
  const asSession = (sess: Sess) => sess as unknown as SessionData
  return {
    name,
    set: (id, sess, done) => store.set(id, asSession(sess), done),
    get: (id, done) => store.get(id, done),
    touch: store.touch ? (id, sess, done) => store.touch?.(id, asSession(sess), done) : undefined,
    destroy: (id, done) => store.destroy(id, done),
    close: async () => close(),
  }
}

export const CONTENDER_NAMES = [
  'pipelined client',
  'raw memjs',
  'this store',
  'this store (meta)',
  'this store, TLS',
  'this store (meta), TLS',
  'connect-memjs',
  'connect-memcached',
  'this store, 3 servers',
  'this store, 3 servers, replicas 1',
] as const
export type ContenderName = (typeof CONTENDER_NAMES)[number]

/** The TLS contenders' memcached (-Z) and the CA its certificate is signed by (PEM). */
export interface TlsTarget {
  servers: string
  ca: string
}

/**
 * Every contender, each with its own connection(s) and key prefix. `tls`: the TLS contenders too
 * (against that -Z server); `only`: just these names (the -t 1 and fixed-count sections).
 */
export function createContenders(servers: string, run: string, tls?: TlsTarget, only?: readonly ContenderName[]): Contender[] {
  const list = servers.split(',')
  const wanted = (name: ContenderName) => (!only || only.includes(name)) && (tls !== undefined || !name.endsWith('TLS'))
  const contenders: Contender[] = []
  const ours = (name: ContenderName, tag: string, options: ConstructorParameters<typeof MemcacheStore>[0]) => {
    if (!wanted(name)) return
    const store = new MemcacheStore({ servers, prefix: `${run}:${tag}:`, logger: false, ...options })
    contenders.push(fromStore(name, store, () => void store.close()))
  }
  if (wanted('pipelined client')) contenders.push(pipelined(servers, `${run}:pip:`))
  if (wanted('raw memjs')) contenders.push(rawMemjs(servers, `${run}:raw:`))
  ours('this store', 'ours', {})
  ours('this store (meta)', 'meta', { protocol: 'meta' })
  ours('this store, 3 servers', 'three', {})
  ours('this store, 3 servers, replicas 1', 'replicas', { replicas: 1 })
  if (tls) {
    ours('this store, TLS', 'tls', { servers: tls.servers, tls: { ca: tls.ca } })
    ours('this store (meta), TLS', 'metatls', { servers: tls.servers, protocol: 'meta', tls: { ca: tls.ca } })
  }
  if (wanted('connect-memjs')) {
    const ConnectMemjs = connectMemjs(session)
    const theirs = new ConnectMemjs({ servers: list, prefix: `${run}:cmj:`, logger: SILENT, keepAlive: true }) as session.Store & {
      client: memjs.Client
    }
    contenders.push(fromStore('connect-memjs', theirs, () => theirs.client.close()))
  }
  if (wanted('connect-memcached')) {
    const ConnectMemcached = connectMemcached(session)
    const theirs = new ConnectMemcached({ hosts: list, prefix: `${run}:cmc:` })
    contenders.push(fromStore('connect-memcached', theirs, () => theirs.client.end()))
  }
  return contenders
}
