// Loads one app route from outside the app's process, cycling through a pool of session cookies:
// wrk (one thread, in C: it leaves more of a 2-core machine to the app) when installed, else autocannon.
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'

export interface LoadResult {
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  errors: number
}

export interface LoadSettings {
  url: string
  cookies: readonly string[]
  connections: number
  seconds: number
}

export const LOAD_TOOL: 'wrk' | 'autocannon' = hasWrk() ? 'wrk' : 'autocannon'

export function load(settings: LoadSettings): Promise<LoadResult> {
  return LOAD_TOOL === 'wrk' ? withWrk(settings) : withAutocannon(settings)
}

function hasWrk(): boolean {
  if (process.env.BENCH_LOAD_TOOL === 'autocannon') return false
  try {
    execFileSync('sh', ['-c', 'command -v wrk'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

// wrk's done() hook reports in microseconds; one Lua state per thread, so one thread walks the pool in order.
const WRK_SCRIPT = (cookies: readonly string[]) => `
local cookies = { ${cookies.map((c) => JSON.stringify(c)).join(', ')} }
local i = 0
request = function()
  if #cookies == 0 then return wrk.format("GET", nil, {}) end
  i = i + 1
  return wrk.format("GET", nil, { ["Cookie"] = cookies[(i % #cookies) + 1] })
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
`

async function withWrk({ url, cookies, connections, seconds }: LoadSettings): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-wrk-'))
  try {
    const script = join(dir, 'cookies.lua')
    writeFileSync(script, WRK_SCRIPT(cookies))
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-s', script, url], (err, out) => (err ? reject(err) : resolve(out)))
    })
    const line = /BENCH (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(stdout)
    if (!line) throw new Error(`wrk printed no result for ${url}: ${stdout}`)
    const [requests, durationUs, p50Us, p99Us, errors] = line.slice(1).map(Number)
    return { requestsPerSecond: requests / (durationUs / 1e6), p50Ms: p50Us / 1000, p99Ms: p99Us / 1000, errors }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function withAutocannon({ url, cookies, connections, seconds }: LoadSettings): Promise<LoadResult> {
  let i = 0
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    requests: [
      {
        setupRequest: (req) =>
          cookies.length === 0 ? req : { ...req, headers: { ...req.headers, cookie: cookies[i++ % cookies.length] } },
      },
    ],
  })
  return {
    requestsPerSecond: result.requests.total / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
  }
}
