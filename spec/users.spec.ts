// Sessions by user (`userOf`): `sessionsOf` and `destroySessionsOf` through a passport-style Express
// app (the user in `req.session.user`), two store instances standing for two app processes. A user
// logged out everywhere stays logged out: on every agent, through either process, after a save that
// was in flight, and when what the store keeps for it (the user's record) is deleted from memcached.
// With `secret`, `hashIds` and `replicas` too. Both protocols.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import request from 'supertest'
import type { MemcacheStoreOptions } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { commandsDuring } from './harness/commands.ts'
import { type MemcachedServer, startMemcacheds } from './harness/memcached.ts'
import { failure } from './harness/outcomes.ts'
import { createStore } from './harness/protocol.ts'
import { uniquePrefix, useMemcached } from './harness/stores.ts'
import { eventually } from './harness/timing.ts'

const file = useMemcached()
const SECRET = 'a test secret of at least 32 characters, random enough'
const userOf = (sess: { user?: string }) => sess.user

/** Two processes of one app: two stores with the same options (and prefix), each behind its own Express app. */
function twoProcesses(options: MemcacheStoreOptions = {}) {
  const prefix = uniquePrefix()
  const stores = [0, 1].map(() => file.stores.create({ prefix, userOf, ...options }))
  const apps = stores.map((store) => testApp(store))
  return { stores, apps }
}

/** A browser logged in as `user` through `app`; its session ID. */
async function loggedIn(app: ReturnType<typeof testApp>, user: string) {
  const agent = request.agent(app)
  const { id } = (await agent.post('/login').send({ user }).expect(200)).body as { id: string }
  return { agent, id }
}

const userSeenBy = async (agent: ReturnType<typeof request.agent>) => (await agent.get('/read').expect(200)).body.user as string | null

for (const [name, options] of [
  ['plain', {}],
  ['with secret', { secret: SECRET }],
  ['with secret and hashIds', { secret: SECRET, hashIds: true }],
] as const) {
  describe(`sessionsOf and destroySessionsOf (${name})`, () => {
    it('ann on three agents through two processes, bob on one: destroySessionsOf(ann) logs out all three, bob stays', async () => {
      const { stores, apps } = twoProcesses(options)
      const ann = [await loggedIn(apps[0], 'ann'), await loggedIn(apps[1], 'ann'), await loggedIn(apps[0], 'ann')]
      const bob = await loggedIn(apps[1], 'bob')
      assert.deepEqual((await stores[1].sessionsOf('ann')).sort(), ann.map(({ id }) => id).sort())
      assert.deepEqual(await stores[0].sessionsOf('bob'), [bob.id])
      await stores[0].destroySessionsOf('ann')
      for (const { agent } of ann) assert.equal(await userSeenBy(agent), null, 'an agent of ann is still logged in')
      for (const store of stores) for (const { id } of ann) assert.equal(await store.get(id), null, 'a process still serves it')
      assert.equal(await userSeenBy(bob.agent), 'bob')
      assert.deepEqual(await stores[1].sessionsOf('ann'), [])
      // Logging in again works, and only the new session is ann's.
      const again = await loggedIn(apps[1], 'ann')
      assert.equal(await userSeenBy(again.agent), 'ann')
      assert.deepEqual(await stores[0].sessionsOf('ann'), [again.id])
    })

    it('a request of ann in flight that saves after destroySessionsOf does not revive its session', async () => {
      const { stores, apps } = twoProcesses(options)
      const { agent, id } = await loggedIn(apps[0], 'ann')
      const slow = agent.post('/set-when-released').send({ cart: ['book'] })
      const sent = slow.then((res) => res)
      await eventually('the slow request has loaded the session', () => apps[0].held.length === 1)
      await stores[1].destroySessionsOf('ann')
      apps[0].held[0].release()
      assert.equal((await sent).status, 200)
      assert.equal(await userSeenBy(agent), null)
      for (const store of stores) assert.equal(await store.get(id), null)
      assert.deepEqual(apps[0].errors, [])
    })

    it('except keeps the current session (it goes on saving), ends the others; a later call without except ends it too', async () => {
      const { stores, apps } = twoProcesses(options)
      const current = await loggedIn(apps[0], 'ann')
      const other = await loggedIn(apps[1], 'ann')
      await stores[1].destroySessionsOf('ann', { except: current.id })
      assert.equal(await userSeenBy(other.agent), null)
      assert.equal(await userSeenBy(current.agent), 'ann')
      await current.agent.post('/set').send({ theme: 'dark' }).expect(200)
      assert.equal((await current.agent.get('/count').expect(200)).body.views, 1)
      assert.equal(await userSeenBy(current.agent), 'ann', 'the kept session saves and reads on')
      assert.deepEqual(await stores[0].sessionsOf('ann'), [current.id])
      await stores[0].destroySessionsOf('ann')
      assert.equal(await userSeenBy(current.agent), null)
    })

    it('fail closed: with every key that is not a session deleted (the users’ records), no ended session is served, and none of ann’s', async () => {
      const { stores, apps } = twoProcesses(options)
      const ended = await loggedIn(apps[0], 'ann')
      await stores[0].destroySessionsOf('ann')
      const live = await loggedIn(apps[1], 'ann')
      const bob = await loggedIn(apps[0], 'bob')
      const prefix = stores[0].prefix
      const records = (await file.server.keys()).filter((key) => key.startsWith(`${prefix}user:`))
      assert.equal(records.length, 2, 'one record per user')
      for (const key of records) assert.ok(await file.server.remove(key))
      assert.equal(await userSeenBy(ended.agent), null, 'an ended session came back')
      for (const store of stores) assert.equal(await store.get(ended.id), null)
      // The records are gone, so no session of either user can be told valid: all log in again (more than asked, never less).
      assert.equal(await userSeenBy(live.agent), null)
      assert.equal(await userSeenBy(bob.agent), null)
      const back = await loggedIn(apps[1], 'ann')
      assert.equal(await userSeenBy(back.agent), 'ann')
    })

    it('fail closed: a record lost while a request of that user is in flight: its save does not make the session valid again', async () => {
      const { stores, apps } = twoProcesses(options)
      const { agent, id } = await loggedIn(apps[0], 'ann')
      const sent = agent
        .post('/set-when-released')
        .send({ cart: ['book'] })
        .then((res) => res)
      await eventually('the slow request has loaded the session', () => apps[0].held.length === 1)
      const prefix = stores[0].prefix
      for (const key of await file.server.keys()) if (key.startsWith(`${prefix}user:`)) await file.server.remove(key)
      apps[0].held[0].release()
      assert.equal((await sent).status, 200)
      for (const store of stores) assert.equal(await store.get(id), null, 'the save revived the session')
      assert.equal(await userSeenBy(agent), null)
    })
  })
}

