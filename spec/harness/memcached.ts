// Starts real memcached processes for the tests: each on a free loopback port, checked for
// readiness by a real round trip (never a fixed sleep), and stopped when the test process ends.
// Tests also signal them: kill, freeze (SIGSTOP) and thaw, restart on the same port.
// Variants: text protocol only (-B ascii), TLS (-Z, optionally requiring client certificates) and
// ASCII authentication tokens (-Y); the harness's own connections speak whatever the server needs.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { freePort } from './ports.ts'
import { PROTOCOL } from './protocol.ts'

export { freePort }

const INSTALL_HINT =
  'memcached was not found. The tests start their own memcached processes: install it with ' +
  '`sudo apt-get install memcached` (Debian/Ubuntu), `brew install memcached` (macOS), or run ' +
  '`./scripts/test`, which installs it when it is allowed to; or point MEMCACHED_BIN at the binary.'

let binary: string | undefined

/** The memcached binary, or an Error that says how to install it. */
export function memcachedBinary(): string {
  if (binary) return binary
  const candidates = [
    process.env.MEMCACHED_BIN,
    whichMemcached(),
    '/usr/bin/memcached',
    '/usr/local/bin/memcached',
    '/opt/homebrew/bin/memcached',
  ]
  binary = candidates.find((path): path is string => !!path && existsSync(path))
  if (!binary) throw new Error(INSTALL_HINT)
  return binary
}

