// Turns the measurements into the Markdown report: targets, the sections behind them, store level,
// cost growth, HTTP level. Every ratio is taken round by round (samples of the same round, side
// by side), then summarized: median [min–max].

import { CONTENDER_NAMES } from './contenders.ts'
import type { GenidMicro } from './genid.ts'
import type { HttpCell, HttpResults, HttpSample } from './http-level.ts'
import { PAYLOAD_SIZES } from './payload.ts'
import { pairedRatios, type Summary, summarize } from './stats.ts'
import { IN_FLIGHT, OPERATIONS, type StoreCell, type StoreResults, TARGET_OPERATIONS, TARGET_SIZES } from './store-level.ts'
import type { TracingCell } from './tracing.ts'

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
const RAW = 'raw memjs'
const PIPELINED = 'pipelined client'
const THREE = 'this store, 3 servers'
const REPLICATED = 'this store, 3 servers, replicas 1'
const META = 'this store (meta)'

type Row = { target: string; measured: string; holds: string }

export function buildReport(
  env: Environment,
  store: StoreResults,
  http: HttpResults,
  genid?: GenidMicro,
  tracing: TracingCell[] = [],
): Report {
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
  for (const row of targetRows(ratios, store, http)) lines.push(`| ${row.target} | ${row.measured} | ${row.holds} |`)
  lines.push('')
  lines.push(...contextSection(store, http, genid, tracing))
  lines.push(...storeSection(store))
  lines.push(...httpSection(http))
  lines.push('Chart of the ratios: [latest.svg](latest.svg).', '')
  return { markdown: lines.join('\n'), ratios }
}

// ---------------------------------------------------------------------------------------------
// Ratios (the chart, and the targets read from them)

function storeCell(cells: readonly StoreCell[], operation: string, size: string, inFlight: number): StoreCell | undefined {
  return cells.find((c) => c.operation === operation && c.size === size && c.inFlight === inFlight)
}

function ratioOf(cell: StoreCell | undefined, numerator: string, denominator: string): Summary | undefined {
  const a = cell?.samples[numerator]
  const b = cell?.samples[denominator]
  return a && b ? summarize(pairedRatios(a, b)) : undefined
}

function rps(cell: HttpCell | undefined, name: string): number[] {
  return cell?.samples[name]?.map((r) => r.requestsPerSecond) ?? []
}

function httpRatio(cell: HttpCell | undefined, numerator: string, denominator: string): Summary {
  return summarize(pairedRatios(rps(cell, numerator), rps(cell, denominator)))
}