describe('what sessions by user cost', () => {
  it('a read of a session with a user costs one command more (its record), one without none; a save that keeps its user none', async () => {
    const { apps } = twoProcesses()
    const { agent } = await loggedIn(apps[0], 'ann')
    const anonymous = request.agent(apps[0])
    await anonymous.get('/count').expect(200)
    const readAnn = await commandsDuring(file.server, () => agent.get('/read').expect(200))
    const readAnonymous = await commandsDuring(file.server, () => anonymous.get('/read').expect(200))
    assert.equal(readAnonymous.total, 1, JSON.stringify(readAnonymous))
    assert.equal(readAnn.total, 2, JSON.stringify(readAnn))
    const save = await commandsDuring(file.server, () => agent.get('/count').expect(200))
    assert.equal(save.total, 3, `get-and-touch, the record, the CAS write: ${JSON.stringify(save)}`)
  })

  it('a userOf that throws fails the save with EUSERCODE, nothing written; a bad user for destroySessionsOf is a TypeError; without userOf too', async () => {
    const store = file.stores.create({
      userOf: () => {
        throw new Error('boom')
      },
    })
    const { err } = await failure(store.set('sid-userof-throws', { cookie: { originalMaxAge: 60_000 } } as never))
    assert.equal(err.code, 'EUSERCODE')
    assert.equal(await file.server.inspect(`${store.prefix}sid-userof-throws`), undefined)
    await assert.rejects(store.destroySessionsOf('' as never), TypeError)
    await assert.rejects(file.stores.create().sessionsOf('ann'), /needs the `userOf` option/)
  })

  it('hashIds without secret: sessionsOf is refused (the IDs would be stored in clear), destroySessionsOf works', async () => {
    const { stores, apps } = twoProcesses({ hashIds: true })
    const ann = await loggedIn(apps[0], 'ann')
    const { err } = await failure(stores[0].sessionsOf('ann'))
    assert.equal(err.code, 'ENOTSUPPORTED')
    await stores[1].destroySessionsOf('ann')
    assert.equal(await userSeenBy(ann.agent), null)
  })
})

describe('with replicas: 1 on three servers', () => {
  const started: MemcachedServer[] = []
  after(() => Promise.all(started.map((server) => server.stop())))

  it('destroySessionsOf with a server of the record down: ann is logged out, and stays so when it comes back empty; with both down it fails, saying so', async () => {
    const servers = await startMemcacheds(3)
    started.push(...servers)
    const prefix = uniquePrefix()
    const make = () =>
      createStore({ servers: servers.map((server) => server.address), replicas: 1, prefix, userOf, logger: false, timeout: 500 })
    const stores = [make(), make()]
    try {
      const app = testApp(stores[0])
      const ann = [await loggedIn(app, 'ann'), await loggedIn(app, 'ann')]
      const recordKey = (await Promise.all(servers.map((server) => server.keys())))
        .flat()
        .find((key) => key.startsWith(`${prefix}user:`)) as string
      const holders: MemcachedServer[] = []
      for (const server of servers) if (await server.inspect(recordKey)) holders.push(server)
      assert.equal(holders.length, 2, 'two copies of the record')
      await holders[0].kill()
      await stores[1].destroySessionsOf('ann')
      await holders[0].restart()
      await eventually('the store reaches every server again', () =>
        stores[0].ready().then(
          () => true,
          () => false,
        ),
      )
      for (const { agent } of ann) assert.equal(await userSeenBy(agent), null)
      for (const { id } of ann) assert.equal(await stores[1].get(id), null)
      await Promise.all(holders.map((server) => server.kill()))
      const { err } = await failure(stores[1].destroySessionsOf('ann'))
      assert.match(err.code ?? '', /^E(CONNECTION|SERVERDOWN|TIMEDOUT|CONNCLOSED)$/)
    } finally {
      await Promise.all(stores.map((store) => store.close()))
      for (const server of servers) if (!server.running) await server.restart()
    }
  })
})
