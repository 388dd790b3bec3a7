// Bad input, table-driven: forged and malformed session IDs and cookies, stored values that are not
// sessions, sessions JSON cannot represent or memcached cannot hold. Each case must get a clear
// outcome and leave every other session intact. Random cases come from a seeded generator: a failure
// names its seed and index so it can be reproduced.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import request from 'supertest'
import type { MemcacheStore, MemcacheStoreError } from '../lib/index.ts'
import { testApp } from './harness/app.ts'
import { seededRandom } from './harness/faults.ts'
import { RawClient } from './harness/raw.ts'
import { base64JsonSerializer, plainSession, randomId, readSession, useMemcached } from './harness/stores.ts'

const SEED = 20261125
const file = useMemcached()
const { stores } = file
let tried = 0

after(() => {
  console.log(`\nBad-input cases tried: ${tried} (seed ${SEED})`)
})

function randomString(random: () => number, maxLength: number): string {
  const length = Math.floor(random() * maxLength)
  let text = ''
  for (let i = 0; i < length; i++) {
    const pick = random()
    // Mostly ASCII, with control characters, Latin-1, astral characters and lone surrogates mixed in.
    const code =
      pick < 0.6
        ? 0x20 + Math.floor(random() * 95)
        : pick < 0.7
          ? Math.floor(random() * 0x20)
          : pick < 0.85
            ? 0x80 + Math.floor(random() * 0x780)
            : pick < 0.95
              ? 0x1f600 + Math.floor(random() * 0x50)
              : 0xd800 + Math.floor(random() * 0x800)
    text += String.fromCodePoint(code)
  }
  return text
}

async function guard(store: MemcacheStore): Promise<string> {
  const sid = randomId()
  await store.set(sid, plainSession({ guard: 'intact' }))
  return sid
}

async function assertIntact(store: MemcacheStore, sid: string, context: string): Promise<void> {
  const sess = await readSession(store, sid)
  assert.equal(sess?.guard, 'intact', `another session was disturbed by ${context}`)
}

describe('session IDs', () => {
  const fixed: Array<[string, string]> = [
    ['empty', ''],
    ['10 KB', 'a'.repeat(10_240)],
    ['Unicode', 'sessión-ユニコード-🙂'],
    ['control characters', 'abc\x00\x01\x1b[31m'],
    ['CRLF injection', 'abc\r\nflush_all\r\n'],
    ['percent-encoding', 's%3Aabc%20def%0D%0A'],
    ['whitespace', ' leading and trailing '],
    ['lone surrogate', 'x\udc00y'],
  ]
  const random = seededRandom(SEED)
  const generated = Array.from(
    { length: 300 },
    (_, i) => [`random #${i}`, randomString(random, i % 10 === 0 ? 400 : 40)] as [string, string],
  )

  it(`${fixed.length} fixed and ${generated.length} seeded random IDs: a clear outcome, never a throw, others intact`, async () => {
    const store = stores.create()
    const guardId = await guard(store)
    for (const [name, sid] of [...fixed, ...generated]) {
      tried++
      const context = `${name} (seed ${SEED})`
      const got = await store.get(sid)
      const stored = await store.set(sid, plainSession({ probe: true })).then(
        () => true,
        (err: MemcacheStoreError) => {
          assert.equal(err.code, 'EBADKEY', `${context}: ${err.message}`)
          return false
        },
      )
      if (stored) {
        assert.ok(Buffer.byteLength(store.prefix + sid) <= 250, context)
        assert.equal((await readSession(store, sid))?.probe, true, `${context} reads back`)
        await store.destroy(sid)
      } else {
        assert.equal(got, null, context)
        await assert.rejects(store.destroy(sid), context)
      }
      await assertIntact(store, guardId, context)
    }
  })
})

