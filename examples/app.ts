// A small Express app on MemcacheStore: a visit counter, log in, log out.
// Run it with `./scripts/demo` (which starts memcached when MEMCACHE_SERVERS is not set).
import type { Server } from 'node:http'
import express from 'express'
import session from 'express-session'
import { MemcacheStore } from '../lib/index.ts'

declare module 'express-session' {
  interface SessionData {
    views?: number
    user?: string
  }
}

/**
 * SESSION_SECRET, or else a fixed secret for the demo, said out loud: anyone can forge cookies signed
 * with it. A real app refuses to start without a secret instead (see examples/usage.ts).
 */
export function demoSecret(): string {
  const secret = process.env.SESSION_SECRET
  if (secret) return secret
  console.warn('SESSION_SECRET is not set: the demo signs its cookies with a fixed, public secret')
  return 'express-session-memcache demo secret (public)'
}

/**
 * Starts listening; rejects with a message to show as it is when the port is taken. (Express 5 hands
 * a listen error to the callback, which must then not claim the app is up.)
 */
export function listen(app: express.Express, port: number, host?: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const onListening = (error?: Error) => {
      if (!error) return resolve(server)
      const inUse = (error as NodeJS.ErrnoException).code === 'EADDRINUSE'
      reject(inUse ? new Error(`port ${port} is in use: set PORT=... to a free port, e.g. PORT=${port + 1}`, { cause: error }) : error)
    }
    const server = host === undefined ? app.listen(port, onListening) : app.listen(port, host, onListening)
  })
}

export function createApp(store: MemcacheStore, secret: string) {
  const app = express()
  app.use(express.urlencoded({ extended: false }))
  app.use(
    session({
      store,
      genid: store.genid, // IDs reserved in memcached before they are handed out
      secret,
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
  const port = Number(process.env.PORT ?? 3000)
  try {
    await store.ready()
    await listen(createApp(store, demoSecret()), port)
    console.log(`Demo app on http://localhost:${port}/ (memcached: ${process.env.MEMCACHE_SERVERS ?? 'localhost:11211'})`)
  } catch (err) {
    console.error(`Demo app not started: ${err instanceof Error ? err.message : String(err)}`)
    await store.close()
    process.exit(1)
  }
}
