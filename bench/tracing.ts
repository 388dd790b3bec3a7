// What a subscriber on the store's tracing channel costs per operation: get and set of 200 B
// sessions at 50 and 1 in flight, rounds alternating no subscriber and one (recording every
// operation's latency in a histogram, as an APM would), ratios and µs per operation taken round by
// round. At HTTP level the same subscriber is the app "this store, traced".
import diagnosticsChannel from 'node:diagnostics_channel'
import { createHistogram } from 'node:perf_hooks'
import type { SessionData } from 'express-session'
import { MemcacheStore } from './package.ts'
import { sessionPayload } from './payload.ts'

const TRACING_CHANNEL = 'express-session-memcache:operation'
const POOL = 500

export interface TracingCell {
  operation: 'get' | 'set'
  inFlight: number
  /** Operations per second without and with a subscriber, one entry per round. */
  untraced: number[]
  traced: number[]
}

export async function runTracingMicro(servers: string, rounds: number, sampleMs: number): Promise<TracingCell[]> {
  const store = new MemcacheStore({ servers, prefix: `trace${process.pid}:`, logger: false })
  const sess = sessionPayload(200) as unknown as SessionData
  const channel = diagnosticsChannel.tracingChannel(TRACING_CHANNEL)
  const histogram = createHistogram()
  const started = new WeakMap<object, number>()
  const subscriber = {
    start: (trace: unknown) => void started.set(trace as object, performance.now()),
    end: () => {},
    asyncStart: () => {},
    asyncEnd: (trace: unknown) => {
      const at = started.get(trace as object)
      if (at !== undefined) histogram.record(Math.max(1, Math.round((performance.now() - at) * 1000)))
    },
    error: () => {},
  }
  const loop = (operation: 'get' | 'set', inFlight: number) =>
    new Promise<number>((resolve, reject) => {
      const start = performance.now()
      let next = 0
      let completed = 0
      let active = inFlight
      const run = (): void => {
        const id = `s${next++ % POOL}`
        const done = (err: unknown) => {
          if (err) return reject(err)
          completed++
          if (performance.now() - start < sampleMs) run()
          else if (--active === 0) resolve((completed * 1000) / (performance.now() - start))
        }
        if (operation === 'get') store.get(id, done)
        else store.set(id, sess, done)
      }
      for (let i = 0; i < inFlight; i++) run()
    })
  const cells: TracingCell[] = []
  try {
    for (let i = 0; i < POOL; i++) await store.set(`s${i}`, sess)
    for (const [operation, inFlight] of [
      ['get', 50],
      ['set', 50],
      ['get', 1],
      ['set', 1],
    ] as const) {
      const cell: TracingCell = { operation, inFlight, untraced: [], traced: [] }
      await loop(operation, inFlight)
      for (let round = 0; round < rounds; round++) {
        for (const traced of round % 2 === 0 ? [false, true] : [true, false]) {
          if (traced) channel.subscribe(subscriber)
          const rate = await loop(operation, inFlight)
          if (traced) channel.unsubscribe(subscriber)
          cell[traced ? 'traced' : 'untraced'].push(rate)
        }
      }
      cells.push(cell)
    }
  } finally {
    await store.close()
  }
  return cells
}
