// HTTP level: one app per store in its own child process, loaded in interleaved rounds.
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort, sleep } from '../spec/harness/memcached.ts'
import { LOAD_TOOL, type LoadResult, load } from './load.ts'
import { rotation, summarize } from './stats.ts'

/** The stores of the apps, as http-app.ts knows them (BENCH_STORE). */
export const APP_STORES = [
  'MemoryStore',
  'this store',
  'this store (meta)',
  'this store, TLS',
  'this store, no get-and-touch',
  'this store, traced',
  'this store, genid',
  'this store, touchAfter 60',
  'this store, encrypted',
  'connect-memjs',
  'connect-memjs, no-op touch',
  'connect-memcached',
  'connect-redis',
  'this store, 3 servers',
  'this store, 3 servers, replicas 1',
] as const
export type AppStore = (typeof APP_STORES)[number]

/**
 * `read`: the session is read (express-session: get, then touch). `write`: it is changed (get + set).
 * `login`: a new session per request (no cookie sent): the rate of new sessions, for genid's cost.
 */
export const ROUTES = ['read', 'write', 'login'] as const
export type Route = (typeof ROUTES)[number]

/** The apps loaded on /login: with and without genid. */
const LOGIN_APPS: readonly AppStore[] = ['this store', 'this store, genid']

/**
 * The TLS app is not loaded on /write: under load its 2 KB sets are pipelined, and memcached 1.6.18
 * with -Z leaves a request unanswered when more than its read buffer (16 KB) arrives at once (it
 * does not read what OpenSSL already decrypted until more bytes come: a raw TLS client writing ten
 * 2 KB sets in one write gets nine replies). The store then times out and backs off: a benchmark
 * of stalls. Reads are small requests; see bench/README.md.
 */
function loadsRoute(app: AppStore, route: Route): boolean {
  if (route === 'login') return LOGIN_APPS.includes(app)
  return route === 'read' || !READ_ONLY_APPS.includes(app)
}

/**
 * Loaded on /read only: the TLS app (above), and connect-memjs given a touch that answers at once,
 * which shows what express-session itself spends on a store that has `touch` (it then holds back
 * the response's last byte until the touch's callback), the cost connect-memjs does not pay.
 */
const READ_ONLY_APPS: readonly AppStore[] = ['this store, TLS', 'connect-memjs, no-op touch']

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
  /** Commands the memcached or redis server carried out per request (NaN when unknown, 0 for MemoryStore). */
  serverCommandsPerRequest: number
  /** The app's largest resident set size seen while this load ran, in bytes (NaN when unreadable). */
  peakRssBytes: number
}

export interface HttpResults {
  tool: string
  cells: HttpCell[]
  skipped: string[]
}

/** A memcached the apps use: its address, and how to read its counters (and CPU time) while they run. */
export interface HttpServer {
  address: string
  pid?: number
  /** memcached's `stats` as text (undefined when the server was not started here). */
  stats?: () => Promise<string>
}

export interface HttpTargets {
  memcached: HttpServer
  /** The -Z server of 'this store, TLS', with the path of the CA file its certificate is signed by. */
  tls?: HttpServer & { caFile: string }
  /** Three servers, for 'this store, 3 servers' and its `replicas: 1` twin. */
  cluster?: HttpServer[]
}

/** The apps on the three servers of `HttpTargets.cluster`. */
const CLUSTER_APPS: readonly AppStore[] = ['this store, 3 servers', 'this store, 3 servers, replicas 1']

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
 * The memcached servers' CPU time per request is reported beside the app's (on a 2-core machine it
 * competes with the app for the same cores), and their command counters per request.
 */
