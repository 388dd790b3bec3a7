// Turns the measurements into the Markdown report: targets, store level, cost growth, HTTP level.

import { CONTENDER_NAMES } from './contenders.ts'
import type { HttpResults, HttpSample } from './http-level.ts'
import { PAYLOAD_SIZES } from './payload.ts'
import { pairedRatios, type Summary, summarize } from './stats.ts'
import { IN_FLIGHT, OPERATIONS, type StoreCell } from './store-level.ts'

export interface Environment {
  date: string
  cpu: string
  cores: number
  node: string
  memcached: string
  loadTool: string
  mode: string
  loadAverageBefore: number[]
  loadAverageAfter: number[]
  durationSeconds: number
}

export interface Ratio {
  label: string
  group: string
  ratio: Summary
  /** The least the ratio should be, when a target applies. */
  target?: number
}

export interface Report {
  markdown: string
  ratios: Ratio[]
}

const OURS = 'this store'

export function buildReport(env: Environment, store: StoreCell[], http: HttpResults): Report {
  const ratios = collectRatios(store, http)
  const lines: string[] = []
  lines.push(
    `Measured ${env.date} on ${env.cpu} (${env.cores} cores), Node ${env.node}, memcached ${env.memcached}; ${env.mode} run of ${env.durationSeconds} s.`,
  )
  lines.push(
    `Load average before/after: ${env.loadAverageBefore.map((n) => n.toFixed(2)).join(' ')} / ${env.loadAverageAfter.map((n) => n.toFixed(2)).join(' ')} (above ~2 the machine was shared while measuring).`,
  )
  lines.push('Every figure is the median of interleaved rounds with [min–max]; ratios are taken round by round, then their median.', '')
  lines.push('### Targets', '', '| Target | Measured | Holds |', '| --- | --- | --- |')
  for (const row of targetRows(ratios, http)) lines.push(`| ${row.target} | ${row.measured} | ${row.holds} |`)
  lines.push('', '### Store level (operations per second, thousands)', '')
  lines.push('One memcached, one connection per client, sessions of a pool of 500; `destroy` mostly deletes sessions already gone.', '')
  for (const operation of OPERATIONS) {
    lines.push(`**${operation}**`, '')
    lines.push(`| size | in flight | ${CONTENDER_NAMES.join(' | ')} | this store / raw memjs |`)
    lines.push(`| --- | ---: | ${CONTENDER_NAMES.map(() => '---:').join(' | ')} | ---: |`)
    for (const cell of store.filter((c) => c.operation === operation)) {
      const figures = CONTENDER_NAMES.map((name) => (cell.samples[name] ? formatRange(summarize(cell.samples[name]), 1e-3, 1) : 'no touch'))
      const ratio =
        cell.samples[OURS] && cell.samples['raw memjs']
          ? formatRange(summarize(pairedRatios(cell.samples[OURS], cell.samples['raw memjs'])), 1, 2, 'x')
          : ''
      lines.push(`| ${cell.size} | ${cell.inFlight} | ${figures.join(' | ')} | ${ratio} |`)
    }
    lines.push('')
  }
  lines.push('### Cost growth (this store, microseconds of throughput per operation = 1 / ops per second)', '')
  lines.push('With 1 in flight this is the round-trip latency; with more, the CPU cost each operation adds. Raw memjs in brackets.', '')
  const columns = OPERATIONS.flatMap((operation) => IN_FLIGHT.map((inFlight) => ({ operation, inFlight })))
  lines.push(`| size | ${columns.map((c) => `${c.operation} x${c.inFlight}`).join(' | ')} |`)
  lines.push(`| --- | ${columns.map(() => '---:').join(' | ')} |`)
  for (const size of PAYLOAD_SIZES) {
    const cellsOf = (operation: string, inFlight: number) =>
      store.find((c) => c.size === size.label && c.operation === operation && c.inFlight === inFlight)
    const figures = columns.map(({ operation, inFlight }) => {
      const cell = cellsOf(operation, inFlight)
      if (!cell?.samples[OURS]) return ''
      const ours = 1e6 / summarize(cell.samples[OURS]).median
      const raw = cell.samples['raw memjs'] ? 1e6 / summarize(cell.samples['raw memjs']).median : Number.NaN
      return `${ours.toFixed(ours < 10 ? 1 : 0)} (${raw.toFixed(raw < 10 ? 1 : 0)})`
    })
    lines.push(`| ${size.label} | ${figures.join(' | ')} |`)
  }
  lines.push('', `### HTTP level (Express 5 + express-session, one app process per store, ${http.tool}, sessions of about 2 KB)`, '')
  lines.push(
    '`read`: the route reads the session (get + touch). `write`: it changes it (get + set). Peak RSS is the largest resident set size of the app process seen while that route was under load (sampled every 20 ms), over all rounds.',
    '',
  )
  lines.push(
    "App CPU is the app process's own CPU time per request (user + system). It depends less than requests/s on what else runs on the machine, but on a shared virtual machine it still moves between rounds.",
    '',
  )
  lines.push(
    'Server CPU is what memcached (or redis) spent per request: on this machine it shares the two cores with the app and the load generator.',
    '',
  )
  lines.push(
    '| route | store | requests/s | vs MemoryStore | vs connect-memjs | p50 ms | p99 ms | app CPU µs/req | server CPU µs/req | peak RSS MB |',
  )
  lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const cell of http.cells) {
    const rps = (name: string) => cell.samples[name]?.map((r) => r.requestsPerSecond) ?? []
    for (const [name, results] of Object.entries(cell.samples)) {
      const vsMemory = formatRange(summarize(pairedRatios(rps(name), rps('MemoryStore'))), 1, 2, 'x')
      const vsMemjs = formatRange(summarize(pairedRatios(rps(name), rps('connect-memjs'))), 1, 2, 'x')
      const p50 = summarize(results.map((r) => r.p50Ms)).median.toFixed(2)
      const p99 = summarize(results.map((r) => r.p99Ms)).median.toFixed(2)
      const rss = (peakRss(results) / 2 ** 20).toFixed(0)
      const cpu = formatRange(summarize(results.map((r) => r.cpuMicrosPerRequest)), 1, 0)
      const serverCpu = summarize(results.map((r) => r.serverCpuMicrosPerRequest)).median
      const server = Number.isNaN(serverCpu) ? '' : serverCpu.toFixed(0)
      const figures = [formatRange(summarize(rps(name)), 1, 0), vsMemory, vsMemjs, p50, p99, cpu, server, rss]
      lines.push(`| ${cell.route} | ${name} | ${figures.join(' | ')} |`)
    }
  }
  if (http.skipped.length > 0) lines.push('', `Skipped: ${http.skipped.join('; ')}.`)
  lines.push('', 'Chart of the ratios: [latest.svg](latest.svg).', '')
  return { markdown: lines.join('\n'), ratios }
}