function collectRatios(store: StoreResults, http: HttpResults): Ratio[] {
  const ratios: Ratio[] = []
  const add = (group: string, label: string, ratio: Summary | undefined, target?: number) => {
    if (ratio && ratio.samples > 0) ratios.push({ group, label, ratio, target })
  }
  for (const inFlight of [50, 1]) {
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        add(
          `store level, ${inFlight} in flight: this store / raw memjs`,
          `${operation} ${size}`,
          ratioOf(storeCell(store.cells, operation, size, inFlight), OURS, RAW),
          inFlight === 50 ? 1 : 0.9,
        )
  }
  for (const inFlight of [50, 1])
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        add(
          `store level, ${inFlight} in flight, memcached -t 1: this store / raw memjs`,
          `${operation} ${size}`,
          ratioOf(storeCell(store.singleThread, operation, size, inFlight), OURS, RAW),
          inFlight === 50 ? 1 : 0.9,
        )
  // The client-side limit: how much of a minimal pipelined client's rate the store keeps (issue 22: toward 0.8x).
  for (const inFlight of [50, 1])
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        add(
          `store level, ${inFlight} in flight: this store / pipelined client`,
          `${operation} ${size}`,
          ratioOf(storeCell(store.cells, operation, size, inFlight), OURS, PIPELINED),
        )
  for (const size of TARGET_SIZES)
    for (const operation of TARGET_OPERATIONS)
      add(
        'store level, 50 in flight: meta / binary',
        `${operation} ${size}`,
        ratioOf(storeCell(store.cells, operation, size, 50), META, OURS),
        1,
      )
  // replicas: 1 against none, on the same three servers (issue 23: HTTP read >= 0.9x, write >= 0.8x).
  for (const inFlight of [50, 1])
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        add(
          `store level, ${inFlight} in flight, 3 servers: replicas 1 / none`,
          `${operation} ${size}`,
          ratioOf(storeCell(store.replicas, operation, size, inFlight), REPLICATED, THREE),
        )
  const read = http.cells.find((c) => c.route === 'read')
  const write = http.cells.find((c) => c.route === 'write')
  const login = http.cells.find((c) => c.route === 'login')
  add('HTTP, 3 servers: replicas 1 / none', 'read', httpRatio(read, REPLICATED, THREE), 0.9)
  add('HTTP, 3 servers: replicas 1 / none', 'write', httpRatio(write, REPLICATED, THREE), 0.8)
  const targets = 'HTTP, requests per second: this store / another store'
  add(targets, 'read / connect-memjs', httpRatio(read, OURS, 'connect-memjs'), 1.05)
  add(targets, 'read / connect-redis', httpRatio(read, OURS, 'connect-redis'), 1)
  add(targets, 'write / connect-redis', httpRatio(write, OURS, 'connect-redis'), 1)
  add(targets, 'write / MemoryStore', httpRatio(write, OURS, 'MemoryStore'), 0.9)
  const variants = 'HTTP, requests per second: a variant of this store / this store'
  add(variants, 'meta, read', httpRatio(read, META, OURS), 1)
  add(variants, 'meta, write', httpRatio(write, META, OURS), 1)
  add(variants, 'TLS, read', httpRatio(read, `${OURS}, TLS`, OURS))
  add(variants, 'TLS, write', httpRatio(write, `${OURS}, TLS`, OURS))
  add(variants, 'no get-and-touch, read', httpRatio(read, `${OURS}, no get-and-touch`, OURS))
  add(variants, 'traced, read', httpRatio(read, `${OURS}, traced`, OURS))
  add(variants, 'traced, write', httpRatio(write, `${OURS}, traced`, OURS))
  add(variants, 'genid, login (new sessions)', httpRatio(login, `${OURS}, genid`, OURS))
  add(variants, 'touchAfter 60, read', httpRatio(read, `${OURS}, touchAfter 60`, OURS))
  add(variants, 'encrypted, read', httpRatio(read, `${OURS}, encrypted`, OURS))
  add(variants, 'encrypted, write', httpRatio(write, `${OURS}, encrypted`, OURS))
  return ratios
}

// ---------------------------------------------------------------------------------------------
// Targets