function whichMemcached(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v memcached'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

export interface MemcachedOptions {
  /** Extra command-line arguments, e.g. ['-I', '2m'] or ['-S']. */
  args?: string[]
  /** Extra environment, e.g. SASL_CONF_PATH. */
  env?: NodeJS.ProcessEnv
  /** Memory limit in MB. */
  memoryMb?: number
  /** With -S the text protocol is off: readiness is then checked with a TCP connect only. */
  sasl?: boolean
  /** 'ascii' adds -B ascii: text and meta commands only (a binary request is read as a text line: `ERROR`). */
  protocol?: 'ascii'
  /** TLS on every connection (-Z): the harness then connects with node:tls. */
  tls?: MemcachedTlsOptions
  /** An existing -Y file (`user:pass` lines); the harness authenticates with its first line. */
  authFile?: string
  /** Tokens written to a temporary -Y file; the harness authenticates with the first. Implies the text protocol. */
  tokens?: Array<[user: string, password: string]>
  /** Keep the cache in a memory file (-e, in a temporary directory), so that `warmRestart` keeps the items. */
  warm?: boolean
}

export interface MemcachedTlsOptions {
  /** The server's certificate (chain), a PEM file: -o ssl_chain_cert. */
  cert: string
  /** Its private key, a PEM file: -o ssl_key. */
  key: string
  /** The CA (PEM file) memcached checks client certificates against: -o ssl_ca_cert. */
  ca?: string
  /** Require a client certificate signed by `ca` (ssl_verify_mode=2); without it memcached asks for none (0). */
  verifyClient?: boolean
  /** The certificate the harness's own connections present (readiness, command, inspect); needed with verifyClient. */
  client?: { cert: string; key: string }
}

/** How the harness's own connections reach a server: its port, TLS, the token it authenticates with. */
interface Access {
  port: number
  tls?: MemcachedTlsOptions
  token?: [user: string, password: string]
}

const running = new Set<ChildProcess>()

/** Kills every memcached this process started and has not stopped: a failed test's leftovers. */
export function killLeftovers(): void {
  for (const child of running) child.kill('SIGKILL')
}
process.on('exit', killLeftovers)

export class MemcachedServer {
  readonly port: number
  readonly options: MemcachedOptions
  /** The -Y file in use (written once by `start` for `tokens`), or undefined without authentication. */
  readonly authFile: string | undefined
  /** The -e memory file with `warm`. */
  readonly memoryFile: string | undefined
  #child: ChildProcess | undefined
  #stderr = ''

  private constructor(port: number, options: MemcachedOptions, authFile: string | undefined) {
    this.port = port
    this.options = options
    this.authFile = authFile
    this.memoryFile = options.warm ? path.join(temporaryDirectory('memcached-warm-'), 'cache') : undefined
  }

  /** Starts memcached on a free loopback port and resolves once it answers. */
  static async start(options: MemcachedOptions = {}): Promise<MemcachedServer> {
    checkOptions(options)
    // Written once, before any attempt: restarts and retries all read the same file.
    const authFile = options.tokens ? writeAuthFile(options.tokens) : options.authFile
    for (let attempt = 1; ; attempt++) {
      const server = new MemcachedServer(await freePort(), options, authFile)
      try {
        await server.#launch()
        return server
      } catch (err) {
        // Another process may have taken the port between the probe and memcached's bind.
        if (attempt >= 5) throw err
      }
    }
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  get pid(): number | undefined {
    return this.#child?.pid
  }

  get running(): boolean {
    return this.#child !== undefined
  }

  async #launch(): Promise<void> {
    const args = ['-l', '127.0.0.1', '-p', String(this.port), '-U', '0', '-m', String(this.options.memoryMb ?? 64), '-t', '2']
    if (process.getuid?.() === 0) args.push('-u', 'root')
    args.push(...variantArgs(this.options, this.authFile))
    if (this.memoryFile) args.push('-e', this.memoryFile)
    args.push(...(this.options.args ?? []))
    const child = spawn(memcachedBinary(), args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...this.options.env } })
    this.#stderr = ''
    child.stderr?.on('data', (chunk) => {
      this.#stderr += chunk
    })
    this.#child = child
    running.add(child)

    child.once('exit', () => {
      running.delete(child)
      if (this.#child === child) this.#child = undefined
    })
    try {
      await this.#waitUntilReady(child)
    } catch (err) {
      child.kill('SIGKILL')
      throw err
    }
  }

  async #waitUntilReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + 5000
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `memcached on port ${this.port} exited during start-up (${child.exitCode ?? child.signalCode}): ${this.#stderr.trim()}`,
        )
      }
      if (await this.#answers(child)) return
      await sleep(20)
    }
    throw new Error(`memcached on port ${this.port} did not answer within 5 s: ${this.#stderr.trim()}`)
  }

  /** Whether `child` answers on the port: its own pid in `stats`, so that another process on the port never passes. */
  async #answers(child: ChildProcess): Promise<boolean> {
    try {
      if (this.options.sasl) {
        await connectOnce(this.port)
        // SASL refuses stats before authentication: the connect must at least not outlive a failed bind.
        await sleep(50)
        return child.exitCode === null && child.signalCode === null
      }
      return (await this.command('stats')).includes(`STAT pid ${child.pid}\r\n`)
    } catch {
      return false
    }
  }

  /** SIGKILL: the process dies with requests in flight; the port is free for `restart`. */
  async kill(): Promise<void> {
    const child = this.#child
    if (!child) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }

  /** SIGSTOP: the process stops answering but its sockets stay open. */
  freeze(): void {
    const child = this.#child
    if (!child?.kill('SIGSTOP') || child.pid === undefined) return
    // kill() only queues the signal: a memcached thread busy on another core can still answer a
    // request sent right after it. Wait (on Linux) until every thread shows as stopped.
    waitUntilStopped(child.pid)
  }

  /** SIGCONT after `freeze`. */
  thaw(): void {
    this.#child?.kill('SIGCONT')
  }

  /**
   * memcached's warm restart: SIGUSR1 saves the cache to its memory file (`warm`) and stops it; the
   * next start reads it back. memcached refuses the saved state when it starts again within the same
   * wall-clock second as it stopped (it wants the time between the two to be positive: "restart
   * incompatible due to setting for [stop_time]"), so this waits `pauseMs` (over a second) between.
   */
  async warmRestart(pauseMs = 1100): Promise<string> {
    const child = this.#child
    if (!child || !this.memoryFile) throw new Error('warmRestart needs a running server started with `warm: true`')
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGUSR1')
    await exited
    await sleep(pauseMs)
    await this.#launch()
    return this.#stderr
  }

  /** Starts memcached again on the same port (empty, as after a real restart). */
  async restart(): Promise<void> {
    await this.kill()
    await this.#launch()
  }

  async stop(): Promise<void> {
    this.thaw()
    await this.kill()
  }

  /** How the harness connects: over TLS with -Z, authenticated first with -Y. */
  get #access(): Access {
    return { port: this.port, tls: this.options.tls, token: this.authFile ? firstToken(this.options, this.authFile) : undefined }
  }

  /** A text-protocol command and its reply (up to END, or the first line for one-line replies). */
  command(line: string): Promise<string> {
    return textCommand(this.#access, line)
  }

  /** Every key memcached holds (lru_crawler metadump, retried while the crawler is busy), decoded. */
  async keys(): Promise<string[]> {
    for (let attempt = 0; ; attempt++) {
      const dump = await this.command('lru_crawler metadump all')
      if (dump.startsWith('BUSY') && attempt < 50) {
        await sleep(50)
        continue
      }
      return dump
        .split(/\r?\n/)
        .filter((line) => line.startsWith('key='))
        .map((line) => decodeURIComponent(line.slice(4, line.indexOf(' '))))
    }
  }

  /** Deletes a key (text protocol); true when it existed. */
  async remove(key: string): Promise<boolean> {
    return (await this.command(`delete ${key}`)).startsWith('DELETED')
  }

  /** What memcached holds under `key` (meta get): value, remaining TTL (-1 = none), CAS; undefined when missing. */
  async inspect(key: string): Promise<{ value: Buffer; ttl: number; cas: string } | undefined> {
    const reply = await rawCommand(this.#access, `mg ${Buffer.from(key).toString('base64')} b v t c\r\n`, (data) => {
      const end = data.indexOf('\r\n')
      if (end < 0) return undefined
      const first = data.toString('latin1', 0, end)
      const size = /^VA (\d+)/.exec(first)?.[1]
      if (size === undefined) return data
      return data.length >= end + 2 + Number(size) + 2 ? data : undefined
    })
    const header = reply.toString('latin1').split('\r\n', 1)[0]
    if (header.startsWith('EN')) return undefined
    const match = /^VA (\d+)(.*)$/.exec(header)
    if (!match) throw new Error(`unexpected meta get reply: ${header}`)
    const size = Number(match[1])
    const flags = Object.fromEntries(
      match[2]
        .trim()
        .split(' ')
        .map((token) => [token[0], token.slice(1)]),
    )
    const start = header.length + 2
    return { value: reply.subarray(start, start + size), ttl: Number(flags.t), cas: flags.c }
  }
}