export async function runHttpLevel(targets: HttpTargets, settings: HttpSettings, progress: (line: string) => void): Promise<HttpResults> {
  const skipped: string[] = []
  const redis = await startRedis()
  if (!redis) skipped.push('connect-redis (no redis-server binary)')
  if (!targets.tls) skipped.push('this store, TLS (no -Z memcached)')
  // BENCH_APPS="this store;connect-memjs" limits the apps, for working on one comparison.
  const only = process.env.BENCH_APPS?.split(';')
  if (!targets.cluster) skipped.push('this store, 3 servers (with and without replicas): no three servers')
  const names = APP_STORES.filter(
    (name) =>
      (name !== 'connect-redis' || redis) &&
      (name !== 'this store, TLS' || targets.tls) &&
      (!CLUSTER_APPS.includes(name) || targets.cluster) &&
      (!only || only.includes(name)),
  )
  const apps: RunningApp[] = []
  const serverOf = (app: RunningApp): HttpServer[] | HttpServer | undefined =>
    app.name === 'MemoryStore' || app.name === 'connect-redis'
      ? undefined
      : app.name === 'this store, TLS'
        ? targets.tls
        : CLUSTER_APPS.includes(app.name)
          ? targets.cluster
          : targets.memcached
  try {
    // One at a time, so that start-up and the cookie pools do not compete with each other.
    for (const name of names) apps.push(await startApp(name, targets, redis?.url, settings.cookies))
    for (const app of apps)
      for (const route of ROUTES)
        if (loadsRoute(app.name, route))
          await load({
            url: `${app.url}/${route}`,
            cookies: cookiesFor(app, route),
            connections: settings.connections,
            seconds: settings.warmupSeconds,
          })
    const cells: HttpCell[] = []
    for (const route of ROUTES) {
      const samples: Record<string, HttpSample[]> = {}
      const loaded = apps.filter((app) => loadsRoute(app.name, route))
      for (let round = 0; round < settings.rounds; round++) {
        for (const app of rotation(loaded, round)) {
          const server = serverOf(app)
          const serverPids = app.name === 'connect-redis' ? [redis?.child.pid] : [server].flat().map((one) => one?.pid)
          const serverBefore = serverPids.reduce((sum: number, pid) => sum + processCpuMicros(pid), 0)
          const commandsBefore = await serverCommands(app.name === 'connect-redis' ? redis?.port : undefined, server)
          const before = await askApp(app.child)
          const url = `${app.url}/${route}`
          const rss = watchRss(app.child.pid)
          const result = await load({ url, cookies: cookiesFor(app, route), connections: settings.connections, seconds: settings.seconds })
          const peakRssBytes = rss.stop()
          // Requests wrk gave up on at the end are still being answered: let them finish before counting.
          await sleep(50)
          const after = await askApp(app.child)
          const requests = after.requests - before.requests
          const commands = (await serverCommands(app.name === 'connect-redis' ? redis?.port : undefined, server)) - commandsBefore
          const serverMicros = serverPids.reduce((sum: number, pid) => sum + processCpuMicros(pid), 0) - serverBefore
          if (result.errors > 0) throw new Error(`${app.name} /${route}: ${result.errors} failed requests under load`)
          samples[app.name] = [
            ...(samples[app.name] ?? []),
            {
              ...result,
              cpuMicrosPerRequest: (after.cpuMicros - before.cpuMicros) / requests,
              serverCpuMicrosPerRequest: serverMicros / requests,
              serverCommandsPerRequest: app.name === 'MemoryStore' ? 0 : commands / requests,
              peakRssBytes,
            },
          ]
        }
      }
      cells.push({ route, samples })
      for (const [name, results] of Object.entries(samples)) {
        const rates = results.map((r) => Math.round(r.requestsPerSecond)).join(' ')
        const p99 = results.map((r) => Math.round(r.p99Ms)).join(' ')
        const commands = summarize(results.map((r) => r.serverCommandsPerRequest)).median.toFixed(2)
        progress(`http /${route.padEnd(5)} ${name.padEnd(28)} ${rates} req/s, p99 ${p99} ms, ${commands} server commands/req`)
      }
    }
    return { tool: LOAD_TOOL, cells, skipped }
  } finally {
    for (const app of apps) app.child.kill()
    redis?.child.kill()
  }
}

