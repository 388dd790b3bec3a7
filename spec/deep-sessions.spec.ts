// A stored session nested too deep for express-session's hash(): found whatever the serializer,
// served as no session (one warning), and the request carrying its cookie is still answered.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import request from 'supertest'
import { testApp } from './harness/app.ts'
import { MemcachedServer } from './harness/memcached.ts'
import { RawClient } from './harness/raw.ts'
import { base64JsonSerializer, StoreFactory } from './harness/stores.ts'

let server: MemcachedServer
const stores = new StoreFactory(() => server)

before(async () => {
  server = await MemcachedServer.start()
})
after(async () => {
  await stores.closeAll()
  await server?.stop()
})

describe('a stored session nested too deep', () => {
  it('is found whatever the serializer, and a wide but shallow session with many brackets is served', async () => {
    const lines: string[] = []
    const store = stores.create({ serializer: base64JsonSerializer, logger: { warn: (line) => lines.push(line) } })
    const raw = new RawClient(server.address)
    try {
      const deep = `{"cookie":{},"a":${'['.repeat(600)}${']'.repeat(600)}}`
      await raw.set(`${store.prefix}deep-sid`, Buffer.from(deep).toString('base64'), { expires: 60 })
      assert.equal(await store.get('deep-sid'), null)
      assert.match(lines[0] ?? '', /nests deeper than 512 levels/)

      const wide = { cookie: {}, rows: Array.from({ length: 700 }, (_, i) => [{ i }]) }
      await raw.set(`${store.prefix}wide-sid`, JSON.stringify(wide), { expires: 60 })
      const plain = stores.create({ prefix: store.prefix })
      const served = (await plain.get('wide-sid')) as unknown as typeof wide | null
      assert.equal(served?.rows.length, 700, 'over 1,400 brackets, 3 levels deep: served')
      assert.equal(lines.length, 1, lines.join('\n'))
    } finally {
      raw.close()
    }
  })

  it('is no session (one warning), and a request carrying its cookie is answered', async () => {
    const lines: string[] = []
    const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
    const raw = new RawClient(server.address)
    try {
      const app = testApp(store)
      const agent = request.agent(app)
      const { id } = (await agent.post('/set').send({ user: 'ada' }).expect(200)).body as { id: string }
      assert.equal((await agent.get('/read').expect(200)).body.user, 'ada')
      const deep = `{"cookie":{},"a":${'['.repeat(5000)}${']'.repeat(5000)}}`
      await raw.set(store.prefix + id, deep, { expires: 60 })

      assert.equal(await store.get(id), null)
      assert.equal(lines.length, 1, lines.join('\n'))
      assert.match(lines[0], /nests deeper than 512 levels/)
      assert.ok(!lines[0].includes(id), 'the log line does not carry the whole session ID')

      const res = await agent.get('/read').timeout(5000)
      assert.equal(res.status, 200)
      assert.equal(res.body.user, null, 'a fresh session')
      assert.notEqual(res.body.id, id)
      assert.equal(app.errors.length, 0)
      assert.equal(lines.length, 1, 'one line per burst')
    } finally {
      raw.close()
    }
  })
})
