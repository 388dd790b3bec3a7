import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import session, { type SessionData } from 'express-session'
import type { MemcacheStore, MemcacheStoreOptions } from '../../lib/index.ts'
import { killLeftovers, type MemcachedOptions, MemcachedServer } from './memcached.ts'
import { createStore } from './protocol.ts'
import './session-data.ts'

// A test that failed before stopping its servers must not keep the test file's process alive. Only
// under the test runner: a fixture process importing these helpers must not become a test itself.
if (process.env.NODE_TEST_CONTEXT) after(killLeftovers)

let counter = 0

/** A unique key prefix per store, so tests sharing one memcached never see each other's keys. */
export function uniquePrefix(): string {
  return `t${process.pid}-${++counter}:`
}

/** Stores created by a test file, closed together in its `after` hook. */
export class StoreFactory {
  readonly #stores: MemcacheStore[] = []
  constructor(readonly server: () => MemcachedServer) {}

  create(options: MemcacheStoreOptions = {}): MemcacheStore {
    const store = createStore({ servers: this.server().address, prefix: uniquePrefix(), logger: false, ...options })
    this.#stores.push(store)
    return store
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.#stores.map((store) => store.close()))
  }
}

/**
 * One memcached for a whole test file: started before its tests, stopped after them together with
 * every store the file made through `stores`.
 */
export function useMemcached(options: MemcachedOptions = {}): { readonly server: MemcachedServer; readonly stores: StoreFactory } {
  let server: MemcachedServer | undefined
  const stores: StoreFactory = new StoreFactory((): MemcachedServer => fixture.server)
  const fixture = {
    get server(): MemcachedServer {
      if (!server) throw new Error('memcached is not started yet: use the fixture inside tests or hooks')
      return server
    },
    stores,
  }
  before(async () => {
    server = await MemcachedServer.start(options)
  })
  after(async () => {
    await stores.closeAll()
    await server?.stop()
  })
  return fixture
}

/** Plain session data as it would come out of JSON, with a cookie expiring in `maxAgeMs` (or none). */
export function plainSession(fields: Record<string, unknown> = {}, maxAgeMs: number | null = 60_000): SessionData {
  const cookie =
    maxAgeMs === null
      ? { originalMaxAge: null, expires: null, httpOnly: true, path: '/' }
      : { originalMaxAge: maxAgeMs, expires: new Date(Date.now() + maxAgeMs).toISOString(), httpOnly: true, path: '/' }
  return { cookie, ...fields } as unknown as SessionData
}

/** A session as express-session creates it for a new visitor: a Session object with a live Cookie. */
// express-session's typings mark these constructors private; the runtime exports them for stores.
const Session = session.Session as unknown as new (req: object) => session.Session & SessionData & Record<string, unknown>
const Cookie = session.Cookie as unknown as new (options: object) => session.Cookie

export function newSession(store: MemcacheStore, sid: string, fields: Record<string, unknown> = {}, maxAgeMs: number | null = 60_000) {
  const sess = new Session({ sessionID: sid, sessionStore: store })
  sess.cookie = new Cookie(maxAgeMs === null ? {} : { maxAge: maxAgeMs })
  Object.assign(sess, fields)
  return sess
}

/** A session loaded from the store, as express-session loads it (store.load, then createSession). */
export function loadSession(store: MemcacheStore, sid: string): Promise<(session.Session & SessionData) | undefined> {
  return new Promise((resolve, reject) => {
    // express-session's typings give load's result as SessionData; at run time it is the Session that createSession built.
    store.load(sid, (err, sess) => (err ? reject(err) : resolve(sess as (session.Session & SessionData) | undefined)))
  })
}

/** What the store yields for `sid` (store.get), its fields readable without a cast; null when there is none. */
export function readSession(store: MemcacheStore, sid: string): Promise<Record<string, unknown> | null> {
  return store.get(sid)
}

export function randomId(): string {
  return `id-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`
}

/** Asserts that a store has nothing in flight and no session locked. */
export function assertIdle(store: MemcacheStore): void {
  const { operationsInFlight, requestsInFlight, lockedSessions } = store.diagnostics()
  assert.deepEqual(
    { operationsInFlight, requestsInFlight, lockedSessions },
    { operationsInFlight: 0, requestsInFlight: 0, lockedSessions: 0 },
  )
}

/** A serializer whose text has no brackets at all (base64 of the JSON): its text says nothing about how deep a session nests. */
export const base64JsonSerializer = {
  stringify: (sess: unknown) => Buffer.from(JSON.stringify(sess)).toString('base64'),
  parse: (text: string) => JSON.parse(Buffer.from(text, 'base64').toString()),
}

/** The session each test stores: its own ID inside, so a value handed to the wrong caller shows. */
export function ownSession(sid: string, fields: Record<string, unknown> = {}) {
  return plainSession({ sid, ...fields })
}

export function sidOf(sess: unknown): unknown {
  return (sess as { sid?: unknown } | null)?.sid
}

/** A JSON serializer that records the `marker` of every session it serializes: whether a save's work ran. */
export function markerSpy() {
  const stringified: unknown[] = []
  const serializer = {
    parse: JSON.parse,
    stringify: (sess: SessionData) => {
      stringified.push((sess as { marker?: unknown }).marker)
      return JSON.stringify(sess)
    },
  }
  return { serializer, stringified }
}
