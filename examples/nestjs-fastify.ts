// NestJS on its Fastify adapter, with @fastify/cookie, @fastify/session and MemcacheStore given
// directly. A visit counter, log in, log out.
//
//   SESSION_SECRET=$(openssl rand -base64 32) node --import tsx examples/nestjs-fastify.ts
//
// memcached at MEMCACHE_SERVERS (default localhost:11211); PORT (default 3000). NestJS's decorators
// need `experimentalDecorators` (this repository's tsconfig.json sets it); nothing here relies on
// `emitDecoratorMetadata`, which tsx does not emit.
import 'reflect-metadata'
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import { Controller, Get, Module, Post, Req } from '@nestjs/common'
import { NestFactory } from '@nestjs/core'
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify'
import type { FastifyRequest } from 'fastify'
import { MemcacheStore } from '../lib/index.ts'

declare module 'fastify' {
  interface Session {
    views?: number
    user?: string
  }
}

@Controller()
class SessionController {
  @Get()
  count(@Req() request: FastifyRequest) {
    request.session.views = (request.session.views ?? 0) + 1
    return { views: request.session.views, user: request.session.user ?? null }
  }

  @Post('login')
  async login(@Req() request: FastifyRequest) {
    // A new session ID on login; the old session is deleted.
    await request.session.regenerate()
    request.session.user = 'ada'
    return { user: 'ada' }
  }

  @Post('logout')
  async logout(@Req() request: FastifyRequest) {
    await request.session.destroy()
    return { ok: true }
  }
}

@Module({ controllers: [SessionController] })
class AppModule {}

const secret = process.env.SESSION_SECRET
if (!secret || secret.length < 32) throw new Error('SESSION_SECRET must be set, with 32 characters or more')

const store = new MemcacheStore()
await store.ready()

const app = await NestFactory.create<NestFastifyApplication>(AppModule, new FastifyAdapter(), { logger: ['error', 'warn'] })
await app.register(fastifyCookie)
await app.register(fastifySession, {
  store,
  secret,
  idGenerator: store.genid,
  cookie: { secure: 'auto', maxAge: 24 * 60 * 60 * 1000 },
  saveUninitialized: false,
})
await app.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? 'localhost')
console.log(`Listening on ${await app.getUrl()}/`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  // Requests in flight finish, then the store lets its saves settle and closes.
  process.once(signal, () => void app.close().then(() => store.close()))
}
