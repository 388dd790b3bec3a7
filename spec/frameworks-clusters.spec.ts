// The cluster guarantees under each framework: express-session, @fastify/session (the store given
// directly) and koa-session (koaStore), on the protocol under test. A user logged out everywhere
// (`userOf`, `destroySessionsOf`) stays so, with a save in flight. With `replicas: 1` on three
// servers, a server holding a copy killed and restarted empty loses no session and undoes no logout,
// even one made while a slow request of that session was in flight; with `setServers`, growing and
// shrinking the ring logs nobody out. What holds under express-session must hold under the others.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import request from 'supertest'
import { koaStore, type MemcacheStore, type MemcacheStoreOptions } from '../lib/index.ts'
import { type HeldRequest, testApp } from './harness/app.ts'
import { FastifyAgent, fastifyApp } from './harness/fastify-app.ts'
import { koaApp } from './harness/koa-app.ts'
import { type MemcachedServer, startMemcacheds } from './harness/memcached.ts'
import { createStore } from './harness/protocol.ts'
import { uniquePrefix } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

type Json = Record<string, unknown>

/** One browser against one app: a cookie jar, JSON in and out. */
interface Client {
  get(path: string): Promise<Json>
  post(path: string, body?: Json): Promise<Json>
}

interface Framework {
  name: string
  /** An app over `store`, and a way to make clients of it. */
  open(store: MemcacheStore): Promise<{ client(): Client; held: HeldRequest[]; errors: unknown[]; close(): Promise<void> }>
}

function supertestClient(handler: Parameters<typeof request.agent>[0]): Client {
  const agent = request.agent(handler)
  return {
    get: async (path) => (await agent.get(path).expect(200)).body,
    post: async (path, body = {}) => (await agent.post(path).send(body).expect(200)).body,
  }
}

const FRAMEWORKS: Framework[] = [
  {
    name: 'express-session',
    async open(store) {
      const app = testApp(store)
      return { client: () => supertestClient(app), held: app.held, errors: app.errors, close: async () => {} }
    },
  },
  {
    name: '@fastify/session',
    async open(store) {
      const { app, held, errors } = await fastifyApp(store)
      const client = (): Client => {
        const agent = new FastifyAgent(app)
        const json = (res: { statusCode: number; json(): Json; body: string }) => {
          assert.equal(res.statusCode, 200, res.body)
          return res.json()
        }
        return { get: async (path) => json(await agent.get(path)), post: async (path, body) => json(await agent.post(path, body)) }
      }
      return { client, held, errors, close: () => app.close() }
    },
  },
  {
    name: 'koa-session',
    async open(store) {
      const { app, held, errors } = koaApp(koaStore(store))
      return { client: () => supertestClient(app.callback()), held, errors, close: async () => {} }
    },
  },
]

const started: MemcachedServer[] = []
const stores: MemcacheStore[] = []
after(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await Promise.all(started.map((server) => server.stop()))
})

async function cluster(count: number): Promise<MemcachedServer[]> {
  const servers = await startMemcacheds(count)
  started.push(...servers)
  return servers
}

function create(options: MemcacheStoreOptions): MemcacheStore {
  const store = createStore({ timeout: 1000, logger: false, prefix: uniquePrefix(), ...options })
  stores.push(store)
  return store
}

/** The servers holding a key (its copies). */
async function holders(servers: MemcachedServer[], key: string): Promise<MemcachedServer[]> {
  const found = await Promise.all(servers.map(async (server) => (server.running ? await server.inspect(key) : undefined)))
  return servers.filter((_, i) => found[i] !== undefined)
}

