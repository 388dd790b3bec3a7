// How store operations settle, for the specs that check failure modes (TLS, token authentication,
// protocol mismatches, clusters): the error and the time it took, with a guard against hangs.
import assert from 'node:assert/strict'
import { type MemcacheStore, MemcacheStoreError } from '../../lib/index.ts'
import { BACKOFF_MAX_MS } from '../../lib/memcached/health.ts'
import { type MemcachedServer, sleep } from './memcached.ts'
import { plainSession, randomId, readSession } from './stores.ts'

/**
 * The MemcacheStoreError `operation` settles with and how long it took. Fails the test when it
 * succeeds, rejects with anything else, or is still pending after `guardMs` (a hang).
 */
export async function failure(operation: Promise<unknown>, guardMs = 10_000): Promise<{ err: MemcacheStoreError; ms: number }> {
  const started = performance.now()
  let caught: unknown
  let succeeded = false
  let hang: NodeJS.Timeout | undefined
  const guard = new Promise((_, reject) => {
    hang = setTimeout(() => reject(new Error(`still pending after ${guardMs} ms: a hang`)), guardMs)
  })
  try {
    await Promise.race([operation, guard])
    succeeded = true
  } catch (err) {
    caught = err
  } finally {
    clearTimeout(hang)
  }
  assert.ok(!succeeded, 'the operation must fail')
  assert.ok(caught instanceof MemcacheStoreError, `expected a MemcacheStoreError, got ${String(caught)}`)
  return { err: caught, ms: performance.now() - started }
}

/** The last step of `failEveryOperation`: made once the longest back-off is over, so it opens a fresh connection. */
export const AFTER_BACKOFF = 'get after the back-off'

/** An operation's failure: which step, the error, and how long it took to settle. */
export interface Failed {
  name: string
  err: MemcacheStoreError
  ms: number
}

/**
 * One operation of every kind on one session, each awaited to its failure in turn: set (a fresh
 * connection), get, touch and destroy (refused during the back-off), ready() and ids() (on their own
 * connections), then a get after the longest back-off (`AFTER_BACKOFF`).
 */
export async function failEveryOperation(store: MemcacheStore): Promise<Failed[]> {
  const sid = randomId()
  const operations: Array<[string, () => Promise<unknown>]> = [
    ['set', () => store.set(sid, plainSession())],
    ['get', () => store.get(sid)],
    ['touch', () => store.touch(sid, plainSession())],
    ['destroy', () => store.destroy(sid)],
    ['ready', () => store.ready()],
    ['ids', () => store.ids()],
    [AFTER_BACKOFF, () => store.get(sid)],
  ]
  const seen: Failed[] = []
  for (const [name, operation] of operations) {
    if (name === AFTER_BACKOFF) await sleep(BACKOFF_MAX_MS + 50)
    seen.push({ name, ...(await failure(operation())) })
  }
  return seen
}

/** Sets environment variables (undefined deletes one) and returns what puts them back. */
export function withEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]))
  const apply = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  }
  apply(vars)
  return () => apply(saved)
}

/** No credentials in memjs's environment variables: a store made inside `make` has only what its options say. */
export function withoutEnvCredentials<T>(make: () => T): T {
  const restore = withEnv({
    MEMCACHIER_USERNAME: undefined,
    MEMCACHIER_PASSWORD: undefined,
    MEMCACHE_USERNAME: undefined,
    MEMCACHE_PASSWORD: undefined,
  })
  try {
    return make()
  } finally {
    restore()
  }
}

/** Milliseconds until `operation` first succeeds (it is retried every 10 ms); throws after `limitMs`. */
export async function untilSuccess(operation: () => Promise<unknown>, limitMs: number): Promise<number> {
  const started = performance.now()
  let last: unknown
  while (performance.now() - started < limitMs) {
    try {
      await operation()
      return performance.now() - started
    } catch (err) {
      last = err
      await sleep(10)
    }
  }
  throw new Error(`no success within ${limitMs} ms; last error: ${(last as Error)?.message}`)
}

/** A regular expression matching `text` literally. */
export function literally(text: string): RegExp {
  return new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
}

/** One load request: when it started, how long it took, and its error code (undefined: success). */
export interface Outcome {
  at: number
  ms: number
  code: string | undefined
  error?: MemcacheStoreError
  /** What `label` said of the request (the session it was for, say). */
  label?: string
}

/** Runs `operation` from `concurrency` loops until stopped, recording every outcome (labelled by `label`). */
export function load(concurrency: number, operation: (i: number) => Promise<unknown>, label?: (i: number) => string) {
  const outcomes: Outcome[] = []
  let running = true
  let n = 0
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      const at = performance.now()
      const i = n++
      try {
        await operation(i)
        outcomes.push({ at, ms: performance.now() - at, code: undefined, label: label?.(i) })
      } catch (err) {
        const error = err as MemcacheStoreError
        outcomes.push({ at, ms: performance.now() - at, code: error.code ?? String(err), error, label: label?.(i) })
        // A failure can come at once (a refusal during back-off): let timers and I/O run.
        await sleep(1)
      }
    }
  })
  return {
    outcomes,
    async stop(): Promise<Outcome[]> {
      running = false
      await Promise.all(loops)
      return outcomes
    },
  }
}

/** Each code with how often it came and its first message, for the printed figures. */
export function tally(outcomes: readonly Outcome[]): string {
  const byCode = new Map<string, { count: number; message: string }>()
  for (const { code, error } of outcomes) {
    if (code === undefined) continue
    const entry = byCode.get(code) ?? { count: 0, message: error?.message ?? '' }
    entry.count++
    byCode.set(code, entry)
  }
  return [...byCode].map(([code, { count, message }]) => `${code} x${count} (first: ${message})`).join('; ') || 'no failures'
}

/**
 * set, get, touch, get, ids, destroy of one session: it round-trips, memcached holds it while it
 * lives (seen through the server's own connection), and listing reaches it.
 */
export async function roundTrip(store: MemcacheStore, server: MemcachedServer, user = 'ada'): Promise<void> {
  const sid = randomId()
  await store.set(sid, plainSession({ user }))
  assert.equal((await readSession(store, sid))?.user, user)
  await store.touch(sid, plainSession({ user }))
  assert.equal((await readSession(store, sid))?.user, user)
  assert.match((await server.inspect(store.prefix + sid))?.value.toString() ?? '', new RegExp(`"user":"${user}"`))
  assert.ok((await store.ids()).includes(sid), 'ids() lists the session on its own connection')
  await store.destroy(sid)
  assert.equal(await store.get(sid), null)
  assert.equal(await server.inspect(store.prefix + sid), undefined)
}

/** Runs `operation` and returns how long it took to settle and how. */
export async function timed<T>(operation: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now()
  try {
    const value = await operation
    return { ms: performance.now() - started, value }
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
}

export function storeError(error: unknown): MemcacheStoreError {
  assert.ok(error instanceof MemcacheStoreError, `a MemcacheStoreError, not ${String(error)}`)
  return error
}

/** Retries `operation` while the server is in its back-off (ESERVERDOWN: not sent), for at most 3 s. */
export async function untilSent<T>(operation: () => Promise<T>): Promise<T> {
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