function targetRows(ratios: Ratio[], store: StoreResults, http: HttpResults): Row[] {
  const rows: Row[] = []
  const check = (target: string, summary: Summary | undefined, least: number) => {
    if (!summary || summary.samples === 0 || Number.isNaN(summary.median)) rows.push({ target, measured: 'not measured', holds: '–' })
    else rows.push({ target, measured: formatRange(summary, 1, 2, 'x'), holds: summary.median >= least ? 'yes' : '**no**' })
  }
  const find = (group: string, label: string) => ratios.find((r) => r.group === group && r.label === label)?.ratio
  for (const [inFlight, least, server] of [
    [50, 1, ''],
    [50, 1, ', memcached -t 1'],
    [1, 0.9, ''],
    [1, 0.9, ', memcached -t 1'],
  ] as const) {
    const group = `store level, ${inFlight} in flight${server}: this store / raw memjs`
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        check(
          `store ${operation} ${size}, ${inFlight} in flight${server} >= ${least.toFixed(1)}x raw memjs`,
          find(group, `${operation} ${size}`),
          least,
        )
  }
  for (const inFlight of [50, 1])
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS)
        check(
          `store ${operation} ${size}, ${inFlight} in flight >= 0.8x pipelined client`,
          find(`store level, ${inFlight} in flight: this store / pipelined client`, `${operation} ${size}`),
          0.8,
        )
  const read = http.cells.find((c) => c.route === 'read')
  const write = http.cells.find((c) => c.route === 'write')
  check('HTTP read req/s >= 1.05x connect-memjs', httpRatio(read, OURS, 'connect-memjs'), 1.05)
  check('HTTP read req/s >= 1.0x connect-redis', httpRatio(read, OURS, 'connect-redis'), 1)
  check('HTTP write req/s >= 1.0x connect-redis', httpRatio(write, OURS, 'connect-redis'), 1)
  check('HTTP write req/s >= 0.9x MemoryStore', httpRatio(write, OURS, 'MemoryStore'), 0.9)
  check('HTTP read req/s, 3 servers, replicas 1 >= 0.9x none', httpRatio(read, REPLICATED, THREE), 0.9)
  check('HTTP write req/s, 3 servers, replicas 1 >= 0.8x none', httpRatio(write, REPLICATED, THREE), 0.8)
  for (const cell of [read, write]) {
    if (!cell) continue
    const mine = summarize(cell.samples[OURS]?.map((r) => r.p99Ms) ?? [])
    const theirs = summarize(cell.samples['connect-redis']?.map((r) => r.p99Ms) ?? [])
    const target = `HTTP ${cell.route} p99 <= connect-redis (medians over rounds)`
    if (mine.samples === 0 || theirs.samples === 0) rows.push({ target, measured: 'not measured', holds: '–' })
    else
      rows.push({
        target,
        measured: `${mine.median.toFixed(1)} ms [${mine.min.toFixed(1)}–${mine.max.toFixed(1)}] vs ${theirs.median.toFixed(1)} ms [${theirs.min.toFixed(1)}–${theirs.max.toFixed(1)}]`,
        holds: mine.median <= theirs.median ? 'yes' : '**no**',
      })
  }
  for (const operation of TARGET_OPERATIONS)
    check(`meta >= binary: store ${operation} 2 KB, 50 in flight`, find('store level, 50 in flight: meta / binary', `${operation} 2 KB`), 1)
  check('meta >= binary: HTTP read req/s', httpRatio(read, META, OURS), 1)
  check('meta >= binary: HTTP write req/s', httpRatio(write, META, OURS), 1)
  const commands = summarize(read?.samples[OURS]?.map((r) => r.serverCommandsPerRequest) ?? [])
  rows.push({
    target: 'memcached commands per read-only request (read route) = 1',
    measured: commands.samples > 0 ? formatRange(commands, 1, 2) : 'not measured',
    holds: commands.samples === 0 ? '–' : Math.abs(commands.median - 1) < 0.05 ? 'yes' : '**no**',
  })
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
  void store
  return rows
}

// ---------------------------------------------------------------------------------------------
// What the targets rest on, and the effects of single features

