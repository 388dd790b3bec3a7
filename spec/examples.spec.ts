// The framework examples run as they are, against a real memcached: examples/fastify.ts,
// examples/koa.ts, examples/nestjs-express.ts and examples/nestjs-fastify.ts each start, count, log
// in, log out, and stop on SIGTERM. They speak the store's default (binary) protocol, so this file
// runs in the binary half of the suite only.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import request from 'supertest'
import { MemcachedServer } from './harness/memcached.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
let server: MemcachedServer
before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await server?.stop()
})

/** Starts an example on a free port; resolves with its URL once it says it listens. */
async function start(example: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join('examples', example)], {
    cwd: root,
    env: {
      ...process.env,
      MEMCACHE_SERVERS: server.address,
      SESSION_SECRET: 'an example secret of 32 characters or more',
      PORT: '0',
      HOST: '127.0.0.1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let text = ''
  child.stdout?.on('data', (chunk) => (text += chunk))
  child.stderr?.on('data', (chunk) => (text += chunk))
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${example} did not start within 20 s:\n${text}`)), 20_000)
    child.stdout?.on('data', () => {
      const listening = /Listening on (http:\/\/[^/\s]+)\//.exec(text)
      if (listening) {
        clearTimeout(timer)
        resolve(listening[1])
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${example} exited with ${code}:\n${text}`))
    })
  })
  return { child, url, output: () => text }
}

describe('the framework examples', () => {
  for (const example of ['fastify.ts', 'koa.ts', 'nestjs-express.ts', 'nestjs-fastify.ts']) {
    it(`examples/${example}: counts, logs in, logs out, stops on SIGTERM`, async () => {
      const { child, url, output } = await start(example)
      try {
        const agent = request.agent(url)
        assert.equal((await agent.get('/').expect(200)).body.views, 1)
        assert.equal((await agent.get('/').expect(200)).body.views, 2)
        await agent.post('/login').expect((res) => assert.ok(res.status < 300, `login: ${res.status}`))
        assert.equal((await agent.get('/').expect(200)).body.user, 'ada')
        await agent.post('/logout').expect((res) => assert.ok(res.status < 300, `logout: ${res.status}`))
        const after = (await agent.get('/').expect(200)).body
        assert.deepEqual([after.user, after.views], [null, 1], 'a fresh session after the logout')
        const exited = once(child, 'exit')
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        const [code, signal] = await exited
        clearTimeout(timer)
        assert.equal(signal, null, `${example} did not stop on SIGTERM within 10 s:\n${output()}`)
        assert.equal(code, 0, output())
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      }
    })
  }
})
