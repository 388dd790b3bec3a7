// Store level: operations per second of each contender, closed loop with a fixed number of
// operations in flight, sampled in rounds that alternate the contenders (A B C D, B C D A, ...).
// Four sections, each against its own memcached:
// - the main grid, against the default server (-t 2, like the test harness);
// - the target cells (get, set, touch at 200 B and 2 KB, 1 and 50 in flight) again against a
//   memcached started with -t 1, where every connection is served by the same worker thread;
// - TLS: the store over TLS and over plain TCP to one -Z memcached (-t 1, a plain listener beside
//   the TLS one), at 1 in flight: what TLS adds to a round trip;
// - fixed-count runs (N operations with callbacks, not time-boxed), as the independent
//   measurement of the issue was made, on both servers and at 200 and 300 B.
import { type Contender, type ContenderName, createContenders, type Done, type TlsTarget } from './contenders.ts'
import { PAYLOAD_SIZES, sessionPayload } from './payload.ts'
import { rotation } from './stats.ts'

export const OPERATIONS = ['set', 'get', 'touch', 'destroy'] as const
export type Operation = (typeof OPERATIONS)[number]
export const IN_FLIGHT = [1, 50, 500] as const
/** The sizes and operations the targets are checked on (at 1 and at 50 in flight). */
export const TARGET_SIZES = ['200 B', '2 KB'] as const
export const TARGET_OPERATIONS = ['get', 'set', 'touch'] as const
/** The contenders that only run at 1 and 50 in flight, at 200 B and 2 KB (they add little elsewhere). */
const NARROW: readonly ContenderName[] = ['this store (meta)']
const MAIN_CONTENDERS: readonly ContenderName[] = [
  'pipelined client',
  'raw memjs',
  'this store',
  'this store (meta)',
  'connect-memjs',
  'connect-memcached',
]
/** The replica section: on three servers, with and without copies. */
const REPLICA_CONTENDERS: readonly ContenderName[] = ['this store, 3 servers', 'this store, 3 servers, replicas 1']
/** The contenders of the -t 1, TLS and fixed-count sections. */
const SINGLE_THREAD_CONTENDERS: readonly ContenderName[] = ['pipelined client', 'raw memjs', 'this store', 'this store (meta)']
const TLS_CONTENDERS: readonly ContenderName[] = ['this store', 'this store, TLS', 'this store (meta)', 'this store (meta), TLS']
const FIXED_COUNT_CONTENDERS: readonly ContenderName[] = ['raw memjs', 'this store']

/** Sessions each contender cycles through; at least the largest in-flight count, so no two operations share one. */
const POOL = 500

export interface StoreLevelSettings {
  sampleMs: number
  rounds: number
  /** Rounds for the cells the targets are checked on (get, set, touch at 200 B and 2 KB, 1 and 50 in flight). */
  targetRounds: number
  warmupMs: number
  /** Operations per fixed-count run, and how many runs of each contender. */
  fixedCount: number
  fixedRounds: number
}

export interface StoreServers {
  /** The default memcached (-t 2). */
  servers: string
  /** A -Z memcached (-t 1) for the TLS section: `servers` is its TLS listener, `plain` its plain one. */
  tls?: TlsTarget & { plain: string }
  /** A memcached started with -t 1. */
  singleThread?: string
  /** Three memcached servers (comma-separated), for `replicas: 1` against none. */
  cluster?: string
}

export interface StoreCell {
  operation: Operation
  size: string
  inFlight: number
  /** Operations per second per contender, one entry per round, in round order. */
  samples: Record<string, number[]>
}

/** Fixed-count runs: `count` operations at 50 in flight, with callbacks; ops/s per contender, one entry per round. */
export interface FixedCountCell {
  operation: Operation
  size: string
  server: string
  count: number
  samples: Record<string, number[]>
}

export interface StoreResults {
  cells: StoreCell[]
  /** The target cells against memcached -t 1. */
  singleThread: StoreCell[]
  /** 1 in flight, over TLS and plain TCP to one -Z memcached. */
  tls: StoreCell[]
  fixedCount: FixedCountCell[]
  /** The target cells on three servers: this store with `replicas: 1` and without. */
  replicas: StoreCell[]
}

