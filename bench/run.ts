// `npm run bench`: the whole benchmark in one run against one memcached (started here on a free
// port, or MEMCACHE_SERVERS). BENCH_QUICK=1 runs a short smoke version. Writes bench/results/latest.{md,svg}.
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { MemcachedServer, memcachedBinary } from '../spec/harness/memcached.ts'
import { ratioChart } from './chart.ts'
import { runHttpLevel } from './http-level.ts'
import { buildReport } from './report.ts'
import { runStoreLevel } from './store-level.ts'

const quick = process.env.BENCH_QUICK === '1'
const STORE_SETTINGS = quick
  ? { sampleMs: 60, rounds: 2, targetRounds: 3, warmupMs: 100 }
  : { sampleMs: 200, rounds: 3, targetRounds: 11, warmupMs: 500 }
const HTTP_SETTINGS = quick
  ? { seconds: 1, warmupSeconds: 1, rounds: 1, connections: 32, cookies: 100 }
  : { seconds: 2, warmupSeconds: 1, rounds: 7, connections: 32, cookies: 300 }

async function main(): Promise<void> {
  const started = performance.now()
  const loadAverageBefore = os.loadavg()
  const external = process.env.MEMCACHE_SERVERS
  const memcached = external ? undefined : await MemcachedServer.start({ memoryMb: 1024 })
  const servers = external ?? (memcached as MemcachedServer).address
  const progress = (line: string) => console.error(line)
  try {
    console.error(`benchmark (${quick ? 'quick' : 'full'}) against memcached ${servers}`)
    // BENCH_PART=store or http runs one half, for working on it; the report then has the other half empty.
    const part = process.env.BENCH_PART
    const store = part === 'http' ? [] : await runStoreLevel(servers, STORE_SETTINGS, progress)
    const http =
      part === 'store' ? { tool: 'none', cells: [], skipped: [] } : await runHttpLevel(servers, HTTP_SETTINGS, progress, memcached?.pid)
    const env = {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      cpu: cpuModel(),
      cores: os.availableParallelism(),
      node: process.version,
      memcached: memcachedVersion(),
      loadTool: http.tool,
      mode: quick ? 'quick (BENCH_QUICK=1)' : 'full',
      loadAverageBefore,
      loadAverageAfter: os.loadavg(),
      durationSeconds: Math.round((performance.now() - started) / 1000),
    }
    const report = buildReport(env, store, http)
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
