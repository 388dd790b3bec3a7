import net from 'node:net'
import { freePort } from './memcached.ts'

/** A TCP listener that misbehaves like a broken memcached: closes every connection, or answers garbage. */
export async function brokenListener(mode: 'close' | 'garbage', seed = 1): Promise<{ address: string; close(): Promise<void> }> {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  const random = seededRandom(seed)
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', () => {
      if (mode === 'close') socket.end()
      else socket.write(Buffer.from(Array.from({ length: 64 }, () => Math.floor(random() * 256))))
    })
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/** mulberry32: a small seeded generator, so a failing random case can be reproduced from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Runs `operation` from `concurrency` loops until `stop()` says so; records every settle time and outcome. */
export function loadLoop(concurrency: number, operation: (i: number) => Promise<unknown>) {
  const results: Array<{ at: number; ms: number; ok: boolean; error?: unknown }> = []
  let running = true
  let n = 0
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      const started = performance.now()
      try {
        await operation(n++)
        results.push({ at: started, ms: performance.now() - started, ok: true })
      } catch (error) {
        results.push({ at: started, ms: performance.now() - started, ok: false, error })
      }
    }
  })
  return {
    results,
    async stop() {
      running = false
      await Promise.all(loops)
      return results
    },
  }
}

/** Counts unhandled rejections, uncaught exceptions and warnings (MaxListenersExceeded...) while a suite runs. */
export function watchProcess() {
  const seen: string[] = []
  const onRejection = (reason: unknown) => seen.push(`unhandledRejection: ${String(reason)}`)
  const onException = (err: Error) => seen.push(`uncaughtException: ${err.message}`)
  const onWarning = (warning: Error) => seen.push(`warning: ${warning.name}: ${warning.message}`)
  process.on('unhandledRejection', onRejection)
  process.on('uncaughtException', onException)
  process.on('warning', onWarning)
  return {
    seen,
    stop() {
      process.off('unhandledRejection', onRejection)
      process.off('uncaughtException', onException)
      process.off('warning', onWarning)
    },
  }
}