for (const framework of FRAMEWORKS) {
  describe(`${framework.name} on a cluster`, () => {
    it("replicas: 1, a server holding a copy killed and restarted empty: counters go on, a logout made while the other copy's server is frozen (during a slow request) stays final once it thaws", async () => {
      const servers = await cluster(3)
      const store = create({ servers: servers.map((server) => server.address), replicas: 1 })
      const app = await framework.open(store)
      const counting = app.client()
      let id = ''
      for (let views = 1; views <= 3; views++) {
        const body = await counting.get('/count')
        assert.equal(body.views, views)
        id = body.id as string
      }
      const [first] = await holders(servers, store.prefix + id)
      assert.equal((await holders(servers, store.prefix + id)).length, 2, 'two copies')
      await first.kill()
      assert.equal((await counting.get('/count')).views, 4, 'counts on while a copy is down')
      await first.restart()
      assert.equal((await counting.get('/count')).views, 5, 'counts on after it came back empty')
      // A second server lost before the store reconnected to the first would be two faults at once.
      await eventually('the store reaches every server again', () =>
        store.ready().then(
          () => true,
          () => false,
        ),
      )

      const user = app.client()
      await user.post('/login', { user: 'ada' })
      const { id: sid } = (await user.get('/read')) as { id: string }
      const slow = user.post('/set-when-released', { cart: ['book'] })
      await eventually('the slow request has loaded the session', () => app.held.length === 1)
      const copies = await holders(servers, store.prefix + sid)
      assert.equal(copies.length, 2, 'two copies')
      const [copy] = copies
      // Frozen, not killed: it comes back holding the session, which the logout must still beat.
      copy.freeze()
      await user.post('/logout')
      app.held[0].release()
      await slow
      copy.thaw()
      await eventually('the store reaches every server again', () =>
        store.ready().then(
          () => true,
          () => false,
        ),
      )
      const after = await user.get('/read')
      assert.equal(after.user, null, 'the logout stayed final')
      // The thawed copy may still hold the session: whether the logout's tombstone reached it depends
      // on whether it was written before its connection timed out (and koa-session, which dropped the
      // cookie, never reads the ID again). A read of the ID answers no session and repairs that copy:
      // then nothing of the logged-out session is live on any server, only tombstones or nothing.
      assert.equal(await store.get(sid), null, 'the logged-out ID reads as no session')
      const live = async () => {
        const found = await Promise.all(servers.map((server) => server.inspect(store.prefix + sid)))
        return found.flatMap((item, i) => (item?.value.includes('ada') ? [servers[i].address] : []))
      }
      await eventually('the copy that missed the logout is repaired', async () => (await live()).length === 0).catch(async (err) => {
        throw new Error(`${err.message}: ${(await live()).join(', ')} still hold the session`)
      })
      // And with only the server that was frozen left, the session still does not come back: its ID
      // (as a replayed cookie would send it) reads as no session. The client's cookie may name a new
      // session by now, whose copies may both be on the servers killed here: not asked.
      for (const server of servers) if (server !== copy) await server.kill()
      assert.equal(await store.get(sid), null, 'the logout stayed final on the thawed copy alone')
      for (const server of servers) if (!server.running) await server.restart()
      assert.deepEqual(app.errors, [])
      await app.close()
    })

    it('userOf with replicas: 1: destroySessionsOf logs the user out on every agent, a save in flight does not revive a session, the other user stays', async () => {
      const servers = await cluster(3)
      const store = create({
        servers: servers.map((server) => server.address),
        replicas: 1,
        userOf: (sess) => (sess as { user?: string }).user,
      })
      const app = await framework.open(store)
      const ann = [app.client(), app.client()]
      for (const client of ann) await client.post('/login', { user: 'ada' })
      const bob = app.client()
      await bob.post('/login', { user: 'bob' })
      assert.equal((await store.sessionsOf('ada')).length, 2)
      const slow = ann[0].post('/set-when-released', { cart: ['book'] })
      await eventually('the slow request has loaded the session', () => app.held.length === 1)
      await store.destroySessionsOf('ada')
      app.held[0].release()
      await slow
      for (const client of ann) assert.equal((await client.get('/read')).user, null, 'ada is still logged in')
      assert.equal((await bob.get('/read')).user, 'bob')
      assert.deepEqual(await store.sessionsOf('ada'), [])
      assert.deepEqual(app.errors, [])
      await app.close()
    })

    it('setServers 3 -> 4 -> 3: no counter resets, the removed server stopped once drained', async () => {
      const servers = await cluster(4)
      const three = servers.slice(0, 3).map((server) => server.address)
      const store = create({ servers: three })
      const app = await framework.open(store)
      const clients = Array.from({ length: 24 }, () => app.client())
      const views = new Map<Client, number>()
      const countAll = async () => {
        for (const client of clients) {
          const body = await client.get('/count')
          assert.equal(body.views, (views.get(client) ?? 0) + 1, 'a counter went back')
          views.set(client, body.views as number)
        }
      }
      await countAll()
      await store.setServers(servers.map((server) => server.address))
      await countAll()
      await eventually('the grow is drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
      const removed = servers[0]
      await store.setServers(servers.filter((server) => server !== removed).map((server) => server.address))
      await countAll()
      await eventually('the shrink is drained', () => store.diagnostics().migration.previous.length === 0, 10_000)
      await removed.stop()
      await countAll()
      assert.ok(store.diagnostics().migration.moved > 0, 'sessions moved')
      assert.deepEqual(app.errors, [])
      await app.close()
    })
  })
}
