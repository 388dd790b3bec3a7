// Store level: operations per second of each contender, closed loop with a fixed number of
// operations in flight, sampled in rounds that alternate the contenders (A B C D, B C D A, ...).
import { type Contender, createContenders, type Done } from './contenders.ts'
import { PAYLOAD_SIZES, sessionPayload } from './payload.ts'
import { rotation } from './stats.ts'

export const OPERATIONS = ['set', 'get', 'touch', 'destroy'] as const
export type Operation = (typeof OPERATIONS)[number]
export const IN_FLIGHT = [1, 50, 500] as const

/** Sessions each contender cycles through; at least the largest in-flight count, so no two operations share one. */
const POOL = 500

export interface StoreLevelSettings {
  sampleMs: number
  rounds: number
  /** Rounds for the cells the targets are checked on (50 in flight, 2 KB). */
  targetRounds: number
  warmupMs: number
}

export interface StoreCell {
  operation: Operation
  size: string
  inFlight: number
  /** Operations per second per contender, one entry per round, in round order. */
  samples: Record<string, number[]>
}

export async function runStoreLevel(servers: string, settings: StoreLevelSettings, progress: (line: string) => void): Promise<StoreCell[]> {
  const contenders = createContenders(servers, `bench${process.pid}`)
  const cells: StoreCell[] = []
  try {
    for (const size of PAYLOAD_SIZES) {
      const sess = sessionPayload(size.bytes)
      for (const contender of contenders) await fill(contender, sess)
      if (size === PAYLOAD_SIZES[0]) {
        for (const contender of contenders)
          for (const op of OPERATIONS.slice(0, 3))
            if (op !== 'touch' || contender.touch) await sample(contender, op, sess, 50, settings.warmupMs)
      }
      for (const operation of OPERATIONS) {
        for (const inFlight of IN_FLIGHT) {
          const isTarget = inFlight === 50 && size.label === '2 KB'
          const rounds = isTarget ? settings.targetRounds : settings.rounds
          const samples: Record<string, number[]> = {}
          for (let round = 0; round < rounds; round++) {
            for (const contender of rotation(contenders, round)) {
              if (operation === 'touch' && !contender.touch) continue
              const opsPerSecond = await sample(contender, operation, sess, inFlight, settings.sampleMs)
              samples[contender.name] = [...(samples[contender.name] ?? []), opsPerSecond]
            }
          }
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

function describe(samples: Record<string, number[]>): string {
  return Object.entries(samples)
    .map(([name, values]) => `${name}=${Math.round(values.reduce((a, b) => a + b, 0) / values.length)}`)
    .join(' ')
}

/** Stores every session of the pool, so that get and touch find them. */
async function fill(contender: Contender, sess: Record<string, unknown>): Promise<void> {
  await closedLoop((n, done) => contender.set(sessionId(n), sess, done), 50, Number.POSITIVE_INFINITY, POOL)
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