function contextSection(store: StoreResults, http: HttpResults, genid: GenidMicro | undefined, tracing: TracingCell[]): string[] {
  const lines: string[] = []
  const read = http.cells.find((c) => c.route === 'read')
  const write = http.cells.find((c) => c.route === 'write')
  const login = http.cells.find((c) => c.route === 'login')
  const commands = (cell: HttpCell | undefined, name: string) =>
    formatRange(summarize(cell?.samples[name]?.map((r) => r.serverCommandsPerRequest) ?? []), 1, 2)
  const cpu = (cell: HttpCell | undefined, name: string) =>
    formatRange(summarize(cell?.samples[name]?.map((r) => r.cpuMicrosPerRequest) ?? []), 1, 0)
  const cpuDelta = (cell: HttpCell | undefined, name: string, base: string) => {
    const a = cell?.samples[name]?.map((r) => r.cpuMicrosPerRequest) ?? []
    const b = cell?.samples[base]?.map((r) => r.cpuMicrosPerRequest) ?? []
    return formatRange(summarize(a.slice(0, b.length).map((value, i) => value - b[i])), 1, 0)
  }
  lines.push('### Single features, one build (ratios to the plain store, same run)', '')
  lines.push(
    '| Feature | Route | req/s ratio | app CPU µs/req (feature) | app CPU difference µs/req | memcached commands/req (feature / plain) |',
  )
  lines.push('| --- | --- | ---: | ---: | ---: | ---: |')
  const feature = (label: string, cell: HttpCell | undefined, name: string) => {
    if (!cell?.samples[name] || !cell.samples[OURS]) return
    const ratio = formatRange(httpRatio(cell, name, OURS), 1, 2, 'x')
    lines.push(
      `| ${label} | ${cell.route} | ${ratio} | ${cpu(cell, name)} | ${cpuDelta(cell, name, OURS)} | ${commands(cell, name)} / ${commands(cell, OURS)} |`,
    )
  }
  feature('get-and-touch off (EXPRESS_SESSION_MEMCACHE_GET_AND_TOUCH=0) / on', read, `${OURS}, no get-and-touch`)
  feature('tracing channel with a subscriber (latency histogram) / none', read, `${OURS}, traced`)
  feature('tracing channel with a subscriber (latency histogram) / none', write, `${OURS}, traced`)
  feature('genid: session({ genid: store.genid }) / default', login, `${OURS}, genid`)
  feature('meta protocol / binary', read, META)
  feature('meta protocol / binary', write, META)
  feature('TLS / plain TCP', read, `${OURS}, TLS`)
  feature('TLS / plain TCP', write, `${OURS}, TLS`)
  feature('touchAfter 60 / without', read, `${OURS}, touchAfter 60`)
  feature('touchAfter 60 / without (same work: the noise of this run)', write, `${OURS}, touchAfter 60`)
  feature('encrypted (secret) / plain', read, `${OURS}, encrypted`)
  feature('encrypted (secret) / plain', write, `${OURS}, encrypted`)
  lines.push('')
  if (tracing.length > 0) {
    lines.push(
      '**Tracing channel, store level** (200 B sessions; rounds alternate no subscriber and one recording latencies in a histogram; µs = 1e6/ops traced − 1e6/ops untraced, round by round):',
      '',
    )
    lines.push('| operation | in flight | ops/s, no subscriber | ops/s, subscriber | traced / untraced | cost µs per operation |')
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: |')
    for (const cell of tracing) {
      const cost = summarize(cell.traced.map((ops, i) => 1e6 / ops - 1e6 / cell.untraced[i]))
      lines.push(
        `| ${cell.operation} | ${cell.inFlight} | ${formatRange(summarize(cell.untraced), 1e-3, 1)}k | ${formatRange(summarize(cell.traced), 1e-3, 1)}k | ${formatRange(summarize(pairedRatios(cell.traced, cell.untraced)), 1, 2, 'x')} | ${formatRange(cost, 1, 2)} |`,
      )
    }
    lines.push('')
  }
  if (genid) {
    lines.push(
      `**genid() on the request path** (ns per call, batches of ${genid.batch}; ${genid.fallbacks} pooled calls fell back to a fresh ID):`,
      '',
    )
    lines.push('| generator | ns per call |', '| --- | ---: |')
    for (const [name, values] of Object.entries(genid.samples)) lines.push(`| ${name} | ${formatRange(summarize(values), 1, 0)} |`)
    lines.push('')
  }
  // TLS: what it adds to one operation at 1 in flight, round by round, on one -Z memcached.
  const tlsRows: string[] = []
  for (const [plain, secure] of [
    [OURS, `${OURS}, TLS`],
    [META, `${META}, TLS`],
  ]) {
    for (const size of TARGET_SIZES)
      for (const operation of TARGET_OPERATIONS) {
        const cell = storeCell(store.tls, operation, size, 1)
        const a = cell?.samples[secure]
        const b = cell?.samples[plain]
        if (!a || !b) continue
        const cost = summarize(a.slice(0, b.length).map((tlsOps, i) => 1e6 / tlsOps - 1e6 / b[i]))
        const latency = summarize(b.map((ops) => 1e6 / ops))
        const ratio = summarize(pairedRatios(a, b))
        tlsRows.push(
          `| ${plain === OURS ? 'binary' : 'meta'} | ${operation} | ${size} | ${latency.median.toFixed(0)} | ${formatRange(cost, 1, 1)} | ${formatRange(ratio, 1, 2, 'x')} |`,
        )
      }
  }
  if (tlsRows.length > 0) {
    lines.push(
      '**TLS cost per operation** (1 in flight, one memcached -Z -t 1 with a plain listener beside the TLS one; µs = 1e6/ops with TLS − 1e6/ops without, round by round):',
      '',
    )
    lines.push(
      '| protocol | operation | size | µs per op without TLS | TLS adds µs | ops/s TLS / plain |',
      '| --- | --- | --- | ---: | ---: | ---: |',
      ...tlsRows,
      '',
    )
  }
  if (store.fixedCount.length > 0) {
    lines.push(
      `**Fixed-count runs** (the independent measurement's method: ${store.fixedCount[0].count} operations at 50 in flight with callbacks, timed from first to last; thousands of ops/s):`,
      '',
    )
    lines.push(
      '| server | size | operation | raw memjs | this store | this store / raw memjs |',
      '| --- | --- | --- | ---: | ---: | ---: |',
    )
    for (const cell of store.fixedCount) {
      const ours = cell.samples[OURS]
      const raw = cell.samples[RAW]
      if (!ours || !raw) continue
      lines.push(
        `| ${cell.server} | ${cell.size} | ${cell.operation} | ${formatRange(summarize(raw), 1e-3, 1)} | ${formatRange(summarize(ours), 1e-3, 1)} | ${formatRange(summarize(pairedRatios(ours, raw)), 1, 2, 'x')} |`,
      )
    }
    lines.push('')
  }
  if (store.replicas.length > 0) {
    lines.push('**Three servers, `replicas: 1` against none** (thousands of ops/s; time-boxed samples like the main grid):', '')
    lines.push('| in flight | operation | size | none | replicas 1 | replicas 1 / none |')
    lines.push('| ---: | --- | --- | ---: | ---: | ---: |')
    for (const cell of store.replicas) {
      const f = (name: string) => (cell.samples[name] ? formatRange(summarize(cell.samples[name]), 1e-3, 1) : '')
      lines.push(
        `| ${cell.inFlight} | ${cell.operation} | ${cell.size} | ${f(THREE)} | ${f(REPLICATED)} | ${formatRange(ratioOf(cell, REPLICATED, THREE) ?? summarize([]), 1, 2, 'x')} |`,
      )
    }
    lines.push('')
  }
  if (store.singleThread.length > 0) {
    lines.push('**memcached -t 1** (thousands of ops/s; time-boxed samples like the main grid):', '')
    lines.push('| in flight | operation | size | raw memjs | this store | this store (meta) | this store / raw memjs | meta / raw memjs |')
    lines.push('| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |')
    for (const cell of store.singleThread) {
      const f = (name: string) => (cell.samples[name] ? formatRange(summarize(cell.samples[name]), 1e-3, 1) : '')
      const r = (name: string) => formatRange(ratioOf(cell, name, RAW) ?? summarize([]), 1, 2, 'x')
      lines.push(`| ${cell.inFlight} | ${cell.operation} | ${cell.size} | ${f(RAW)} | ${f(OURS)} | ${f(META)} | ${r(OURS)} | ${r(META)} |`)
    }
    lines.push('')
  }
  return lines
}