function collectRatios(store: StoreCell[], http: HttpResults): Ratio[] {
  const ratios: Ratio[] = []
  const target = store.filter((c) => c.inFlight === 50 && c.size === '2 KB')
  for (const versus of ['raw memjs', 'connect-memjs', 'connect-memcached'] as const) {
    for (const cell of target) {
      const ours = cell.samples[OURS]
      const theirs = cell.samples[versus]
      if (!ours || !theirs) continue
      const goal =
        versus === 'raw memjs' && cell.operation !== 'destroy'
          ? 0.9
          : versus === 'connect-memcached' && cell.operation === 'touch'
            ? 1.8
            : undefined
      ratios.push({
        group: `store level, 50 in flight, 2 KB: this store / ${versus}`,
        label: cell.operation,
        ratio: summarize(pairedRatios(ours, theirs)),
        target: goal,
      })
    }
  }
  const write = http.cells.find((c) => c.route === 'write')
  const memjsWrite = write?.samples['connect-memjs']?.map((r) => r.requestsPerSecond) ?? []
  for (const [name, results] of Object.entries(write?.samples ?? {})) {
    if (name === 'connect-memjs' || memjsWrite.length === 0) continue
    ratios.push({
      group: "HTTP /write: requests per second / connect-memjs's",
      label: name,
      ratio: summarize(
        pairedRatios(
          results.map((r) => r.requestsPerSecond),
          memjsWrite,
        ),
      ),
      target: name === OURS ? 1.15 : undefined,
    })
  }
  for (const cell of http.cells) {
    const memory = cell.samples.MemoryStore?.map((r) => r.requestsPerSecond) ?? []
    for (const [name, results] of Object.entries(cell.samples)) {
      if (name === 'MemoryStore') continue
      const goal = cell.route === 'write' && name === OURS ? 0.9 : undefined
      ratios.push({
        group: `HTTP /${cell.route}: requests per second / MemoryStore's`,
        label: name,
        ratio: summarize(
          pairedRatios(
            results.map((r) => r.requestsPerSecond),
            memory,
          ),
        ),
        target: goal,
      })
    }
  }
  return ratios
}

