// NestJS on its Express adapter, with express-session and MemcacheStore. A visit counter, log in,
// log out.
//
//   SESSION_SECRET=$(openssl rand -base64 32) node --import tsx examples/nestjs-express.ts
//
// memcached at MEMCACHE_SERVERS (default localhost:11211); PORT (default 3000). NestJS's decorators
// need `experimentalDecorators` (this repository's tsconfig.json sets it); nothing here relies on
// `emitDecoratorMetadata`, which tsx does not emit.
import 'reflect-metadata'
import { Controller, Get, Module, Post, Req } from '@nestjs/common'
import { NestFactory } from '@nestjs/core'
import type { NestExpressApplication } from '@nestjs/platform-express'
import type { Request } from 'express'
import session from 'express-session'
import { MemcacheStore } from '../lib/index.ts'

declare module 'express-session' {
  interface SessionData {
    views?: number
    user?: string
  }
}

@Controller()
class SessionController {
  @Get()
  count(@Req() req: Request) {
    req.session.views = (req.session.views ?? 0) + 1
    return { views: req.session.views, user: req.session.user ?? null }
  }

  @Post('login')
  async login(@Req() req: Request) {
    // A new session ID on login; the old session is deleted.
    await new Promise<void>((resolve, reject) => req.session.regenerate((err) => (err ? reject(err) : resolve())))
    req.session.user = 'ada'
    return { user: 'ada' }
  }

  @Post('logout')
  async logout(@Req() req: Request) {
    await new Promise<void>((resolve, reject) => req.session.destroy((err) => (err ? reject(err) : resolve())))
    return { ok: true }
  }
}

@Module({ controllers: [SessionController] })
class AppModule {}

const secret = process.env.SESSION_SECRET
if (!secret) throw new Error('SESSION_SECRET is not set')

const store = new MemcacheStore()
await store.ready()

const app = await NestFactory.create<NestExpressApplication>(AppModule, { logger: ['error', 'warn'] })
app.use(session({ store, genid: store.genid, secret, resave: false, saveUninitialized: false }))
await app.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? 'localhost')
console.log(`Listening on ${await app.getUrl()}/`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  // Requests in flight finish, then the store lets its saves settle and closes.
  process.once(signal, () => void app.close().then(() => store.close()))
}
