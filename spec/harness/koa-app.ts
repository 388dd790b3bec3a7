// The Koa app the end-to-end tests drive: koa + koa-session with `koaStore(store)` (or, to show what
// happens without it, the store given directly). The same routes as the Express app (app.ts).
import Koa from 'koa'
import session from 'koa-session'
import type { KoaSessionStore, MemcacheStore } from '../../lib/index.ts'
import { type HeldRequest, holdRequest } from './app.ts'

export interface KoaTestApp {
  app: Koa
  /** Errors the app ended requests with (a failed save among them). */
  errors: Array<Error & { code?: string }>
  held: HeldRequest[]
}

/** koa-session's options, as far as the tests set them. */
export interface KoaSessionTestOptions {
  maxAge?: number | 'session'
  rolling?: boolean
  renew?: boolean
  genid?: (ctx: unknown) => string
}

async function body(ctx: Koa.Context): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
  return chunks.length === 0 ? {} : JSON.parse(Buffer.concat(chunks).toString())
}

/** koa-session over `store` (a koaStore, or anything else the test gives it), with its defaults unless `options` say otherwise. */
export function koaApp(store: KoaSessionStore | MemcacheStore, options: KoaSessionTestOptions = {}): KoaTestApp {
  const app = new Koa()
  app.keys = ['a koa test key']
  const errors: KoaTestApp['errors'] = []
  const held: HeldRequest[] = []
  app.on('error', (err: Error & { code?: string }) => errors.push(err))
  // koa-session types its store as its own zod-made shape; what it calls is get/set/destroy.
  app.use(session({ store: store as never, ...options } as never, app))
  app.use(async (ctx) => {
    const route = `${ctx.method} ${ctx.path}`
    const sess = ctx.session as NonNullable<typeof ctx.session> & Record<string, unknown>
    switch (route) {
      case 'GET /count':
        sess.views = ((sess.views as number | undefined) ?? 0) + 1
        ctx.body = { views: sess.views, id: sess.externalKey }
        return
      case 'GET /read':
        ctx.body = { views: sess.views ?? null, user: sess.user ?? null, secret: sess.secret ?? null, id: sess.externalKey ?? null }
        return
      case 'GET /json':
        ctx.body = { fields: Object.keys(sess.toJSON()), all: Object.keys(sess) }
        return
      case 'POST /set':
        Object.assign(sess, await body(ctx))
        ctx.body = { id: sess.externalKey }
        return
      // Saves at once, and again when koa-session commits after the route (an app that retries).
      case 'POST /set-and-save': {
        Object.assign(sess, await body(ctx))
        try {
          await sess.save()
        } catch (err) {
          errors.push(err as Error)
        }
        ctx.body = { id: sess.externalKey }
        return
      }
      case 'POST /set-when-released': {
        const fields = await body(ctx)
        await new Promise<void>((resolve) => {
          held.push(
            holdRequest(sess.externalKey as string, fields, () => {
              Object.assign(sess, fields)
              resolve()
            }),
          )
        })
        ctx.body = { id: sess.externalKey }
        return
      }
      case 'POST /login': {
        const { user } = await body(ctx)
        // koa-session keeps the data under the new key (the Session object still names the old one).
        await sess.regenerate()
        sess.user = user
        ctx.body = { ok: true }
        return
      }
      case 'POST /logout':
        ctx.session = null
        ctx.body = { ok: true }
        return
      default:
        ctx.status = 404
    }
  })
  return { app, errors, held }
}
