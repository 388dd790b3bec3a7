// Starts real memcached processes for the tests: each on a free loopback port, checked for
// readiness by a real round trip (never a fixed sleep), and stopped when the test process ends.
// Tests also signal them: kill, freeze (SIGSTOP) and thaw, restart on the same port.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import net from 'node:net'

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
}

const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export class MemcachedServer {
  readonly port: number
  readonly options: MemcachedOptions
  #child: ChildProcess | undefined
  #stderr = ''

  private constructor(port: number, options: MemcachedOptions) {
    this.port = port
    this.options = options
  }

  /** Starts memcached on a free loopback port and resolves once it answers. */
  static async start(options: MemcachedOptions = {}): Promise<MemcachedServer> {
    for (let attempt = 1; ; attempt++) {
      const server = new MemcachedServer(await freePort(), options)
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
      if (await this.#answers()) return
      await sleep(20)
    }
    throw new Error(`memcached on port ${this.port} did not answer within 5 s: ${this.#stderr.trim()}`)
  }

  async #answers(): Promise<boolean> {
    try {
      if (this.options.sasl) {
        await connectOnce(this.port)
        return true
      }
      return (await textCommand(this.port, 'version')).startsWith('VERSION')
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

  /** Starts memcached again on the same port (empty, as after a real restart). */
  async restart(): Promise<void> {
    await this.kill()
    await this.#launch()
  }

  async stop(): Promise<void> {
    this.thaw()
    await this.kill()
  }

  /** A text-protocol command and its reply (up to END, or the first line for one-line replies). */
  command(line: string): Promise<string> {
    return textCommand(this.port, line)
  }

  /** What memcached holds under `key` (meta get): value, remaining TTL (-1 = none), CAS; undefined when missing. */
  async inspect(key: string): Promise<{ value: Buffer; ttl: number; cas: string } | undefined> {
    const reply = await rawCommand(this.port, `mg ${Buffer.from(key).toString('base64')} b v t c\r\n`, (data) => {
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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.unref()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo
      probe.close(() => resolve(port))
    })
  })
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

function textCommand(port: number, line: string): Promise<string> {
  return rawCommand(port, `${line}\r\n`, (data) => {
    const text = data.toString('latin1')
    const oneLine = /^(VERSION|OK|ERROR|CLIENT_ERROR|SERVER_ERROR|BUSY|BADCLASS|STORED|NOT_|DELETED|TOUCHED|EXISTS|HD|NF|EN)/.test(text)
    return (oneLine && text.includes('\r\n')) || text.endsWith('END\r\n') ? text : undefined
  }).then((reply) => reply.toString())
}

function rawCommand(port: number, request: string, complete: (data: Buffer) => Buffer | string | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    socket.setTimeout(5000, () => {
      socket.destroy()
      reject(new Error(`memcached on port ${port} did not answer ${JSON.stringify(request.trim())} within 5 s`))
    })
    socket.once('error', reject)
    socket.on('data', (chunk) => {
      chunks.push(chunk)
      const data = Buffer.concat(chunks)
      if (complete(data) !== undefined) {
        socket.destroy()
        resolve(data)
      }
    })
  })
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