describe('cookies over HTTP', () => {
  it('forged, malformed and seeded random cookies: each request answered with a fresh session, others intact', async () => {
    const store = stores.create()
    const app = testApp(store)
    const owner = request.agent(app)
    await owner.post('/set').send({ secret: 'owner' }).expect(200)
    const random = seededRandom(SEED + 1)
    const cookies = [
      'connect.sid=',
      'connect.sid=s%3Aforged.signature',
      'connect.sid=s%3A',
      `connect.sid=s%3A${'a'.repeat(10_000)}.sig`,
      'connect.sid=%E0%A4%A',
      'connect.sid=s%3A%00%01%02.x',
      'connect.sid="quoted"',
      'connect.sid=s%3A%F0%9F%99%82.sig',
      ...Array.from({ length: 100 }, () => `connect.sid=${encodeURIComponent(randomString(random, 80).toWellFormed())}`),
      ...Array.from({ length: 50 }, () => `connect.sid=${randomString(random, 60).replace(/[^\x21-\x7e]/g, '')}`),
    ]
    for (const cookie of cookies) {
      tried++
      const res = await request(app).get('/read').set('Cookie', cookie)
      assert.equal(res.status, 200, `cookie ${JSON.stringify(cookie.slice(0, 60))}`)
      assert.equal(res.body.secret, null)
    }
    assert.equal((await owner.get('/read').expect(200)).body.secret, 'owner')
  })
})

describe('stored values that are not sessions', () => {
  it("random bytes, truncated JSON, wrong shapes, another application's value: no session, logged, nothing thrown", async () => {
    const lines: string[] = []
    const store = stores.create({ logger: { warn: (line) => lines.push(line) } })
    const guardId = await guard(store)
    const client = new RawClient(file.server.address)
    const random = seededRandom(SEED + 2)
    const full = JSON.stringify(plainSession({ user: 'ada' }))
    const values: Array<string | Buffer> = [
      '42',
      '[1,2,3]',
      '"a string"',
      'null',
      'true',
      '{}',
      '{"cookie":null}',
      '{"cookie":"yes"}',
      '{"cookie":[]}',
      '<session><user>ada</user></session>',
      'a:2:{s:4:"user";s:3:"ada";}',
      '',
      ...Array.from({ length: 20 }, (_, i) => full.slice(0, Math.floor((full.length * i) / 20))),
      ...Array.from({ length: 100 }, () =>
        Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256))),
      ),
    ]
    for (const [i, value] of values.entries()) {
      tried++
      const sid = `stored-${i}`
      await client.set(store.prefix + sid, value as string, { expires: 60 })
      assert.equal(await store.get(sid), null, `value #${i} (seed ${SEED + 2})`)
    }
    assert.ok(lines.length >= 1 && lines.every((line) => !/stored-\d+/.test(line)), 'logged, without whole session IDs')
    await assertIntact(store, guardId, 'unreadable values')
    client.close()
  })
})

/** An array nested `levels` deep. */
function nested(levels: number): unknown {
  let value: unknown = []
  for (let i = 1; i < levels; i++) value = [value]
  return value
}

const nonStringSerializer = {
  parse: JSON.parse,
  stringify: (s: unknown) => ((s as { weird?: boolean }).weird ? (42 as unknown as string) : JSON.stringify(s)),
}

describe('sessions memcached cannot hold', () => {
  const cases: Array<[string, () => Record<string, unknown>, string, { parse(text: string): unknown; stringify(s: unknown): string }?]> = [
    ['a BigInt', () => ({ big: 10n }), 'ESERIALIZE'],
    [
      'a circular reference',
      () => {
        const loop: Record<string, unknown> = {}
        loop.self = loop
        return { loop }
      },
      'ESERIALIZE',
    ],
    ['over the item limit', () => ({ blob: 'x'.repeat(2 * 1024 * 1024) }), 'ETOOLARGE'],
    ['a serializer returning a non-string', () => ({ weird: true }), 'ESERIALIZE', nonStringSerializer],
    ['nested 600 levels deep', () => ({ deep: nested(600) }), 'ESERIALIZE'],
    [
      'nested 600 levels deep, under a serializer whose text has no brackets',
      () => ({ deep: nested(600) }),
      'ESERIALIZE',
      base64JsonSerializer,
    ],
  ]
  for (const [name, fields, code, serializer] of cases) {
    it(`${name}: a clear error, and the stored session stays as it was`, async () => {
      tried++
      const store = stores.create(serializer ? { serializer } : {})
      const sid = randomId()
      await store.set(sid, plainSession({ v: 'before' }))
      await assert.rejects(store.set(sid, plainSession(fields())), (err: MemcacheStoreError) => {
        assert.equal(err.code, code, err.message)
        assert.ok(!err.message.includes(sid))
        return true
      })
      assert.equal((await readSession(store, sid))?.v, 'before')
    })
  }
})
