import express from 'express'
import session, { type SessionOptions } from 'express-session'
import request from 'supertest'
import type { MemcacheStore } from '../../lib/index.ts'
import './session-data.ts'

/** A request parked in its route handler (its session loaded) until the test releases it. */
export interface HeldRequest {
  readonly sessionID: string
  /** The fields the request will set (its JSON body). */
  readonly fields: Record<string, unknown>
  /** Applies the request's body to its session and answers, which saves the session. */
  release(): void
}

/**
 * How long a held request waits for the test at most. A test that fails before releasing it must not
 * leave the request open: it would keep the spec file's process alive, and the run would never end.
 */
const HOLD_LIMIT_MS = 20_000

/** A held request whose `answer` runs once: when the test releases it, or after HOLD_LIMIT_MS. */
export function holdRequest(sessionID: string, fields: Record<string, unknown>, answer: () => void): HeldRequest {
  let answered = false
  const release = () => {
    if (answered) return
    answered = true
    clearTimeout(limit)
    answer()
  }
  const limit = setTimeout(release, HOLD_LIMIT_MS).unref()
  return { sessionID, fields, release }
}

/**
 * The app the end-to-end tests drive: a visit counter, a read-only page, log in (regenerate) and
 * log out (destroy), plus a route that waits until the test releases it (`held`): requests that
 * overlap for certain, saving in the order the test chooses, whatever the machine's speed.
 */
export function testApp(store: MemcacheStore, options: Partial<SessionOptions> = {}) {
  const app = express()
  app.use(express.json())
  app.use(session({ store, secret: 'test secret', resave: false, saveUninitialized: false, ...options }))
  app.get('/count', (req, res) => {
    req.session.views = (req.session.views ?? 0) + 1
    res.json({ views: req.session.views, id: req.sessionID })
  })
  app.get('/read', (req, res) => {
    res.json({ views: req.session.views ?? null, user: req.session.user ?? null, secret: req.session.secret ?? null, id: req.sessionID })
  })
  app.post('/set', (req, res) => {
    Object.assign(req.session, req.body)
    res.json({ id: req.sessionID })
  })
  // "Remember me": this session gets its own lifetime.
  app.post('/remember', (req, res) => {
    req.session.cookie.maxAge = req.body.maxAge
    req.session.user = req.body.user
    res.json({ id: req.sessionID })
  })
  // Listed in `held` once express-session has loaded the session; saved only when released.
  const held: HeldRequest[] = []
  app.post('/set-when-released', (req, res) => {
    held.push(
      holdRequest(req.sessionID, req.body, () => {
        Object.assign(req.session, req.body)
        res.json({ id: req.sessionID })
      }),
    )
  })
  app.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err)
      req.session.user = req.body.user
      res.json({ id: req.sessionID })
    })
  })
  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.json({ ok: true })))
  })
  app.post('/save-twice', (req, res, next) => {
    req.session.views = 1
    req.session.save((err) => {
      if (err) return next(err)
      req.session.views = 2
      res.json({ id: req.sessionID })
    })
  })
  // express-session saves while the response ends, so a failed save arrives after the headers went out.
  const errors: Array<Error & { code?: string }> = []
  app.use((err: Error & { code?: string }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    errors.push(err)
    if (!res.headersSent) res.status(500).json({ error: err.message, code: err.code ?? null })
  })
  return Object.assign(app, { errors, held })
}

/** Express clients counting visits in a loop; `stop` ends them and returns how many counters went back. */
export function countingClients(store: MemcacheStore, count: number) {
  const app = testApp(store, { cookie: { maxAge: 600_000 } })
  const clients = Array.from({ length: count }, () => ({ agent: request.agent(app), views: 0, resets: 0 }))
  let requests = 0
  let failed = 0
  let running = true
  const loops = clients.map(async (client) => {
    while (running) {
      requests++
      const response = await client.agent.get('/count')
      if (response.status !== 200) {
        failed++
        continue
      }
      if (response.body.views !== client.views + 1) client.resets++
      client.views = response.body.views
    }
  })
  return {
    async stop() {
      running = false
      await Promise.all(loops)
      return { requests, failed, resets: clients.reduce((sum, client) => sum + client.resets, 0), clients, app }
    },
  }
}
