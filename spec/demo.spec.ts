import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

describe('the demo', () => {
  it('on a taken port: says so, stops the memcached it started and exits with 1', async () => {
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    const port = (taken.address() as net.AddressInfo).port
    try {
      const { MEMCACHE_SERVERS: _, ...env } = process.env
      const result = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], {
        cwd: root,
        env: { ...env, PORT: String(port), SESSION_SECRET: 'a test secret' },
        timeout: 20_000,
      }).then(
        () => assert.fail('the demo exited with 0'),
        (err: { code?: number; stdout: string; stderr: string }) => err,
      )
      assert.equal(result.code, 1, result.stderr)
      assert.match(result.stderr, new RegExp(`Demo app not started: port ${port} is in use: set PORT=`))
      assert.doesNotMatch(result.stdout, /Demo app: http/)
      const memcached = /Started memcached on (127\.0\.0\.1):(\d+)/.exec(result.stdout)
      assert.ok(memcached, result.stdout)
      const refused = await new Promise<boolean>((resolve) => {
        const socket = net.connect(Number(memcached[2]), memcached[1])
        socket.once('connect', () => {
          socket.destroy()
          resolve(false)
        })
        socket.once('error', () => resolve(true))
      })
      assert.ok(refused, `memcached on ${memcached[1]}:${memcached[2]} still accepts connections`)
    } finally {
      taken.close()
    }
  })
})
