// A small Express app on MemcacheStore: a visit counter, log in, log out.
// Run it with `./scripts/demo` (which starts memcached when MEMCACHE_SERVERS is not set).
import express from 'express'
import session from 'express-session'
import { MemcacheStore } from '../lib/index.ts'

declare module 'express-session' {
  interface SessionData {
    views?: number
    user?: string
  }
}

export function createApp(store: MemcacheStore) {
  const app = express()
  app.use(express.urlencoded({ extended: false }))
  app.use(
    session({
      store,
      secret: process.env.SESSION_SECRET ?? 'demo secret: set SESSION_SECRET in production',
      resave: false,
      saveUninitialized: false,
      cookie: { maxAge: 30 * 60 * 1000 },
    }),
  )

  app.get('/', (req, res) => {
    req.session.views = (req.session.views ?? 0) + 1
    const who = req.session.user ? `Logged in as <b>${escapeHtml(req.session.user)}</b>.` : 'Not logged in.'
    res.type('html').send(`<!doctype html><title>express-session-memcache demo</title>
<p>${who} This session has seen ${req.session.views} visit(s).</p>
<form method="post" action="/login"><input name="user" placeholder="name" required> <button>Log in</button></form>
<form method="post" action="/logout"><button>Log out</button></form>`)
  })

  // A new session ID on login (no session fixation), then the user's name in it.
  app.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err)
      req.session.user = String(req.body.user ?? '').slice(0, 100)
      res.redirect('/')
    })
  })

  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.redirect('/')))
  })

  return app
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

// Started directly (`node --import tsx examples/app.ts`, or in docker-compose): memcached from
// MEMCACHE_SERVERS (default localhost:11211), port from PORT (default 3000).
if (import.meta.url === `file://${process.argv[1]}`) {
  const store = new MemcacheStore()
  await store.ready()
  const port = Number(process.env.PORT ?? 3000)
  createApp(store).listen(port, () =>
    console.log(`Demo app on http://localhost:${port}/ (memcached: ${process.env.MEMCACHE_SERVERS ?? 'localhost:11211'})`),
  )
}
