// The Fastify app the end-to-end tests drive: fastify + @fastify/cookie + @fastify/session with the
// store given directly, as @fastify/session's README suggests for express-session stores. The same
// routes as the Express app (app.ts), and a cookie jar over fastify.inject.
import fastifyCookie from '@fastify/cookie'
import fastifySession, { type FastifySessionOptions } from '@fastify/session'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import type { MemcacheStore } from '../../lib/index.ts'
import { type HeldRequest, holdRequest } from './app.ts'

declare module 'fastify' {
  interface Session {
    views?: number
    user?: string
    secret?: string
    [field: string]: unknown
  }
}

export const FASTIFY_SECRET = 'a test secret of at least 32 characters'

export interface FastifyTestApp {
  app: FastifyInstance
  /** Errors the routes' or the session plugin's hooks ended with (a failed save among them). */
  errors: Array<Error & { code?: string }>
  held: HeldRequest[]
}

/** @fastify/session over `store`, with its defaults (rolling, saveUninitialized) unless `options` say otherwise; plain HTTP cookies. */
export async function fastifyApp(store: MemcacheStore, options: Partial<FastifySessionOptions> = {}): Promise<FastifyTestApp> {
  const app = Fastify()
  const errors: FastifyTestApp['errors'] = []
  const held: HeldRequest[] = []
  await app.register(fastifyCookie)
  // @fastify/session types its store as its own; an express-session store is what it calls.
  await app.register(fastifySession, { store: store as never, secret: FASTIFY_SECRET, cookie: { secure: false }, ...options })
  app.addHook('onError', async (_request, _reply, error) => {
    errors.push(error as Error & { code?: string })
  })
  app.get('/count', async (request) => {
    request.session.views = (request.session.views ?? 0) + 1
    return { views: request.session.views, id: request.session.sessionId }
  })
  app.get('/read', async (request) => {
    const { views, user, secret } = request.session
    return { views: views ?? null, user: user ?? null, secret: secret ?? null, id: request.session.sessionId }
  })
  // What the application would show of its session as JSON.
  app.get('/json', async (request) => JSON.stringify(request.session))
  app.post('/set', async (request) => {
    Object.assign(request.session, request.body)
    return { id: request.session.sessionId }
  })
  // Listed in `held` once the session is loaded; answered (and saved) only when released.
  app.post('/set-when-released', (request, reply) => {
    held.push(
      holdRequest(request.session.sessionId, request.body as Record<string, unknown>, () => {
        Object.assign(request.session, request.body)
        reply.send({ id: request.session.sessionId })
      }),
    )
  })
  app.post('/login', async (request) => {
    await request.session.regenerate()
    request.session.user = (request.body as { user: string }).user
    return { id: request.session.sessionId }
  })
  app.post('/logout', async (request) => {
    await request.session.destroy()
    return { ok: true }
  })
  await app.ready()
  return { app, errors, held }
}

/** A browser-like client of a Fastify app: one cookie jar, requests through fastify.inject. */
export class FastifyAgent {
  #cookies = new Map<string, string>()
  constructor(readonly app: FastifyInstance) {}

  async request(method: 'GET' | 'POST', url: string, body?: Record<string, unknown>): Promise<LightMyRequestResponse> {
    const cookie = [...this.#cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    const res = await this.app.inject({ method, url, payload: body, headers: cookie ? { cookie } : {} })
    for (const { name, value, maxAge, expires } of res.cookies as Array<{ name: string; value: string; maxAge?: number; expires?: Date }>) {
      if (maxAge === 0 || (expires && expires.getTime() <= Date.now())) this.#cookies.delete(name)
      else this.#cookies.set(name, value)
    }
    return res
  }

  get(url: string): Promise<LightMyRequestResponse> {
    return this.request('GET', url)
  }

  post(url: string, body: Record<string, unknown> = {}): Promise<LightMyRequestResponse> {
    return this.request('POST', url, body)
  }

  /** The session cookie as the jar holds it (signed ID), if any. */
  get sessionCookie(): string | undefined {
    return this.#cookies.get('sessionId')
  }
}
