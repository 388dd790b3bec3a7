// Loopback ports for test servers, reserved across every test process on this machine.
//
// Spec files run in parallel, and tests kill a server and restart it on the same port. Two things
// could take that port meanwhile: another process's free-port probe (a listen on port 0 may hand out
// the port just freed), and an outgoing connection whose ephemeral local port happens to be it (then
// memcached's bind fails). So ports come from below the kernel's ephemeral range, and each one is
// reserved by a lock file naming its process until that process exits.
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'

const LOCKS = path.join(tmpdir(), 'express-session-memcache-test-ports')
const reserved = new Set<string>()

process.on('exit', () => {
  for (const lock of reserved) {
    try {
      unlinkSync(lock)
    } catch {
      // already gone
    }
  }
})

/** A loopback port nothing listens on, reserved for this process (no other test process takes it). */
export async function freePort(): Promise<number> {
  const [low, high] = candidateRange()
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1))
    if (!reserve(port)) continue
    if (await bindable(port)) return port
    release(port)
  }
  throw new Error(`no free loopback port between ${low} and ${high} after 1000 attempts`)
}

/** Ports below the ephemeral range (where no outgoing connection is given one); the whole range when it is too low. */
function candidateRange(): [number, number] {
  try {
    const [ephemeralLow] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (ephemeralLow > 12_000) return [10_000, ephemeralLow - 1]
  } catch {
    // not Linux: any unprivileged port, the lock files still keep test processes apart
  }
  return [10_000, 65_535]
}

/** Creates the port's lock file; false when a live process holds it (a dead one's is taken over). */
function reserve(port: number): boolean {
  mkdirSync(LOCKS, { recursive: true })
  const lock = path.join(LOCKS, String(port))
  for (;;) {
    try {
      const fd = openSync(lock, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      reserved.add(lock)
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    if (holderAlive(lock)) return false
    try {
      unlinkSync(lock)
    } catch {
      // another process took it over first: try again
    }
  }
}

function holderAlive(lock: string): boolean {
  let pid: number
  try {
    pid = Number(readFileSync(lock, 'utf8'))
  } catch {
    return false
  }
  // An empty file: its creator has not written its pid yet.
  if (!pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function release(port: number): void {
  const lock = path.join(LOCKS, String(port))
  reserved.delete(lock)
  try {
    unlinkSync(lock)
  } catch {
    // already gone
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer()
    probe.unref()
    probe.once('error', () => resolve(false))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)))
  })
}