export async function runStoreLevel(
  targets: StoreServers,
  settings: StoreLevelSettings,
  progress: (line: string) => void,
): Promise<StoreResults> {
  const cells = await mainGrid(targets, settings, progress)
  const singleThread = targets.singleThread
    ? await targetCells(
        '-t 1',
        createContenders(targets.singleThread, `bench${process.pid}t1`, undefined, SINGLE_THREAD_CONTENDERS),
        [1, 50],
        settings,
        progress,
      )
    : []
  const tls = targets.tls
    ? await targetCells(
        'TLS',
        createContenders(targets.tls.plain, `bench${process.pid}tls`, targets.tls, TLS_CONTENDERS),
        [1],
        settings,
        progress,
      )
    : []
  const replicas = targets.cluster
    ? await targetCells(
        '3 servers',
        createContenders(targets.cluster, `bench${process.pid}rep`, undefined, REPLICA_CONTENDERS),
        [1, 50],
        settings,
        progress,
      )
    : []
  const fixed: FixedCountCell[] = []
  const servers = [{ label: 'memcached -t 2 (default)', address: targets.servers }]
  if (targets.singleThread) servers.push({ label: 'memcached -t 1', address: targets.singleThread })
  for (const server of servers) fixed.push(...(await fixedCountCells(server.label, server.address, settings, progress)))
  return { cells, singleThread, tls, fixedCount: fixed, replicas }
}

async function mainGrid(targets: StoreServers, settings: StoreLevelSettings, progress: (line: string) => void): Promise<StoreCell[]> {
  const contenders = createContenders(targets.servers, `bench${process.pid}`, undefined, MAIN_CONTENDERS)
  const cells: StoreCell[] = []
  try {
    for (const size of PAYLOAD_SIZES) {
      const sess = sessionPayload(size.bytes)
      const targetSize = (TARGET_SIZES as readonly string[]).includes(size.label)
      const inCell = (contender: Contender, inFlight: number) =>
        !NARROW.includes(contender.name as ContenderName) || (targetSize && inFlight !== 500)
      for (const contender of contenders) if (inCell(contender, 1)) await fill(contender, sess)
      if (size === PAYLOAD_SIZES[0]) await warmUp(contenders, sess, settings.warmupMs)
      for (const operation of OPERATIONS) {
        for (const inFlight of IN_FLIGHT) {
          const isTarget = targetSize && inFlight !== 500 && (TARGET_OPERATIONS as readonly string[]).includes(operation)
          const rounds = isTarget ? settings.targetRounds : settings.rounds
          const here = contenders.filter((c) => inCell(c, inFlight) && (operation !== 'touch' || c.touch))
          const samples = await sampleRounds(here, operation, sess, inFlight, rounds, settings.sampleMs)
          cells.push({ operation, size: size.label, inFlight, samples })
          progress(`store ${operation.padEnd(7)} ${size.label.padStart(5)} x${String(inFlight).padEnd(3)} ${describe(samples)}`)
        }
      }
    }
  } finally {
    await Promise.all(contenders.map((c) => c.close()))
  }
  return cells
}

/**
 * The target cells (get, set, touch at 200 B and 2 KB) for these contenders at these in-flight
 * counts. Against memcached -t 1 every connection is served by the same worker thread: with -t 2,
 * each client's connection lands on one of two threads (round robin), and at 1 in flight which
 * one (and how soon the scheduler wakes it) shows in the round trip.
 */
async function targetCells(
  label: string,
  contenders: Contender[],
  inFlights: readonly number[],
  settings: StoreLevelSettings,
  progress: (line: string) => void,
): Promise<StoreCell[]> {
  const cells: StoreCell[] = []
  // Over TLS one request at a time (see fill).
  const depth = label === 'TLS' ? 1 : 50
  try {
    for (const sizeLabel of TARGET_SIZES) {
      const size = PAYLOAD_SIZES.find((s) => s.label === sizeLabel) ?? PAYLOAD_SIZES[0]
      const sess = sessionPayload(size.bytes)
      for (const contender of contenders) await fill(contender, sess, depth)
      if (sizeLabel === TARGET_SIZES[0]) await warmUp(contenders, sess, settings.warmupMs, depth)
      for (const inFlight of inFlights) {
        for (const operation of TARGET_OPERATIONS) {
          const samples = await sampleRounds(contenders, operation, sess, inFlight, settings.targetRounds, settings.sampleMs)
          cells.push({ operation, size: sizeLabel, inFlight, samples })
          progress(`store ${label} ${operation.padEnd(5)} ${sizeLabel.padStart(5)} x${inFlight} ${describe(samples)}`)
        }
      }
    }
  } finally {
    await Promise.all(contenders.map((c) => c.close()))
  }
  return cells
}

/**
 * `count` operations at 50 in flight with callbacks, the run's rate counted from its first
 * operation to its last: a fixed amount of work rather than a time box, so a collection or a slow
 * start-up falls inside the figure instead of after the sample ends. Sessions of 200 and 300 B.
 */
