// HTTP level: one app per store in its own child process, loaded in interleaved rounds.
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort, sleep } from '../spec/harness/memcached.ts'
import { LOAD_TOOL, type LoadResult, load } from './load.ts'
import { rotation } from './stats.ts'

/** The stores of the apps, as http-app.ts knows them (BENCH_STORE). */
export const APP_STORES = [
  'MemoryStore',
  'this store',
  'this store, touchAfter 60',
  'this store, encrypted',
  'connect-memjs',
  'connect-memcached',
  'connect-redis',
] as const
export type AppStore = (typeof APP_STORES)[number]

export const ROUTES = ['read', 'write'] as const
export type Route = (typeof ROUTES)[number]

export interface HttpSettings {
  seconds: number
  warmupSeconds: number
  rounds: number
  connections: number
  cookies: number
}

export interface HttpCell {
  route: Route
  /** Per app, one result per round, in round order. */
  samples: Record<string, HttpSample[]>
}

/** One load run of one app: what the load tool saw, and the app's own CPU time per request. */
export interface HttpSample extends LoadResult {
  cpuMicrosPerRequest: number
  /** CPU time of the memcached or redis server per request (NaN when unknown, 0 for MemoryStore). */
  serverCpuMicrosPerRequest: number
  /** The app's largest resident set size seen while this load ran, in bytes (NaN when unreadable). */
  peakRssBytes: number
}

export interface HttpResults {
  tool: string
  cells: HttpCell[]
  skipped: string[]
}

interface RunningApp {
  name: AppStore
  child: ChildProcess
  url: string
  cookies: string[]
}

// Linux's USER_HZ, the unit of /proc/<pid>/stat times; 100 on every common architecture.
const CLOCK_TICKS = 100

const APP_FILE = fileURLToPath(new URL('./http-app.ts', import.meta.url))

/**
 * `memcachedPid`: the memcached the script started, whose CPU time per request is reported beside
 * the app's (on a 2-core machine it competes with the app for the same cores).
 */
export async function runHttpLevel(
  servers: string,
  settings: HttpSettings,
  progress: (line: string) => void,
  memcachedPid?: number,
): Promise<HttpResults> {
  const skipped: string[] = []
  const redis = await startRedis()
  if (!redis) skipped.push('connect-redis (no redis-server binary)')
  // BENCH_APPS="this store;connect-memjs" limits the apps, for working on one comparison.
  const only = process.env.BENCH_APPS?.split(';')
  const names = APP_STORES.filter((name) => (name !== 'connect-redis' || redis) && (!only || only.includes(name)))
  const apps: RunningApp[] = []
  try {
    // One at a time, so that start-up and the cookie pools do not compete with each other.
    for (const name of names) apps.push(await startApp(name, servers, redis?.url, settings.cookies))
    for (const app of apps)
      for (const route of ROUTES)
        await load({ url: `${app.url}/${route}`, cookies: app.cookies, connections: settings.connections, seconds: settings.warmupSeconds })
    const cells: HttpCell[] = []
    for (const route of ROUTES) {
      const samples: Record<string, HttpSample[]> = {}
      for (let round = 0; round < settings.rounds; round++) {
        for (const app of rotation(apps, round)) {
          const serverPid = app.name === 'connect-redis' ? redis?.child.pid : app.name === 'MemoryStore' ? undefined : memcachedPid
          const serverBefore = processCpuMicros(serverPid)
          const cpuBefore = await askCpu(app.child)
          const url = `${app.url}/${route}`
          const rss = watchRss(app.child.pid)
          const loaded = await load({ url, cookies: app.cookies, connections: settings.connections, seconds: settings.seconds })
          const peakRssBytes = rss.stop()
          const cpuMicros = (await askCpu(app.child)) - cpuBefore
          const requests = loaded.requestsPerSecond * settings.seconds
          const serverMicros = processCpuMicros(serverPid) - serverBefore
          const result = {
            ...loaded,
            cpuMicrosPerRequest: cpuMicros / requests,
            serverCpuMicrosPerRequest: serverMicros / requests,
            peakRssBytes,
          }
          if (result.errors > 0) throw new Error(`${app.name} /${route}: ${result.errors} failed requests under load`)
          samples[app.name] = [...(samples[app.name] ?? []), result]
        }
      }
      cells.push({ route, samples })
      for (const [name, results] of Object.entries(samples)) {
        const rates = results.map((r) => Math.round(r.requestsPerSecond)).join(' ')
        const p99 = results.map((r) => Math.round(r.p99Ms)).join(' ')
        const rss = results.map((r) => Math.round(r.peakRssBytes / 2 ** 20)).join(' ')
        progress(`http /${route.padEnd(5)} ${name.padEnd(26)} ${rates} req/s, p99 ${p99} ms, peak RSS ${rss} MB`)
      }
    }
    return { tool: LOAD_TOOL, cells, skipped }
  } finally {
    for (const app of apps) app.child.kill()
    redis?.child.kill()
  }
}

