// Where an app's CPU goes: runs one HTTP benchmark app (bench/http-app.ts) under `node --cpu-prof`,
// loads one route with wrk (or autocannon) for a while, and prints the profile's self time by
// category: express-session, express and its dependencies, this store, memjs and the other
// clients, Node's internals (streams, HTTP parser), the garbage collector, idle.
//   npm run build && node --import tsx bench/profile.ts "this store" read 10
// With a .cpuprofile path instead (e.g. from `BENCH_PROFILE=get:50 node --cpu-prof --import tsx
// bench/overhead.ts`), only summarizes it: node --import tsx bench/profile.ts path/to/file.cpuprofile
// BENCH_TRACE_GC=1 adds --trace-gc to the app (scavenge times and how much each frees), =nvp
// --trace-gc-nvp, summarized at the end: bytes promoted per scavenge (steady to ±0.05 MB from run
// to run where req/s moves ±10%, so the measure to compare builds with), collections, pauses;
// BENCH_HEAP_PROFILE=file samples the app's allocation sites, and with BENCH_HEAP_SURVIVORS=1 only
// what survived a scavenge (what makes scavenges slow).
import { fork } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MemcachedServer } from '../spec/harness/memcached.ts'
import { startRedis } from './http-level.ts'
import { load } from './load.ts'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
}
interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

/** A profile's self time by category and by function, in shares of the whole (idle included). */
export function summarizeProfile(
  profile: CpuProfile,
  top = 25,
): { categories: Array<[string, number]>; functions: Array<[string, number]> } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<number, number>()
  profile.samples.forEach((id, i) => {
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  })
  let total = 0
  const categories = new Map<string, number>()
  const functions = new Map<string, number>()
  for (const [id, micros] of self) {
    const frame = (byId.get(id) as ProfileNode).callFrame
    total += micros
    const category = categoryOf(frame.url, frame.functionName)
    categories.set(category, (categories.get(category) ?? 0) + micros)
    const where = frame.url.split('/').slice(-2).join('/')
    const name = `${frame.functionName || '(anonymous)'} ${where}:${frame.lineNumber + 1}`
    functions.set(name, (functions.get(name) ?? 0) + micros)
  }
  const shares = (map: Map<string, number>) =>
    [...map]
      .map(([name, micros]): [string, number] => [name, micros / total])
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
  return { categories: shares(categories), functions: shares(functions) }
}

function categoryOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(idle)' || functionName === '(garbage collector)' || functionName === '(program)') return functionName
    return 'native (syscalls, V8 builtins)'
  }
  if (url.includes('/dist/index.')) return 'this store (dist/)'
  const module = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]
  if (module === 'express-session') return 'express-session'
  if (module === 'memjs' || module === 'redis' || module === '@redis/client' || module === 'connect-redis') return `client: ${module}`
  if (module === 'tsx' || module === 'esbuild') return 'tsx (loader)'
  if (module) return `express and its dependencies (${module === 'express' ? 'express' : 'router, cookie, ...'})`
  if (url.startsWith('node:')) {
    const part = url.slice(5).split('/')
    return `node: ${part[0] === 'internal' ? part.slice(1, 3).join('/') : part[0]}`
  }
  if (url.includes('/bench/')) return 'benchmark app'
  return url
}

/**
 * --trace-gc-nvp's lines of the app's main thread (the isolate with the most lines), summed:
 * what the young-generation collector promoted per scavenge, and how often each kind ran.
 */