function targetRows(ratios: Ratio[], http: HttpResults): Array<{ target: string; measured: string; holds: string }> {
  const rows: Array<{ target: string; measured: string; holds: string }> = []
  const check = (target: string, summary: Summary | undefined, least: number) => {
    if (!summary || Number.isNaN(summary.median)) rows.push({ target, measured: 'not measured', holds: '–' })
    else rows.push({ target, measured: formatRange(summary, 1, 2, 'x'), holds: summary.median >= least ? 'yes' : '**no**' })
  }
  const storeRatio = (versus: string, operation: string) =>
    ratios.find((r) => r.group.endsWith(`/ ${versus}`) && r.label === operation)?.ratio
  for (const operation of ['get', 'set', 'touch'])
    check(`store ${operation}, 50 in flight, 2 KB >= 0.9x raw memjs`, storeRatio('raw memjs', operation), 0.9)
  check('store touch >= 1.8x connect-memcached', storeRatio('connect-memcached', 'touch'), 1.8)
  const write = http.cells.find((c) => c.route === 'write')
  const rps = (name: string) => write?.samples[name]?.map((r) => r.requestsPerSecond) ?? []
  const p99 = (name: string) => write?.samples[name]?.map((r) => r.p99Ms) ?? []
  const median = (values: number[]) => summarize(values).median.toFixed(1)
  check('HTTP write req/s >= 0.9x MemoryStore', summarize(pairedRatios(rps(OURS), rps('MemoryStore'))), 0.9)
  check('HTTP write req/s >= 1.15x connect-memjs', summarize(pairedRatios(rps(OURS), rps('connect-memjs'))), 1.15)
  // How far apart the app without any I/O and connect-memjs are in this run: the room a store has.
  const room = summarize(pairedRatios(rps('MemoryStore'), rps('connect-memjs')))
  if (room.samples > 0)
    rows.push({ target: 'context: MemoryStore (no I/O) / connect-memjs, write', measured: formatRange(room, 1, 2, 'x'), holds: '–' })
  // p99 moves by a factor of two between rounds of the same app here: compared round by round, like requests/s.
  const p99Ratio = summarize(pairedRatios(p99(OURS), p99('connect-memjs')))
  if (p99Ratio.samples === 0) rows.push({ target: 'HTTP write p99 <= connect-memjs', measured: 'not measured', holds: '–' })
  else
    rows.push({
      target: 'HTTP write p99 <= connect-memjs (ratio, lower is better)',
      measured: `${formatRange(p99Ratio, 1, 2, 'x')}; medians ${median(p99(OURS))} vs ${median(p99('connect-memjs'))} ms`,
      holds: p99Ratio.median <= 1 ? 'yes' : '**no**',
    })
  if (rps('connect-redis').length > 0)
    check('stretch: HTTP write req/s >= connect-redis', summarize(pairedRatios(rps(OURS), rps('connect-redis'))), 1)
  const read = http.cells.find((c) => c.route === 'read')
  const readRps = (name: string) => read?.samples[name]?.map((r) => r.requestsPerSecond) ?? []
  for (const [route, routeRps] of [
    ['read', readRps],
    ['write', rps],
  ] as const) {
    const encrypted = summarize(pairedRatios(routeRps(`${OURS}, encrypted`), routeRps(OURS)))
    if (encrypted.samples > 0)
      rows.push({ target: `context: encrypted / plain, ${route} route req/s`, measured: formatRange(encrypted, 1, 2, 'x'), holds: '–' })
  }
  // On /write express-session never calls touch, so these two apps do the same work: how far apart
  // they land is the noise of this run's HTTP figures.
  const twins = summarize(pairedRatios(rps(`${OURS}, touchAfter 60`), rps(OURS)))
  if (twins.samples > 0)
    rows.push({
      target: 'context, noise: two apps doing the same work (touchAfter 60 / without, write route req/s)',
      measured: formatRange(twins, 1, 2, 'x'),
      holds: '–',
    })
  const touchAfter = summarize(pairedRatios(readRps(`${OURS}, touchAfter 60`), readRps(OURS)))
  if (touchAfter.samples > 0)
    rows.push({ target: 'context: touchAfter 60 / without, read route req/s', measured: formatRange(touchAfter, 1, 2, 'x'), holds: '–' })
  const underLoad = (name: string) => peakRss(http.cells.flatMap((c) => c.samples[name] ?? []))
  const rssOurs = underLoad(OURS)
  const rssMemjs = underLoad('connect-memjs')
  if (rssOurs && rssMemjs) {
    const ratio = rssOurs / rssMemjs
    rows.push({
      target: 'peak RSS under load within 10% of connect-memjs',
      measured: `${(rssOurs / 2 ** 20).toFixed(0)} MB vs ${(rssMemjs / 2 ** 20).toFixed(0)} MB (${ratio.toFixed(2)}x)`,
      holds: ratio <= 1.1 ? 'yes' : '**no**',
    })
  }
  return rows
}

/** The largest resident set size seen in any of these load runs, in bytes (NaN when none was read). */
function peakRss(samples: readonly HttpSample[]): number {
  const read = samples.map((s) => s.peakRssBytes).filter((bytes) => !Number.isNaN(bytes))
  return read.length > 0 ? Math.max(...read) : Number.NaN
}

function formatRange(summary: Summary, scale: number, digits: number, unit = ''): string {
  if (summary.samples === 0 || Number.isNaN(summary.median)) return ''
  const f = (n: number) => (n * scale).toFixed(digits)
  return `${f(summary.median)}${unit} [${f(summary.min)}–${f(summary.max)}]`
}