// ---------------------------------------------------------------------------------------------
// Store level

function storeSection(store: StoreResults): string[] {
  const lines: string[] = []
  if (store.cells.length === 0) return lines
  lines.push('### Store level (operations per second, thousands)', '')
  lines.push(
    'memcached -t 2, one connection per client, sessions of a pool of 500; `destroy` mostly deletes sessions already gone. The meta contender runs at 200 B and 2 KB, 1 and 50 in flight only; the TLS contenders are in the TLS table above.',
    '',
  )
  for (const operation of OPERATIONS) {
    lines.push(`**${operation}**`, '')
    lines.push(`| size | in flight | ${CONTENDER_NAMES.join(' | ')} | this store / raw memjs |`)
    lines.push(`| --- | ---: | ${CONTENDER_NAMES.map(() => '---:').join(' | ')} | ---: |`)
    for (const cell of store.cells.filter((c) => c.operation === operation)) {
      const figures = CONTENDER_NAMES.map((name) =>
        cell.samples[name]
          ? formatRange(summarize(cell.samples[name]), 1e-3, 1)
          : operation === 'touch' && name === 'connect-memjs'
            ? 'no touch'
            : '',
      )
      const ratio = formatRange(ratioOf(cell, OURS, RAW) ?? summarize([]), 1, 2, 'x')
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
    const figures = columns.map(({ operation, inFlight }) => {
      const cell = storeCell(store.cells, operation, size.label, inFlight)
      if (!cell?.samples[OURS]) return ''
      const ours = 1e6 / summarize(cell.samples[OURS]).median
      const raw = cell.samples[RAW] ? 1e6 / summarize(cell.samples[RAW]).median : Number.NaN
      return `${ours.toFixed(ours < 10 ? 1 : 0)} (${raw.toFixed(raw < 10 ? 1 : 0)})`
    })
    lines.push(`| ${size.label} | ${figures.join(' | ')} |`)
  }
  lines.push('')
  return lines
}

// ---------------------------------------------------------------------------------------------
// HTTP level

function httpSection(http: HttpResults): string[] {
  const lines: string[] = []
  if (http.cells.length === 0) return lines
  lines.push(`### HTTP level (Express 5 + express-session, one app process per store, ${http.tool}, sessions of about 2 KB)`, '')
  lines.push(
    '`read`: the route reads the session (get + touch). `write`: it changes it (get + set). `login`: every request creates a session (no cookie sent). Peak RSS is the largest resident set size of the app process seen while that route was under load (sampled every 20 ms), over all rounds.',
    '',
  )
  lines.push(
    "App CPU is the app process's own CPU time per request (user + system), requests counted by the app. Server CPU is what memcached (or redis) spent per request, and server commands what it carried out per request (memcached: cmd_get + cmd_set + cmd_touch + deletes; redis: total_commands_processed). On this machine the servers share the two cores with the app and the load generator.",
    '',
  )
  lines.push(
    '| route | store | requests/s | vs MemoryStore | vs connect-memjs | vs connect-redis | p50 ms | p99 ms | app CPU µs/req | server CPU µs/req | server commands/req | peak RSS MB |',
  )
  lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const cell of http.cells) {
    for (const [name, results] of Object.entries(cell.samples)) {
      const versus = (other: string) => formatRange(httpRatio(cell, name, other), 1, 2, 'x')
      const p50 = summarize(results.map((r) => r.p50Ms)).median.toFixed(2)
      const p99 = formatRange(summarize(results.map((r) => r.p99Ms)), 1, 1)
      const rss = (peakRss(results) / 2 ** 20).toFixed(0)
      const cpu = formatRange(summarize(results.map((r) => r.cpuMicrosPerRequest)), 1, 0)
      const serverCpu = summarize(results.map((r) => r.serverCpuMicrosPerRequest)).median
      const commands = summarize(results.map((r) => r.serverCommandsPerRequest)).median
      const figures = [
        formatRange(summarize(rps(cell, name)), 1, 0),
        versus('MemoryStore'),
        versus('connect-memjs'),
        versus('connect-redis'),
        p50,
        p99,
        cpu,
        Number.isNaN(serverCpu) ? '' : serverCpu.toFixed(0),
        Number.isNaN(commands) ? '' : commands.toFixed(2),
        rss,
      ]
      lines.push(`| ${cell.route} | ${name} | ${figures.join(' | ')} |`)
    }
  }
  if (http.skipped.length > 0) lines.push('', `Skipped: ${http.skipped.join('; ')}.`)
  lines.push('')
  return lines
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
