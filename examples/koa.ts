// Koa on MemcacheStore: koa + koa-session, with `koaStore(store)` as koa-session's external store.
// A visit counter, log in, log out.
//
//   SESSION_SECRET=$(openssl rand -base64 32) node --import tsx examples/koa.ts
//
// memcached at MEMCACHE_SERVERS (default localhost:11211); PORT (default 3000).
import Koa from 'koa'
import session from 'koa-session'
import { koaStore, MemcacheStore } from '../lib/index.ts'

const secret = process.env.SESSION_SECRET
if (!secret) throw new Error('SESSION_SECRET is not set')

const store = new MemcacheStore()
await store.ready()

const app = new Koa()
app.keys = [secret] // koa-session signs its cookie with them
app.use(
  session(
    {
      store: koaStore(store),
      // Collision-checked IDs, reserved in memcached ahead of time (optional; koa-session's own are random UUIDs).
      genid: store.genid,
      maxAge: 24 * 60 * 60 * 1000, // memcached keeps the session as long, plus a second
      rolling: true, // every request moves the expiry: one memcached request when the session is only read
    },
    app,
  ),
)

app.use(async (ctx) => {
  const sess = ctx.session
  if (!sess) return
  if (ctx.method === 'POST' && ctx.path === '/login') {
    // A new session ID on login; the old session is deleted.
    await sess.regenerate()
    sess.user = 'ada'
    ctx.body = { user: 'ada' }
  } else if (ctx.method === 'POST' && ctx.path === '/logout') {
    ctx.session = null
    ctx.body = { ok: true }
  } else if (ctx.method === 'GET' && ctx.path === '/') {
    sess.views = ((sess.views as number | undefined) ?? 0) + 1
    ctx.body = { views: sess.views, user: sess.user ?? null }
  } else ctx.status = 404
})

const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? 'localhost', () => {
  const address = server.address()
  console.log(`Listening on http://localhost:${typeof address === 'object' && address ? address.port : ''}/`)
})
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  // Requests in flight finish, then the store lets its saves settle and closes.
  process.once(signal, () => server.close(() => void store.close()))
}