/** Starts several servers at once. */
export function startMemcacheds(count: number, options: MemcachedOptions = {}): Promise<MemcachedServer[]> {
  return Promise.all(Array.from({ length: count }, () => MemcachedServer.start(options)))
}

function connectOnce(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.destroy()
      resolve()
    })
    socket.once('error', reject)
    socket.setTimeout(1000, () => {
      socket.destroy()
      reject(new Error('connect timed out'))
    })
  })
}

/** The -B, -Z and -Y arguments for the options' variants. */
function variantArgs(options: MemcachedOptions, authFile: string | undefined): string[] {
  const args: string[] = []
  // The meta half of the suite runs on servers that refuse the binary protocol, unless a test asks otherwise.
  const explicit = options.protocol !== undefined || options.sasl || options.args?.includes('-B') || authFile !== undefined
  const protocol = explicit ? options.protocol : PROTOCOL === 'meta' ? 'ascii' : undefined
  if (protocol) args.push('-B', protocol)
  if (authFile) args.push('-Y', authFile)
  const secure = options.tls
  if (secure) {
    const extended = [`ssl_chain_cert=${secure.cert}`, `ssl_key=${secure.key}`]
    if (secure.ca) extended.push(`ssl_ca_cert=${secure.ca}`)
    // 0 = none, 1 = request (verify one if sent), 2 = require, 3 = require on the first handshake only.
    extended.push(`ssl_verify_mode=${secure.verifyClient ? 2 : 0}`)
    args.push('-Z', '-o', extended.join(','))
  }
  return args
}

/** Rejects combinations memcached (or the harness) cannot run, before anything starts. */
function checkOptions(options: MemcachedOptions): void {
  if (options.authFile && options.tokens) throw new Error('give authFile or tokens, not both')
  if (options.tokens?.length === 0) throw new Error('tokens needs at least one [user, password]')
  const secure = options.tls
  if (!secure) return
  // -o splits on commas: a path with one would turn into a different option.
  for (const file of [secure.cert, secure.key, secure.ca]) {
    if (file?.includes(',')) throw new Error(`memcached -o cannot take a path with a comma: ${file}`)
  }
  if (secure.verifyClient && !secure.ca) throw new Error('tls.verifyClient needs tls.ca, the CA client certificates are checked against')
  if (secure.verifyClient && !secure.client) {
    throw new Error('tls.verifyClient needs tls.client: the harness presents it for its readiness check, command and inspect')
  }
}