/** /login is loaded without a cookie: every request starts a new session. */
function cookiesFor(app: RunningApp, route: Route): readonly string[] {
  return route === 'login' ? [] : app.cookies
}

/**
 * Commands the server carried out so far: memcached's counters of the commands the stores send
 * (get, set/add/cas, touch and get-and-touch, delete; meta commands count as their classic
 * equivalents), or redis's total_commands_processed less the INFO that reads it. NaN when unknown.
 */
async function serverCommands(redisPort: number | undefined, memcached: HttpServer[] | HttpServer | undefined): Promise<number> {
  if (redisPort !== undefined) {
    const info = await redisInfo(redisPort)
    return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN)
  }
  if (Array.isArray(memcached)) {
    const counts = await Promise.all(memcached.map((one) => serverCommands(undefined, one)))
    return counts.reduce((sum, count) => sum + count, 0)
  }
  if (!memcached?.stats) return memcached ? Number.NaN : 0
  return commandCount(await memcached.stats())
}

/** The sum of the counters in MEMCACHED_COMMAND_STATS, from `stats` output. */
export function commandCount(stats: string): number {
  const value = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)`).exec(stats)?.[1] ?? Number.NaN)
  return MEMCACHED_COMMAND_STATS.reduce((sum, name) => sum + value(name), 0)
}

/**
 * The memcached counters that, summed, count each command the stores send once (checked on
 * memcached 1.6.18, binary and meta: every get, get-and-touch, set, add, CAS set, touch and delete
 * adds exactly one). cmd_get counts gets (and a meta get-and-touch that misses), cmd_touch touches
 * and get-and-touches, cmd_set sets, adds and CAS sets; deletes are counted by their outcome.
 */
export const MEMCACHED_COMMAND_STATS = ['cmd_get', 'cmd_set', 'cmd_touch', 'delete_hits', 'delete_misses'] as const

async function redisInfo(port: number): Promise<string> {
  const net = await import('node:net')
  return new Promise((resolve, reject) => {
    let text = ''
    const socket = net.connect(port, '127.0.0.1', () => socket.write('INFO stats\r\n'))
    socket.on('data', (data) => {
      text += data.toString()
      const header = /^\$(\d+)\r\n/.exec(text)
      if (header && Buffer.byteLength(text) >= header[0].length + Number(header[1]) + 2) {
        socket.destroy()
        resolve(text)
      }
    })
    socket.once('error', reject)
  })
}

async function startApp(name: AppStore, targets: HttpTargets, redisUrl: string | undefined, cookieCount: number): Promise<RunningApp> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_STORE: name,
    BENCH_MEMCACHE_SERVERS: targets.memcached.address,
    BENCH_MEMCACHE_TLS_SERVERS: targets.tls?.address ?? '',
    BENCH_MEMCACHE_CLUSTER: targets.cluster?.map((server) => server.address).join(',') ?? '',
    BENCH_TLS_CA: targets.tls?.caFile ?? '',
    BENCH_REDIS_URL: redisUrl ?? '',
  }
  // Get-and-touch is read once, when the store's module loads: this app's process starts without it.
  if (name === 'this store, no get-and-touch') env.EXPRESS_SESSION_MEMCACHE_GET_AND_TOUCH = '0'
  else delete env.EXPRESS_SESSION_MEMCACHE_GET_AND_TOUCH
  const child = fork(APP_FILE, [], { execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
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

/** The app's CPU time so far (user + system, µs) and the requests it answered. */
function askApp(child: ChildProcess): Promise<{ cpuMicros: number; requests: number }> {
  return new Promise((resolve) => {
    child.once('message', (message: { cpuMicros?: number; requests?: number }) =>
      resolve({ cpuMicros: message.cpuMicros ?? Number.NaN, requests: message.requests ?? Number.NaN }),
    )
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
export async function startRedis(): Promise<{ child: ChildProcess; url: string; port: number } | undefined> {
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
    if (await answers(port)) return { child, url, port }
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
