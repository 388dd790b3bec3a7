// How long `length`, `ids`, `all` and `clear` take with 100,000 sessions on a server that also holds
// 100,000 keys of another application. Starts its own memcached; run with
// `npm run build && node --import tsx bench/enumeration.ts` (SESSIONS=... and FOREIGN=... change the counts).
import net from 'node:net'
import { availableParallelism, loadavg } from 'node:os'
import { MemcachedServer } from '../spec/harness/memcached.ts'
import { plainSession } from '../spec/harness/stores.ts'
import { MemcacheStore } from './package.ts'

const SESSIONS = Number(process.env.SESSIONS ?? 100_000)
const FOREIGN = Number(process.env.FOREIGN ?? 100_000)
const RUNS = 5

const server = await MemcachedServer.start({ memoryMb: 1024 })
const store = new MemcacheStore({ servers: server.address, prefix: 'sess:', timeout: 5000 })
try {
  let started = performance.now()
  await pool(SESSIONS, 200, (i) =>
    store.set(`bench-${i.toString(36).padStart(8, '0')}`, plainSession({ user: `user-${i % 5000}`, roles: ['reader'], visits: i })),
  )
  const fillSessionsMs = performance.now() - started
  started = performance.now()
  await writeForeignKeys(server.port, FOREIGN)
  const fillForeignMs = performance.now() - started
  console.log(
    `memcached ${server.address}: ${SESSIONS} sessions written through the store in ${fmt(fillSessionsMs)}, ${FOREIGN} foreign keys in ${fmt(fillForeignMs)}`,
  )

  const results: [string, number[], string][] = []
  for (const [name, run] of [
    ['length()', () => store.length()],
    ['ids()', () => store.ids().then((ids) => ids.length)],
    ['all()', () => store.all().then((all) => Object.keys(all).length)],
  ] as const) {
    const times: number[] = []
    let answer = 0
    for (let i = 0; i < (name === 'all()' ? 3 : RUNS); i++) {
      const t0 = performance.now()
      answer = await run()
      times.push(performance.now() - t0)
    }
    if (answer !== SESSIONS) throw new Error(`${name} answered ${answer}, expected ${SESSIONS}`)
    results.push([name, times, `${answer} sessions`])
  }
  const t0 = performance.now()
  await store.clear()
  results.push(['clear()', [performance.now() - t0], `${SESSIONS} deletes`])
  const left = await store.length()
  const foreignLeft = Number(/curr_items (\d+)/.exec(await server.command('stats'))?.[1])
  if (left !== 0 || foreignLeft !== FOREIGN) throw new Error(`after clear: ${left} sessions and ${foreignLeft} items left`)

  console.log(`\n| operation | median | min | max | runs | result |\n|---|---|---|---|---|---|`)
  for (const [name, times, result] of results) {
    const sorted = [...times].sort((a, b) => a - b)
    console.log(
      `| ${name} | ${fmt(sorted[Math.floor(sorted.length / 2)])} | ${fmt(sorted[0])} | ${fmt(sorted.at(-1) ?? 0)} | ${times.length} | ${result} |`,
    )
  }
  console.log(`\nafter clear(): 0 sessions, ${foreignLeft} foreign keys still there`)
  console.log(
    `node ${process.version}, ${(await server.command('version')).trim()}, ${availableParallelism()} CPU(s), load average ${loadavg()
      .map((n) => n.toFixed(1))
      .join(' ')}`,
  )
} finally {
  await store.close()
  await server.stop()
}

function fmt(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`
}

async function pool(count: number, width: number, work: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) await work(next++)
    }),
  )
}

/** Another application's keys, in one pipelined burst of text-protocol sets. */
function writeForeignKeys(port: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      for (let i = 0; i < count; i += 10_000) {
        let batch = ''
        for (let j = i; j < Math.min(count, i + 10_000); j++) batch += `set cache:page:${j} 0 0 40 noreply\r\n${'x'.repeat(40)}\r\n`
        socket.write(batch)
      }
      socket.write('version\r\n')
    })
    socket.on('data', (chunk) => {
      if (chunk.toString().includes('VERSION')) {
        socket.destroy()
        resolve()
      }
    })
    socket.once('error', reject)
  })
}