/** A temporary directory removed when the process exits. */
function temporaryDirectory(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Writes `tokens` as a -Y file (`user:pass` lines) in a temporary directory removed at exit. */
function writeAuthFile(tokens: Array<[user: string, password: string]>): string {
  for (const [user, password] of tokens) {
    // memcached splits a line at its first ':' and the client's token at its first space.
    if (!user || /[\s:]/.test(user) || !password || /\s/.test(password)) throw new Error(`unusable token for -Y: ${user}:${password}`)
  }
  const file = path.join(temporaryDirectory('memcached-auth-'), 'authfile')
  writeFileSync(file, tokens.map(([user, password]) => `${user}:${password}\n`).join(''))
  return file
}

/** The token the harness authenticates with: the first of `tokens`, or the first line of the authfile. */
function firstToken(options: MemcachedOptions, authFile: string): [string, string] {
  if (options.tokens) return options.tokens[0]
  const line = readFileSync(authFile, 'utf8').split('\n', 1)[0]
  const colon = line.indexOf(':')
  if (colon < 1) throw new Error(`${authFile} does not start with a user:pass line`)
  return [line.slice(0, colon), line.slice(colon + 1).trim()]
}

function textCommand(access: Access, line: string): Promise<string> {
  return rawCommand(access, `${line}\r\n`, (data) => {
    const text = data.toString('latin1')
    const oneLine = /^(VERSION|OK|ERROR|CLIENT_ERROR|SERVER_ERROR|BUSY|BADCLASS|STORED|NOT_|DELETED|TOUCHED|EXISTS|HD|NF|EN|MN)/.test(text)
    return (oneLine && text.includes('\r\n')) || text.endsWith('END\r\n') ? text : undefined
  }).then((reply) => reply.toString())
}

/**
 * Sends `request` on a new connection and resolves with the reply once `complete` accepts it. With a
 * token the authentication (a `set` whose data is "<user> <password>") goes first in the same write;
 * its `STORED` is checked and left out of the reply.
 */
function rawCommand(access: Access, request: string, complete: (data: Buffer) => Buffer | string | undefined): Promise<Buffer> {
  const { port, token } = access
  const auth = token ? `${token[0]} ${token[1]}` : undefined
  const preamble = auth ? `set auth 0 0 ${Buffer.byteLength(auth)}\r\n${auth}\r\n` : ''
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let authenticated = !auth
    const socket = openConnection(access, () => socket.write(preamble + request))
    socket.setTimeout(5000, () => {
      socket.destroy()
      reject(new Error(`memcached on port ${port} did not answer ${JSON.stringify(request.trim())} within 5 s`))
    })
    socket.once('error', reject)
    socket.once('close', () => reject(new Error(`memcached on port ${port} closed the connection before answering`)))
    socket.on('data', (chunk) => {
      chunks.push(chunk)
      let data = Buffer.concat(chunks)
      if (!authenticated) {
        const end = data.indexOf('\r\n')
        if (end < 0) return
        const line = data.toString('latin1', 0, end)
        if (line !== 'STORED') {
          socket.destroy()
          reject(new Error(`memcached on port ${port} refused the harness's token: ${line}`))
          return
        }
        authenticated = true
        data = data.subarray(end + 2)
        chunks.splice(0, chunks.length, data)
      }
      if (complete(data) !== undefined) {
        socket.destroy()
        resolve(data)
      }
    })
  })
}

/** A connection to the server: plain TCP, or TLS (presenting the client certificate when one is set). */
function openConnection(access: Access, onReady: () => void): net.Socket {
  const secure = access.tls
  if (!secure) return net.connect(access.port, '127.0.0.1', onReady)
  // The harness only needs a working channel, so it does not check the server's certificate here.
  const client = secure.client ? { cert: readFileSync(secure.client.cert), key: readFileSync(secure.client.key) } : {}
  return tls.connect({ host: '127.0.0.1', port: access.port, rejectUnauthorized: false, ...client }, onReady)
}

/** Blocks until every thread of `pid` is stopped (state T in /proc), for at most a second; returns at once without /proc. */
function waitUntilStopped(pid: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + 1000
  while (Date.now() < deadline) {
    let states: string[]
    try {
      states = readdirSync(`/proc/${pid}/task`).map((tid) => {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
        return stat.charAt(stat.lastIndexOf(')') + 2)
      })
    } catch {
      return
    }
    if (states.every((state) => state === 'T' || state === 't')) return
    Atomics.wait(pause, 0, 0, 1)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
