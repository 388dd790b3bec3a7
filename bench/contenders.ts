// The session stores compared at store level, behind one callback interface. Each gets its own
// connection(s) and key prefix on the same memcached.
import connectMemcached from 'connect-memcached'
import connectMemjs from 'connect-memjs'
import session, { type SessionData } from 'express-session'
import memjs from 'memjs'
import { MemcacheStore } from './package.ts'

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

export const CONTENDER_NAMES = ['raw memjs', 'this store', 'connect-memjs', 'connect-memcached'] as const

export function createContenders(servers: string, run: string): Contender[] {
  const list = servers.split(',')
  const ours = new MemcacheStore({ servers, prefix: `${run}:ours:`, logger: false })
  const ConnectMemjs = connectMemjs(session)
  const theirsMemjs = new ConnectMemjs({ servers: list, prefix: `${run}:cmj:`, logger: SILENT, keepAlive: true }) as session.Store & {
    client: memjs.Client
  }
  const ConnectMemcached = connectMemcached(session)
  const theirsMemcached = new ConnectMemcached({ hosts: list, prefix: `${run}:cmc:` })
  return [
    rawMemjs(servers, `${run}:raw:`),
    fromStore('this store', ours, () => void ours.close()),
    fromStore('connect-memjs', theirsMemjs, () => theirsMemjs.client.close()),
    fromStore('connect-memcached', theirsMemcached, () => theirsMemcached.client.end()),
  ]
}