async function fixedCountCells(
  server: string,
  servers: string,
  settings: StoreLevelSettings,
  progress: (line: string) => void,
): Promise<FixedCountCell[]> {
  const contenders = createContenders(servers, `bench${process.pid}fc`, undefined, FIXED_COUNT_CONTENDERS)
  const cells: FixedCountCell[] = []
  try {
    for (const bytes of [200, 300]) {
      const sess = sessionPayload(bytes)
      for (const contender of contenders) await fill(contender, sess)
      for (const operation of TARGET_OPERATIONS) {
        const samples: Record<string, number[]> = {}
        for (let round = 0; round < settings.fixedRounds; round++) {
          for (const contender of rotation(contenders, round)) {
            const rate = await closedLoop(operationOf(contender, operation, sess), 50, Number.POSITIVE_INFINITY, settings.fixedCount)
            samples[contender.name] = [...(samples[contender.name] ?? []), rate]
          }
        }
        cells.push({ operation, size: `${bytes} B`, server, count: settings.fixedCount, samples })
        progress(`store fixed ${settings.fixedCount} ${operation.padEnd(5)} ${bytes} B ${server}: ${describe(samples)}`)
      }
    }
  } finally {
    await Promise.all(contenders.map((c) => c.close()))
  }
  return cells
}

async function sampleRounds(
  contenders: readonly Contender[],
  operation: Operation,
  sess: Record<string, unknown>,
  inFlight: number,
  rounds: number,
  ms: number,
): Promise<Record<string, number[]>> {
  const samples: Record<string, number[]> = {}
  for (let round = 0; round < rounds; round++) {
    for (const contender of rotation(contenders, round)) {
      const opsPerSecond = await sample(contender, operation, sess, inFlight, ms)
      samples[contender.name] = [...(samples[contender.name] ?? []), opsPerSecond]
    }
  }
  return samples
}

async function warmUp(contenders: readonly Contender[], sess: Record<string, unknown>, ms: number, inFlight = 50): Promise<void> {
  for (const contender of contenders)
    for (const op of OPERATIONS.slice(0, 3)) if (op !== 'touch' || contender.touch) await sample(contender, op, sess, inFlight, ms)
}

function describe(samples: Record<string, number[]>): string {
  return Object.entries(samples)
    .map(([name, values]) => `${name}=${Math.round(values.reduce((a, b) => a + b, 0) / values.length)}`)
    .join(' ')
}

/**
 * Stores every session of the pool, so that get and touch find them. Over TLS one at a time:
 * memcached 1.6.18 -Z leaves a request unanswered when more than its 16 KB read buffer arrives at
 * once (it does not read what OpenSSL already decrypted until more bytes come), and a closed loop
 * then stalls until the store's timeout (see bench/README.md).
 */
async function fill(contender: Contender, sess: Record<string, unknown>, inFlight = 50): Promise<void> {
  await closedLoop((n, done) => contender.set(sessionId(n), sess, done), inFlight, Number.POSITIVE_INFINITY, POOL)
}

function sample(contender: Contender, operation: Operation, sess: Record<string, unknown>, inFlight: number, ms: number): Promise<number> {
  const op = operationOf(contender, operation, sess)
  return closedLoop(op, inFlight, ms, Number.POSITIVE_INFINITY)
}

function operationOf(contender: Contender, operation: Operation, sess: Record<string, unknown>): (n: number, done: Done) => void {
  switch (operation) {
    case 'set':
      return (n, done) => contender.set(sessionId(n), sess, done)
    case 'get':
      return (n, done) => contender.get(sessionId(n), done)
    case 'touch': {
      const touch = contender.touch
      if (!touch) throw new Error(`${contender.name} has no touch`)
      return (n, done) => touch(sessionId(n), sess, done)
    }
    case 'destroy':
      return (n, done) => contender.destroy(sessionId(n), done)
  }
}

function sessionId(n: number): string {
  return `s${n % POOL}`
}

/**
 * Keeps `inFlight` operations running until `ms` have passed or `limit` were started; resolves with
 * completed operations per second. Any failed operation fails the sample: a benchmark of errors is worthless.
 */
function closedLoop(op: (n: number, done: Done) => void, inFlight: number, ms: number, limit: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now()
    const end = start + ms
    let started = 0
    let completed = 0
    let active = 0
    let failure: unknown
    const done: Done = (err) => {
      if (err && failure === undefined) failure = err
      completed++
      if (failure === undefined && started < limit && performance.now() < end) {
        op(started++, done)
        return
      }
      if (--active > 0) return
      if (failure !== undefined) reject(failure)
      else resolve((completed * 1000) / (performance.now() - start))
    }
    for (; active < Math.min(inFlight, limit); active++) op(started++, done)
  })
}
