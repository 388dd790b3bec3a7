// Fastify on MemcacheStore: fastify + @fastify/cookie + @fastify/session, with the store given
// directly (it takes express-session stores). A visit counter, log in, log out.
//
//   SESSION_SECRET=$(openssl rand -base64 32) node --import tsx examples/fastify.ts
//
// memcached at MEMCACHE_SERVERS (default localhost:11211); PORT (default 3000).
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import Fastify from 'fastify'
import { MemcacheStore } from '../lib/index.ts'

// What this app keeps in a session, for request.session's type.
declare module 'fastify' {
  interface Session {
    views?: number
    user?: string
  }
}

const secret = process.env.SESSION_SECRET
if (!secret || secret.length < 32) throw new Error('SESSION_SECRET must be set, with 32 characters or more')

const store = new MemcacheStore()
await store.ready()

const app = Fastify()
await app.register(fastifyCookie)
await app.register(fastifySession, {
  store,
  secret,
  // Collision-checked IDs, reserved in memcached ahead of time (optional).
  idGenerator: store.genid,
  // 'auto': Secure over HTTPS only, so that this example works on http://localhost.
  cookie: { secure: 'auto', maxAge: 24 * 60 * 60 * 1000 },
  saveUninitialized: false,
})

app.get('/', async (request) => {
  request.session.views = (request.session.views ?? 0) + 1
  return { views: request.session.views, user: request.session.user ?? null }
})
app.post('/login', async (request) => {
  // A new session ID on login; the old session is deleted.
  await request.session.regenerate()
  request.session.user = 'ada'
  return { user: 'ada' }
})
app.post('/logout', async (request) => {
  await request.session.destroy()
  return { ok: true }
})
// Saves in flight finish before the connections close.
app.addHook('onClose', () => store.close())

const address = await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? 'localhost' })
console.log(`Listening on ${address}/`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close())