async function startApp(name: AppStore, servers: string, redisUrl: string | undefined, cookieCount: number): Promise<RunningApp> {
  const child = fork(APP_FILE, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_STORE: name, BENCH_MEMCACHE_SERVERS: servers, BENCH_REDIS_URL: redisUrl ?? '' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message: { port?: number }) => resolve(message.port ?? 0))
    child.once('exit', (code) => reject(new Error(`the ${name} app exited during start-up (${code})`)))
  })
  const url = `http://127.0.0.1:${port}`
  const cookies: string[] = []
  for (let i = 0; i < cookieCount; i++) {
    const response = await fetch(`${url}/login`)
    const cookie = response.headers.get('set-cookie')?.split(';', 1)[0]
    await response.text()
    if (!response.ok || !cookie) throw new Error(`the ${name} app did not create a session (${response.status})`)
    cookies.push(cookie)
  }
  return { name, child, url, cookies }
}

/** User + system CPU time of a local process from /proc (Linux), in microseconds; 0 without a pid, NaN when unreadable. */
function processCpuMicros(pid: number | undefined): number {
  if (pid === undefined) return 0
  try {
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS
  } catch {
    return Number.NaN
  }
}

function askCpu(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (message: { cpuMicros?: number }) => resolve(message.cpuMicros ?? Number.NaN))
    child.send({ type: 'cpu' })
  })
}

/**
 * Samples a process's resident set size from /proc every 20 ms until stopped; `stop` returns the
 * largest seen, in bytes. Only the load itself is watched: start-up and the cookie pool are not.
 */
function watchRss(pid: number | undefined): { stop(): number } {
  let peak = Number.NaN
  const sample = () => {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (kb) peak = Math.max(Number.isNaN(peak) ? 0 : peak, Number(kb[1]) * 1024)
    } catch {
      // Not Linux, or the process is gone: the peak stays NaN and the report leaves it blank.
    }
  }
  sample()
  const timer = setInterval(sample, 20)
  return {
    stop() {
      clearInterval(timer)
      sample()
      return peak
    },
  }
}

/** A throwaway redis-server on a free port, without persistence; undefined when redis is not installed. */
async function startRedis(): Promise<{ child: ChildProcess; url: string } | undefined> {
  try {
    execFileSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' })
  } catch {
    return undefined
  }
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  })
  process.on('exit', () => child.kill('SIGKILL'))
  const url = `redis://127.0.0.1:${port}`
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await answers(port)) return { child, url }
    await sleep(50)
  }
  child.kill('SIGKILL')
  throw new Error(`redis-server on port ${port} did not answer within 5 s`)
}

async function answers(port: number): Promise<boolean> {
  const net = await import('node:net')
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('+PONG'))
    })
    socket.once('error', () => resolve(false))
  })
}