export function summarizeGcTrace(output: string): string {
  const byIsolate = new Map<string, Array<Record<string, string>>>()
  for (const line of output.split('\n')) {
    const isolate = /^\[\d+:(0x[0-9a-f]+)\]/.exec(line)?.[1]
    if (isolate === undefined || !line.includes(' gc=')) continue
    const fields = Object.fromEntries(line.split(' ').flatMap((part) => (part.includes('=') ? [part.split('=', 2)] : [])))
    const lines = byIsolate.get(isolate)
    if (lines) lines.push(fields)
    else byIsolate.set(isolate, [fields])
  }
  const collections = [...byIsolate.values()].sort((a, b) => b.length - a.length)[0] ?? []
  const scavenges = collections.filter((c) => c.gc === 's')
  const full = collections.length - scavenges.length
  const sum = (list: Array<Record<string, string>>, field: string) => list.reduce((total, c) => total + Number(c[field] ?? 0), 0)
  const promotedMb = sum(scavenges, 'promoted') / Math.max(1, scavenges.length) / 1e6
  return (
    `GC: ${scavenges.length} scavenges promoting ${promotedMb.toFixed(2)} MB each on average, ` +
    `${Math.round(sum(scavenges, 'pause'))} ms in scavenges; ${full} other collections, ` +
    `${Math.round(sum(collections, 'pause') - sum(scavenges, 'pause'))} ms`
  )
}

function print(profile: CpuProfile): void {
  const { categories, functions } = summarizeProfile(profile)
  console.log('| share of samples | category |\n| ---: | --- |')
  for (const [name, share] of categories) console.log(`| ${(share * 100).toFixed(1)}% | ${name} |`)
  console.log('\n| share | function |\n| ---: | --- |')
  for (const [name, share] of functions) console.log(`| ${(share * 100).toFixed(1)}% | ${name} |`)
}

const [first, route = 'read', seconds = '10'] = process.argv.slice(2)
if (first?.endsWith('.cpuprofile')) {
  print(JSON.parse(readFileSync(first, 'utf8')) as CpuProfile)
} else {
  const store = first ?? 'this store'
  const traceGc = process.env.BENCH_TRACE_GC
  const memcached = await MemcachedServer.start({ memoryMb: 256 })
  const redis = store === 'connect-redis' ? await startRedis() : undefined
  const dir = mkdtempSync(join(tmpdir(), 'bench-profile-'))
  try {
    const child = fork(fileURLToPath(new URL('./http-app.ts', import.meta.url)), [], {
      execArgv: [
        '--cpu-prof',
        '--cpu-prof-dir',
        dir,
        '--import',
        'tsx',
        ...(traceGc ? [traceGc === 'nvp' ? '--trace-gc-nvp' : '--trace-gc'] : []),
      ],
      env: { ...process.env, BENCH_STORE: store, BENCH_MEMCACHE_SERVERS: memcached.address, BENCH_REDIS_URL: redis?.url ?? '' },
      stdio: ['ignore', traceGc === 'nvp' ? 'pipe' : 'inherit', 'inherit', 'ipc'],
    })
    let gcTrace = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      gcTrace += chunk.toString()
    })
    const port = await new Promise<number>((resolve) => child.once('message', (m: { port?: number }) => resolve(m.port ?? 0)))
    const url = `http://127.0.0.1:${port}`
    const cookies: string[] = []
    for (let i = 0; i < 300; i++) {
      const response = await fetch(`${url}/login`)
      cookies.push(response.headers.get('set-cookie')?.split(';', 1)[0] ?? '')
      await response.text()
    }
    await load({ url: `${url}/${route}`, cookies, connections: 32, seconds: 2 })
    const result = await load({
      url: `${url}/${route}`,
      cookies: route === 'login' ? [] : cookies,
      connections: 32,
      seconds: Number(seconds),
    })
    console.log(
      `${store} /${route}: ${Math.round(result.requestsPerSecond)} req/s under the profiler (the profile includes start-up and warm-up)\n`,
    )
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.disconnect()
    await exited
    // The app process (the loader's worker thread writes a profile of its own: the largest is the app's).
    const files = readdirSync(dir).map((name) => join(dir, name))
    const largest = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]
    print(JSON.parse(readFileSync(largest, 'utf8')) as CpuProfile)
    if (traceGc === 'nvp') console.log(`\n${summarizeGcTrace(gcTrace)}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
    redis?.child.kill()
    await memcached.stop()
  }
}
