// `npm run bench`: the whole benchmark in one run. Starts its own servers on free ports: the
// default memcached (-t 2, as the test harness runs it; or MEMCACHE_SERVERS), a second one with
// -t 1, a TLS one (-Z -t 1, certificates made by the test harness, a plain listener beside the TLS
// one), and redis for connect-redis.
// BENCH_QUICK=1 runs a short smoke version; BENCH_PART=store|http|micro (genid, tracing) runs one part.
// Writes bench/results/latest.{md,svg} (quick.* and partial.* for the others).
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { makeCertificates } from '../spec/harness/certs.ts'
import { freePort, MemcachedServer, memcachedBinary } from '../spec/harness/memcached.ts'
import { ratioChart } from './chart.ts'
import { runGenidMicro } from './genid.ts'
import { type HttpResults, runHttpLevel } from './http-level.ts'
import { buildReport } from './report.ts'
import { runStoreLevel, type StoreResults } from './store-level.ts'
import { runTracingMicro } from './tracing.ts'

const quick = process.env.BENCH_QUICK === '1'
const STORE_SETTINGS = quick
  ? { sampleMs: 60, rounds: 2, targetRounds: 3, warmupMs: 100, fixedCount: 5_000, fixedRounds: 2 }
  : { sampleMs: 200, rounds: 3, targetRounds: 9, warmupMs: 500, fixedCount: 30_000, fixedRounds: 5 }
const HTTP_SETTINGS = quick
  ? { seconds: 1, warmupSeconds: 1, rounds: 1, connections: 32, cookies: 100 }
  : { seconds: 2, warmupSeconds: 1, rounds: 7, connections: 32, cookies: 300 }
const GENID_ROUNDS = quick ? 30 : 200
const TRACING_ROUNDS = quick ? 3 : 9

async function main(): Promise<void> {
  const started = performance.now()
  const loadAverageBefore = os.loadavg()
  const external = process.env.MEMCACHE_SERVERS
  const part = process.env.BENCH_PART
  const memcached = external ? undefined : await MemcachedServer.start({ memoryMb: 1024 })
  const servers = external ?? (memcached as MemcachedServer).address
  // Later arguments win: -t 1 replaces the harness's -t 2.
  const singleThread = await MemcachedServer.start({ memoryMb: 256, args: ['-t', '1'] })
  // Two more for the replica section: three servers, the default one among them.
  const more = external ? [] : await Promise.all([MemcachedServer.start({ memoryMb: 256 }), MemcachedServer.start({ memoryMb: 256 })])
  const cluster = external ? undefined : [memcached as MemcachedServer, ...more]
  const certificates = makeCertificates()
  // TLS on its port, and a plain listener beside it (`notls:`): the TLS section compares the two on
  // one process with one worker thread.
  const plainPort = await freePort()
  const tls = await MemcachedServer.start({
    memoryMb: 256,
    tls: { cert: certificates.server.cert, key: certificates.server.key },
    args: ['-t', '1', '-l', `notls:127.0.0.1:${plainPort}`],
  })
  const progress = (line: string) => console.error(line)
  try {
    console.error(`benchmark (${quick ? 'quick' : 'full'}) against memcached ${servers}, -t 1 ${singleThread.address}, TLS ${tls.address}`)
    // BENCH_PART=store, http or micro runs one part, for working on it; the report then has the others empty.
    const store: StoreResults =
      !part || part === 'store'
        ? await runStoreLevel(
            {
              servers,
              tls: { servers: tls.address, plain: `127.0.0.1:${plainPort}`, ca: certificates.ca.certPem },
              singleThread: singleThread.address,
              cluster: cluster?.map((server) => server.address).join(','),
            },
            STORE_SETTINGS,
            progress,
          )
        : { cells: [], singleThread: [], tls: [], fixedCount: [], replicas: [] }
    const genid = !part || part === 'micro' ? await runGenidMicro(servers, GENID_ROUNDS) : undefined
    const tracing = !part || part === 'micro' ? await runTracingMicro(servers, TRACING_ROUNDS, STORE_SETTINGS.sampleMs) : []
    const http: HttpResults =
      !part || part === 'http'
        ? await runHttpLevel(
            {
              memcached: { address: servers, pid: memcached?.pid, stats: memcached && (() => memcached.command('stats')) },
              tls: { address: tls.address, pid: tls.pid, stats: () => tls.command('stats'), caFile: certificates.ca.cert },
              cluster: cluster?.map((server) => ({ address: server.address, pid: server.pid, stats: () => server.command('stats') })),
            },
            HTTP_SETTINGS,
            progress,
          )
        : { tool: 'none', cells: [], skipped: [] }
    const env = {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      cpu: cpuModel(),
      cores: os.availableParallelism(),
      node: process.version,
      memcached: memcachedVersion(),
      loadTool: http.tool,
      mode: quick ? 'quick (BENCH_QUICK=1)' : part ? `partial (BENCH_PART=${part})` : 'full',
      loadAverageBefore,
      loadAverageAfter: os.loadavg(),
      durationSeconds: Math.round((performance.now() - started) / 1000),
    }
    const report = buildReport(env, store, http, genid, tracing)
    const results = fileURLToPath(new URL('./results/', import.meta.url))
    mkdirSync(results, { recursive: true })
    // Only a whole full run replaces latest.*: quick and partial runs have their own files.
    const name = quick ? 'quick' : part ? 'partial' : 'latest'
    writeFileSync(`${results}${name}.md`, `${report.markdown}\n`)
    writeFileSync(
      `${results}${name}.svg`,
      ratioChart(
        report.ratios,
        'express-session-memcache: ratios, median of interleaved rounds',
        `whisker: min–max; black tick: target; ${env.mode} run, ${env.date}, ${env.cpu} (${env.cores} cores)`,
      ),
    )
    console.log(report.markdown)
    console.error(`written: bench/results/${name}.md, bench/results/${name}.svg`)
  } finally {
    await memcached?.stop()
    await Promise.all(more.map((server) => server.stop()))
    await singleThread.stop()
    await tls.stop()
  }
}

function cpuModel(): string {
  try {
    const line = execFileSync('lscpu', { encoding: 'utf8' })
      .split('\n')
      .find((l) => l.startsWith('Model name:'))
    if (line) return line.replace('Model name:', '').trim()
  } catch {}
  return os.cpus()[0]?.model ?? 'unknown CPU'
}

function memcachedVersion(): string {
  try {
    return execFileSync(memcachedBinary(), ['-V'], { encoding: 'utf8' })
      .trim()
      .replace(/^memcached /, '')
  } catch {
    return 'unknown'
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
