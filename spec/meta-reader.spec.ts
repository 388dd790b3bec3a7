// The meta protocol's framing, byte by byte and without a server: every reply memcached 1.6 sends
// to the store's mg/ms/md/mn requests (the lines below are what a fresh memcached 1.6.18 -B ascii
// sent, checked again by the one test at the end that starts one) is read as the same reply however
// the stream is cut into chunks, alone or pipelined; a read's value longer than maxItemSize is skipped
// unread (its trailing CRLF still checked) and answered as tooLarge, and the reply after it is read as
// usual; every reply that cannot be trusted (no request waiting, a wrong or missing O, a wrong or
// missing k, a code the command cannot get, a flag its code does not allow or given twice, an empty
// token, a value length that is not plain digits or that no memcached item can hold, a value not
// ended by CRLF, a CAS, TTL or number flag that is not a number, a line over 2048 bytes or ended by LF
// alone, garbage) is one violation and no reply, after which the reader reads nothing more; a reader
// is never left half-way through a reply; and `encode` writes exactly the lines memcached expects.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { metaProtocol } from '../lib/memcached/meta.ts'
import { type Command, MAX_VALUE_BYTES, type Reply } from '../lib/memcached/wire.ts'
import { MemcachedServer } from './harness/memcached.ts'
import {
  type Awaited,
  assertNothingYet,
  assertReadsAs,
  assertViolation,
  byteByByte,
  chunkings,
  cutAt,
  openReader,
  readChunks,
  reply,
  roundTrips,
  skipped,
} from './harness/wire-replies.ts'

/** The item size limit a store with the default maxItemSize gives its reader (1 MiB, memcached's default -I). */
const MAX_ITEM_SIZE = 1024 * 1024
const meta = metaProtocol(MAX_ITEM_SIZE)

const VALUE = '{"a":1}'
const value = (text: string) => Buffer.from(text)
const text = (s: string) => Buffer.from(s, 'latin1')

interface Exchange {
  name: string
  command: Command
  opaque: number
  /** The reply's bytes. */
  reply: string
  /** What the reader must make of them. */
  expect: Reply
}

/**
 * A session with a fresh `memcached -B ascii` 1.6.18, in this order: each request is the store's own
 * encoding of the command, each reply exactly what memcached sent back (CAS values count from 1 on
 * a fresh server). Before `get of a binary key`, another client stored "sess:bin" as a binary key
 * (`ms c2VzczpiaW4= 2 b T60`): memcached then echoes that key in base64 with a `b` flag. The test at
 * the end replays it all against a new memcached.
 */
const SESSION: readonly Exchange[] = [
  { name: 'mn', command: { name: 'noop', key: '' }, opaque: 1, reply: 'MN\r\n', expect: reply('ok') },
  { name: 'get miss', command: { name: 'get', key: 'sess:a' }, opaque: 2, reply: 'EN ksess:a O2\r\n', expect: reply('miss') },
  {
    name: 'gat miss',
    command: { name: 'gat', key: 'sess:a', expiry: 60 },
    opaque: 3,
    reply: 'EN ksess:a O3\r\n',
    expect: reply('miss'),
  },
  {
    name: 'touch miss',
    command: { name: 'touch', key: 'sess:a', expiry: 60 },
    opaque: 4,
    reply: 'EN ksess:a O4\r\n',
    expect: reply('miss'),
  },
  { name: 'delete miss', command: { name: 'delete', key: 'sess:a' }, opaque: 5, reply: 'NF O5\r\n', expect: reply('miss') },
  {
    name: 'replace of a missing key (NS)',
    command: { name: 'replace', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 6,
    reply: 'NS c0 O6\r\n',
    expect: reply('miss'),
  },
  {
    name: 'cas of a missing key (NF)',
    command: { name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 99n },
    opaque: 7,
    reply: 'NF c0 O7\r\n',
    expect: reply('miss'),
  },
  {
    name: 'set stored',
    command: { name: 'set', key: 'sess:a', value: value(VALUE), expiry: 60 },
    opaque: 8,
    reply: 'HD c1 O8\r\n',
    expect: reply('ok', { cas: 1n }),
  },
  {
    name: 'add of an existing key (NS)',
    command: { name: 'add', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 9,
    reply: 'NS c0 O9\r\n',
    expect: reply('exists'),
  },
  {
    name: 'add stored',
    command: { name: 'add', key: 'sess:b', value: value('hi'), expiry: 60 },
    opaque: 10,
    reply: 'HD c2 O10\r\n',
    expect: reply('ok', { cas: 2n }),
  },
  {
    name: 'replace stored',
    command: { name: 'replace', key: 'sess:b', value: value('ho'), expiry: 60 },
    opaque: 11,
    reply: 'HD c3 O11\r\n',
    expect: reply('ok', { cas: 3n }),
  },
  {
    name: 'cas that does not match (EX)',
    command: { name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 99n },
    opaque: 12,
    reply: 'EX c0 O12\r\n',
    expect: reply('exists'),
  },
  {
    name: 'get hit: VA, CAS, key, opaque, value',
    command: { name: 'get', key: 'sess:a' },
    opaque: 13,
    reply: `VA 7 c1 ksess:a O13\r\n${VALUE}\r\n`,
    expect: reply('ok', { value: VALUE, cas: 1n }),
  },
  {
    name: 'gat hit',
    command: { name: 'gat', key: 'sess:a', expiry: 120 },
    opaque: 14,
    reply: `VA 7 c1 ksess:a O14\r\n${VALUE}\r\n`,
    expect: reply('ok', { value: VALUE, cas: 1n }),
  },
  {
    name: 'touch found',
    command: { name: 'touch', key: 'sess:a', expiry: 120 },
    opaque: 15,
    reply: 'HD ksess:a O15\r\n',
    expect: reply('ok'),
  },
  {
    name: 'delete whose CAS does not match',
    command: { name: 'delete', key: 'sess:a', cas: 99n },
    opaque: 16,
    reply: 'EX O16\r\n',
    expect: reply('exists'),
  },
  { name: 'delete done', command: { name: 'delete', key: 'sess:a' }, opaque: 17, reply: 'HD O17\r\n', expect: reply('ok') },
  {
    name: 'set of an empty value',
    command: { name: 'set', key: 'sess:e', value: Buffer.alloc(0), expiry: 60 },
    opaque: 18,
    reply: 'HD c4 O18\r\n',
    expect: reply('ok', { cas: 4n }),
  },
  {
    name: 'get of an empty value: VA 0',
    command: { name: 'get', key: 'sess:e' },
    opaque: 19,
    reply: 'VA 0 c4 ksess:e O19\r\n\r\n',
    expect: reply('ok', { value: Buffer.alloc(0), cas: 4n }),
  },
  {
    name: 'set of a value over the item size (SERVER_ERROR, no O)',
    command: { name: 'set', key: 'sess:big', value: Buffer.alloc(2 * 1024 * 1024, 'a'), expiry: 60 },
    opaque: 20,
    reply: 'SERVER_ERROR object too large for cache\r\n',
    expect: reply('tooLarge', { message: 'object too large for cache' }),
  },
  { name: 'mn after it', command: { name: 'noop', key: '' }, opaque: 21, reply: 'MN\r\n', expect: reply('ok') },
  {
    name: 'get of a binary key: the key in base64 with b',
    command: { name: 'get', key: 'sess:bin' },
    opaque: 22,
    reply: 'VA 2 c5 kc2VzczpiaW4= b O22\r\nhi\r\n',
    expect: reply('ok', { value: 'hi', cas: 5n }),
  },
  {
    name: 'touch of a binary key',
    command: { name: 'touch', key: 'sess:bin', expiry: 60 },
    opaque: 23,
    reply: 'HD kc2VzczpiaW4= b O23\r\n',
    expect: reply('ok'),
  },
]

/** Where the binary key is stored in SESSION, by another client. */
const BINARY_KEY_AT = 21
const STORE_BINARY_KEY = `ms ${Buffer.from('sess:bin').toString('base64')} 2 b T60\r\nhi\r\n`

/**
 * Replies a plain memcached does not give these requests. Captured: memcached -Y answering a
 * connection that did not authenticate; a TTL the store does not ask for (`mg sess:b v t c k O24`).
 * Written here in memcached's format: its other SERVER_ERROR lines (proto_parser.c), flags in
 * another order than asked (the protocol allows it), CASes as long as 64 bits go, the largest
 * opaque the store writes, a key in UTF-8.
 */
const OTHERS: readonly Exchange[] = [
  {
    name: 'unauthenticated get (memcached -Y)',
    command: { name: 'get', key: 'sess:a' },
    opaque: 30,
    reply: 'CLIENT_ERROR unauthenticated\r\n',
    expect: reply('authError', { message: 'CLIENT_ERROR unauthenticated' }),
  },
  {
    name: 'unauthenticated set (memcached -Y)',
    command: { name: 'set', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 31,
    reply: 'CLIENT_ERROR unauthenticated\r\n',
    expect: reply('authError', { message: 'CLIENT_ERROR unauthenticated' }),
  },
  {
    name: 'out of memory storing (SERVER_ERROR)',
    command: { name: 'add', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 32,
    reply: 'SERVER_ERROR out of memory storing object\r\n',
    expect: reply('serverError', { message: 'out of memory storing object' }),
  },
  {
    name: 'out of memory writing a get reply (SERVER_ERROR)',
    command: { name: 'gat', key: 'sess:a', expiry: 60 },
    opaque: 33,
    reply: 'SERVER_ERROR out of memory writing get response\r\n',
    expect: reply('serverError', { message: 'out of memory writing get response' }),
  },
  {
    name: 'a TTL among the flags (t59)',
    command: { name: 'get', key: 'sess:b' },
    opaque: 24,
    reply: 'VA 2 t59 c3 ksess:b O24\r\nho\r\n',
    expect: reply('ok', { value: 'ho', cas: 3n }),
  },
  {
    name: 'no expiry (t-1) and flags in another order',
    command: { name: 'get', key: 'sess:b' },
    opaque: 25,
    reply: 'VA 2 O25 ksess:b t-1 c3\r\nho\r\n',
    expect: reply('ok', { value: 'ho', cas: 3n }),
  },
  {
    name: 'the largest CAS (2^64 - 1, 20 digits)',
    command: { name: 'set', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 34,
    reply: 'HD c18446744073709551615 O34\r\n',
    expect: reply('ok', { cas: 18446744073709551615n }),
  },
  {
    name: 'a 15-digit CAS',
    command: { name: 'get', key: 'sess:a' },
    opaque: 35,
    reply: 'VA 1 c999999999999999 ksess:a O35\r\nx\r\n',
    expect: reply('ok', { value: 'x', cas: 999999999999999n }),
  },
  {
    name: 'a 16-digit CAS',
    command: { name: 'get', key: 'sess:a' },
    opaque: 36,
    reply: 'VA 1 c9007199254740993 ksess:a O36\r\nx\r\n',
    expect: reply('ok', { value: 'x', cas: 9007199254740993n }),
  },
  {
    name: 'the largest opaque',
    command: { name: 'delete', key: 'sess:a' },
    opaque: 0xffffffff,
    reply: 'HD O4294967295\r\n',
    expect: reply('ok'),
  },
  {
    name: 'a key in UTF-8',
    command: { name: 'get', key: 'sess:é☃' },
    opaque: 37,
    reply: 'VA 1 c7 ksess:é☃ O37\r\nx\r\n',
    expect: reply('ok', { value: 'x', cas: 7n }),
  },
]

const awaitedOf = ({ command, opaque }: Exchange): Awaited => ({ command: command.name, key: command.key, opaque })
const bytesOf = (e: Exchange) => Buffer.from(e.reply)

function describeReply(r: Reply): string {
  return [r.status, r.value && `${r.value.length}-byte value`, r.cas && `CAS ${r.cas}`, r.message && JSON.stringify(r.message)]
    .filter(Boolean)
    .join(', ')
}

describe('meta replies memcached sends: the same reply however the bytes are cut', () => {
  for (const exchange of [...SESSION, ...OTHERS]) {
    it(`${exchange.name} (${JSON.stringify(exchange.reply.split('\r\n')[0])}) is read as ${describeReply(exchange.expect)}`, () => {
      assertReadsAs(meta, [awaitedOf(exchange)], bytesOf(exchange), [exchange.expect])
    })
  }

  it('the whole session pipelined in one stream gives every reply in order, wherever the stream is cut', () => {
    const all = [...SESSION, ...OTHERS]
    assertReadsAs(
      meta,
      all.map(awaitedOf),
      Buffer.concat(all.map(bytesOf)),
      all.map((e) => e.expect),
    )
  })

  it('replies split over three chunks at every pair of offsets: get hit, then set stored', () => {
    const pair = [SESSION[12], SESSION[7]]
    const bytes = Buffer.concat(pair.map(bytesOf))
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const chunks = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)].map((c) => Buffer.from(c))
        assert.deepEqual(
          readChunks(meta, pair.map(awaitedOf), chunks),
          pair.map((e) => ({ reply: e.expect })),
          `cut at ${a} and ${b}`,
        )
      }
    }
  })

  it('a SERVER_ERROR answers the oldest request, and the replies after it are still checked against theirs', () => {
    const exchanges = [SESSION[19], SESSION[12], OTHERS[2], SESSION[16]]
    assertReadsAs(
      meta,
      exchanges.map(awaitedOf),
      Buffer.concat(exchanges.map(bytesOf)),
      exchanges.map((e) => e.expect),
    )
  })
})

/** What each refusal's reason says (lib/memcached/meta.ts words them). */
const REASON = {
  unexpected: /no request waiting/,
  opaque: /out of order/,
  anotherKey: /another key/,
  notAllowed: /^".*" where the answer to \w+ was due$/,
  tooLong: /more than any memcached item can hold/,
  noCrlf: /not followed by CRLF/,
  longLine: /longer than/,
  cas: /CAS that is not a number/,
  ttl: /TTL that is not a number/,
  length: /value length that is not a number/,
  token: /an unexpected token/,
  numberFlag: /a flag that is not a number/,
  lfAlone: /LF alone/,
}

const GET: Awaited = { command: 'get', key: 'sess:a', opaque: 13 }
const GAT: Awaited = { command: 'gat', key: 'sess:a', opaque: 13 }
const TOUCH: Awaited = { command: 'touch', key: 'sess:a', opaque: 15 }
const SET: Awaited = { command: 'set', key: 'sess:a', opaque: 8 }
const DELETE: Awaited = { command: 'delete', key: 'sess:a', opaque: 17 }
const NOOP: Awaited = { command: 'noop', key: '', opaque: 1 }
const BINARY_KEY: Awaited = { command: 'get', key: 'sess:bin', opaque: 22 }
/** A valid reply for the request queued after the refused one: the broken reader must ignore it. */
const NEXT = { awaited: { command: 'delete', key: 'sess:a', opaque: 99 } as Awaited, bytes: text('HD O99\r\n') }

describe('meta: a bare EN, what memcached before 1.6.18 sends for a miss without echoing O or k, answers the oldest request', () => {
  it('a get, gat or touch answered by a bare EN is a miss, however cut', () => {
    for (const awaited of [
      { command: 'get', key: 'sess:a', opaque: 2 },
      { command: 'gat', key: 'sess:a', opaque: 3 },
      { command: 'touch', key: 'sess:a', opaque: 4 },
    ] as Awaited[]) {
      assertReadsAs(meta, [awaited], text('EN\r\n'), [reply('miss')])
    }
  })

  it('bare ENs pipelined among hits, misses that echo O and k, writes and a no-op: each answers the oldest request, and the rest are still checked', () => {
    const exchanges = [SESSION[1], SESSION[12], SESSION[7], SESSION[2], SESSION[0], SESSION[3], SESSION[13]]
    const bare = new Set([SESSION[1], SESSION[2], SESSION[3]])
    const stream = Buffer.concat(exchanges.map((e) => (bare.has(e) ? text('EN\r\n') : bytesOf(e))))
    assertReadsAs(
      meta,
      exchanges.map(awaitedOf),
      stream,
      exchanges.map((e) => e.expect),
    )
    // The reply after a bare EN with the wrong O is still refused.
    for (const { label, chunks } of chunkings(text('EN\r\nVA 7 c1 ksess:a O14\r\n{"a":1}\r\n'))) {
      const events = readChunks(meta, [SESSION[1], SESSION[12]].map(awaitedOf), chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: reply('miss') }, label)
      assert.ok('violation' in events[1] && REASON.opaque.test(events[1].violation), label)
    }
  })

  it('an EN with tokens must still carry the right O and k', () => {
    assertViolation(meta, [GET], text('EN O13\r\n'), REASON.anotherKey, NEXT)
    assertViolation(meta, [GET], text('EN ksess:a\r\n'), REASON.opaque, NEXT)
    assertViolation(meta, [GET], text('EN ksess:a O14\r\n'), REASON.opaque, NEXT)
    assertViolation(meta, [GET], text('EN ksess:b O13\r\n'), REASON.anotherKey, NEXT)
  })
})

describe('meta replies that cannot be trusted: one violation, no reply, nothing read after it', () => {
  it('a reply with no request waiting for it', () => {
    for (const line of ['MN\r\n', 'HD O1\r\n', 'EN ksess:a O2\r\n', 'VA 2 c1 ksess:a O13\r\nhi\r\n', 'SERVER_ERROR out of memory\r\n']) {
      assertViolation(meta, [], text(line), REASON.unexpected)
    }
  })

  it('a reply after the last request was answered: the first is read, the extra one is a violation', () => {
    for (const { label, chunks } of chunkings(text('HD O17\r\nHD O17\r\n'))) {
      const events = readChunks(meta, [DELETE], chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: reply('ok') }, label)
      assert.ok('violation' in events[1] && REASON.unexpected.test(events[1].violation), label)
    }
  })

  it("an O that is not the request's: the next one's, the previous one's, another number, not a number", () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD c1 O9\r\n'],
      [SET, 'HD c1 O7\r\n'],
      [SET, 'HD c1 O80\r\n'],
      [SET, 'HD c1 O\r\n'],
      [SET, 'HD c1 O8x\r\n'],
      [SET, 'HD c1 O-8\r\n'],
      [SET, 'HD c1 Oabc\r\n'],
      [SET, `HD c1 O${8 + 2 ** 32}\r\n`],
      [SET, 'NS c0 O9\r\n'],
      [GET, `VA 7 c1 ksess:a O14\r\n${VALUE}\r\n`],
      [GET, 'EN ksess:a O12\r\n'],
      [GAT, `VA 7 c1 ksess:a O1\r\n${VALUE}\r\n`],
      [TOUCH, 'HD ksess:a O16\r\n'],
      [TOUCH, 'EN ksess:a O14\r\n'],
      [DELETE, 'HD O18\r\n'],
      [DELETE, 'NF O1\r\n'],
      [DELETE, 'EX O16\r\n'],
      // Among other flags (a binary key, a TTL, the largest CAS): the same check.
      [BINARY_KEY, 'VA 2 c5 kc2VzczpiaW4= b O21\r\nhi\r\n'],
      [GET, 'VA 2 t59 c1 ksess:a O14\r\nhi\r\n'],
      [TOUCH, 'HD t5 ksess:a O16\r\n'],
      [SET, 'HD c18446744073709551615 O9\r\n'],
      // An O with more digits than any opaque (16).
      [SET, 'HD c1 O0000000000000008\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.opaque, NEXT)
  })

  it('a reply without O (except SERVER_ERROR and CLIENT_ERROR, which memcached sends without one)', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD c1\r\n'],
      [SET, 'HD\r\n'],
      [SET, 'NS c0\r\n'],
      [GET, `VA 7 c1 ksess:a\r\n${VALUE}\r\n`],
      [GET, 'EN ksess:a\r\n'],
      [TOUCH, 'HD ksess:a\r\n'],
      [DELETE, 'HD\r\n'],
      [DELETE, 'NF\r\n'],
      [BINARY_KEY, 'VA 2 c5 kc2VzczpiaW4= b\r\nhi\r\n'],
      [GET, 'VA 2 t59 ksess:a\r\nhi\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.opaque, NEXT)
  })

  it('a swapped pair: each reply carries the other request’s O', () => {
    const awaited: Awaited[] = [
      { command: 'get', key: 'sess:a', opaque: 1 },
      { command: 'get', key: 'sess:b', opaque: 2 },
    ]
    assertViolation(meta, awaited, text('VA 1 c2 ksess:b O2\r\nB\r\nVA 1 c1 ksess:a O1\r\nA\r\n'), REASON.opaque)
  })

  it('a k that is not the requested key (hit or miss, get, gat or touch, plain or base64)', () => {
    const cases: Array<[Awaited, string]> = [
      [GET, `VA 7 c1 ksess:b O13\r\n${VALUE}\r\n`],
      [GET, `VA 7 c1 ksess:aa O13\r\n${VALUE}\r\n`],
      [GET, `VA 7 c1 ksess: O13\r\n${VALUE}\r\n`],
      [GET, `VA 7 c1 k O13\r\n${VALUE}\r\n`],
      [GET, `VA 7 c1 kSESS:A O13\r\n${VALUE}\r\n`],
      [GET, 'EN ksess:b O13\r\n'],
      [GAT, `VA 7 c1 ksess:b O13\r\n${VALUE}\r\n`],
      [GAT, 'EN ksess:b O13\r\n'],
      [TOUCH, 'HD ksess:b O15\r\n'],
      [TOUCH, 'EN ksess:b O15\r\n'],
      // Lines read in full: a TTL, a base64 key of another key, the base64 of the key without b.
      [GET, 'VA 2 t59 c1 ksess:b O13\r\nhi\r\n'],
      [BINARY_KEY, `VA 2 c5 k${Buffer.from('sess:bix').toString('base64')} b O22\r\nhi\r\n`],
      [BINARY_KEY, 'VA 2 c5 kc2VzczpiaW4= O22\r\nhi\r\n'],
      [BINARY_KEY, 'EN kc2VzczpiaW4= O22\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.anotherKey, NEXT)
  })

  it('a get, gat or touch reply without the k it asked for', () => {
    const cases: Array<[Awaited, string]> = [
      [GET, `VA 7 c1 O13\r\n${VALUE}\r\n`],
      [GET, 'EN O13\r\n'],
      [GAT, 'EN O13\r\n'],
      [TOUCH, 'HD O15\r\n'],
      [TOUCH, 'EN O15\r\n'],
      [GET, 'VA 2 t59 c1 O13\r\nhi\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.anotherKey, NEXT)
  })

  it('a code the command cannot get (VA for a set, HD for a get, anything for mn but MN, text-protocol replies)', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'VA 2 c1 O8\r\nhi\r\n'],
      [SET, 'EN O8\r\n'],
      [SET, 'MN\r\n'],
      [GET, 'HD c1 ksess:a O13\r\n'],
      [GET, 'NF ksess:a O13\r\n'],
      [GET, 'NS ksess:a O13\r\n'],
      [GET, 'MN\r\n'],
      [GAT, 'HD ksess:a O13\r\n'],
      [TOUCH, 'VA 2 ksess:a O15\r\nhi\r\n'],
      [TOUCH, 'EX ksess:a O15\r\n'],
      [DELETE, 'NS O17\r\n'],
      [DELETE, 'EN O17\r\n'],
      [DELETE, 'VA 2 O17\r\nhi\r\n'],
      [NOOP, 'HD O1\r\n'],
      [NOOP, 'EN\r\n'],
      [NOOP, 'MX\r\n'],
      // What memcached says to a command it does not know, or to a malformed one; text-protocol replies.
      [GET, 'ERROR\r\n'],
      [SET, 'CLIENT_ERROR bad data chunk\r\n'],
      [GET, 'CLIENT_ERROR bad command line format\r\n'],
      [GET, 'END\r\n'],
      [SET, 'STORED\r\n'],
      [GET, 'VALUE sess:a 0 2\r\nhi\r\nEND\r\n'],
      [SET, 'hd c1 O8\r\n'],
      [SET, 'HDO8\r\n'],
      [SET, ' HD O8\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.notAllowed, NEXT)
  })

  it('garbage: control bytes, an empty line, a binary-protocol reply, an HTTP reply', () => {
    assertViolation(meta, [GET], Buffer.concat([Buffer.from([0, 1, 2, 0xff]), text('garbage\r\n')]), REASON.notAllowed, NEXT)
    assertViolation(meta, [GET], text('\r\n'), REASON.notAllowed, NEXT)
    const binaryReply = Buffer.from('810c000604000000000000110000000d000000000000000100000000736573733a617b2261223a317d', 'hex')
    assertViolation(meta, [GET], Buffer.concat([binaryReply, text('\r\n')]), REASON.notAllowed, NEXT)
    assertViolation(meta, [GET], text('HTTP/1.1 400 Bad Request\r\n\r\n'), REASON.notAllowed, NEXT)
  })

  it('a VA length no memcached item can hold (over 1 GiB): refused from the line alone, whatever maxItemSize', () => {
    for (const protocol of [meta, metaProtocol(64)]) {
      assertViolation(protocol, [GET], text(`VA ${MAX_VALUE_BYTES + 1} c1 ksess:a O13\r\n`), REASON.tooLong, NEXT)
      assertViolation(protocol, [GET], text(`VA ${MAX_VALUE_BYTES + 1} c1 ksess:a O13\r\nxxxx`), REASON.tooLong, NEXT)
      assertViolation(protocol, [GET], text('VA 4294967296 c1 ksess:a O13\r\n'), REASON.tooLong, NEXT)
      assertViolation(protocol, [GAT], text(`VA ${MAX_VALUE_BYTES + 1} ksess:a O13 t5\r\n`), REASON.tooLong, NEXT)
      assertViolation(protocol, [GET], text('VA 999999999999999 c1 ksess:a O13\r\n'), REASON.tooLong, NEXT)
    }
    // Past 15 digits: no number the reader reads.
    assertViolation(meta, [GET], text('VA 99999999999999999999 c1 ksess:a O13\r\n'), REASON.length, NEXT)
  })

  it('a VA length of exactly 1 GiB is not refused: its value is being skipped, and nothing is delivered before its bytes pass', () => {
    assertNothingYet(meta, [GET], text(`VA ${MAX_VALUE_BYTES} c1 ksess:a O13\r\n`))
    assertNothingYet(metaProtocol(64), [GET], text(`VA ${MAX_VALUE_BYTES} c1 ksess:a O13\r\nxxxx`))
  })
  it('a value not followed by CRLF where its announced length ends', () => {
    for (const tail of ['hiX\r\n', 'hi\n\r', 'hi\r\r', 'hi\n\n', 'hi  ']) {
      assertViolation(meta, [GET], text(`VA 2 c1 ksess:a O13\r\n${tail}`), REASON.noCrlf, NEXT)
    }
    // One byte more announced than sent: the value takes the CR, the LF and the next line's first bytes do not make a CRLF.
    assertViolation(meta, [GET, DELETE], text('VA 3 c1 ksess:a O13\r\nhi\r\nHD O17\r\n'), REASON.noCrlf)
    // An empty value without its CRLF.
    assertViolation(meta, [GET, DELETE], text('VA 0 c1 ksess:a O13\r\nHD O17\r\n'), REASON.noCrlf)
  })

  it('a line that grows past 2048 bytes without ending', () => {
    const long = text(`HD O8 ${'x'.repeat(2100)}`)
    assertViolation(meta, [SET], long, REASON.longLine, NEXT)
    assertViolation(meta, [GET], Buffer.alloc(3000, 0xff), REASON.longLine, NEXT)
    // A key echoed with no end in sight, cut where the reader has more than 2048 bytes and no CRLF.
    const endless = text(`VA 2 c1 k${'a'.repeat(2100)} O13\r\nhi\r\n`)
    for (const at of [2049 + 1, 2100, 2110]) {
      const reader = openReader(meta, [GET, NEXT.awaited])
      for (const chunk of [...cutAt(endless, at), NEXT.bytes]) reader.read(chunk)
      assert.equal(reader.events.length, 1, `cut at ${at}`)
      assert.ok('violation' in reader.events[0] && REASON.longLine.test(reader.events[0].violation), `cut at ${at}`)
    }
  })

  it('a line of 2048 bytes still waiting for its CRLF is waited for, and read once it comes', () => {
    const key = 'k'.repeat(2048 - 'VA 1 k O13'.length)
    const line = `VA 1 k${key} O13`
    assert.equal(line.length, 2048)
    const awaited: Awaited = { command: 'get', key, opaque: 13 }
    assert.deepEqual(readChunks(meta, [awaited], [text(line), text('\r\nx\r\n')]), [{ reply: reply('ok', { value: 'x' }) }])
    assert.deepEqual(readChunks(meta, [awaited], [text(`${line}\r\nx\r\n`)]), [{ reply: reply('ok', { value: 'x' }) }])
  })

  it('a CAS that is not a number', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD cabc O8\r\n'],
      [SET, 'HD c-1 O8\r\n'],
      [SET, 'HD c1.5 O8\r\n'],
      [SET, 'HD c0x1f O8\r\n'],
      [SET, 'HD c123456789012345678901 O8\r\n'],
      [GET, 'VA 2 cnot-a-cas t-1 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 c1e3 ksess:a O13\r\nhi\r\n'],
      // Above 2^64 - 1: 2^64, and the largest 20-digit number.
      [SET, 'HD c18446744073709551616 O8\r\n'],
      [SET, 'HD c99999999999999999999 O8\r\n'],
      [GET, 'VA 2 c18446744073709551616 ksess:a O13\r\nhi\r\n'],
      [TOUCH, 'HD c18446744073709551616 ksess:a O15\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.cas, NEXT)
  })

  it('a c with no digits at all is not a CAS (read as 0, it would turn the next save into an unconditional set)', () => {
    assertViolation(meta, [SET], text('HD c O8\r\n'), REASON.cas, NEXT)
    assertViolation(meta, [GET], text('VA 2 c ksess:a O13\r\nhi\r\n'), REASON.cas, NEXT)
  })

  it('a TTL that is not a number', () => {
    const cases: Array<[Awaited, string]> = [
      [GET, 'VA 2 c1 tsoon ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 t ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 t1.5 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 t--1 ksess:a O13\r\nhi\r\n'],
      [TOUCH, 'HD t- ksess:a O15\r\n'],
      [TOUCH, 'HD t999999999999 ksess:a O15\r\n'],
      [TOUCH, 'HD t-99999999999 ksess:a O15\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.ttl, NEXT)
  })

  it('a TTL memcached cannot send: 11 digits (it writes an unsigned 32-bit number), or negative other than -1', () => {
    assertViolation(meta, [TOUCH], text('HD t99999999999 ksess:a O15\r\n'), REASON.ttl, NEXT)
    assertViolation(meta, [GET], text('VA 2 t-5 ksess:a O13\r\nhi\r\n'), REASON.ttl, NEXT)
  })

  it('a VA length that is not a number', () => {
    for (const length of ['two', '-1', '2x', '-', 'NaN', 'Infinity']) {
      assertViolation(meta, [GET], text(`VA ${length} c1 ksess:a O13\r\nhi\r\n`), REASON.length, NEXT)
    }
  })

  it('a VA length in another notation than decimal digits (0x2, +2, 2.0, 2e0, 02.0, a space, empty)', () => {
    for (const length of ['0x2', '+2', '2.0', '2e0', '02.0', ' 2', '']) {
      assertViolation(meta, [GET], text(`VA ${length} c1 ksess:a O13\r\nhi\r\n`), REASON.length, NEXT)
    }
  })
  it('the 2048-byte line limit does not depend on where the line is cut: a longer complete line is refused, a 2048-byte one read', () => {
    // Complete lines of 2106 and 2049 bytes, however cut (before their CRLF, in it, after it).
    assertViolation(meta, [SET], text(`HD O8 ${'x'.repeat(2100)}\r\n`), REASON.longLine, NEXT)
    const key = 'k'.repeat(2048 - 'VA 1 k O13'.length)
    assertViolation(meta, [{ command: 'get', key: `${key}k`, opaque: 13 }], text(`VA 1 k${key}k O13\r\nx\r\n`), REASON.longLine, NEXT)
    // A 2048-byte line is read however cut, its CR and LF in different chunks included.
    assertReadsAs(meta, [{ command: 'get', key, opaque: 13 }], text(`VA 1 k${key} O13\r\nx\r\n`), [reply('ok', { value: 'x' })])
  })
  it('a flag given twice, even with the same value or the last one right (O, k, c, b, t, f, s, W)', () => {
    const cases: Array<[Awaited, string, RegExp]> = [
      [SET, 'HD O8 O8\r\n', REASON.token],
      [SET, 'HD O8 O6\r\n', REASON.token],
      // The first O is compared at once: a wrong one is out of order.
      [SET, 'HD O6 O8\r\n', REASON.opaque],
      [GET, 'EN ksess:b ksess:a O13\r\n', REASON.token],
      [GET, 'EN ksess:a ksess:a O13\r\n', REASON.token],
      [GET, 'VA 2 ksess:a c1 ksess:a O13\r\nhi\r\n', REASON.token],
      [SET, 'HD c1 c1 O8\r\n', REASON.token],
      [SET, 'HD c1 O8 c2\r\n', REASON.token],
      [BINARY_KEY, 'VA 2 c5 kc2VzczpiaW4= b b O22\r\nhi\r\n', REASON.token],
      [GET, 'VA 2 t5 t5 ksess:a O13\r\nhi\r\n', REASON.token],
      [GET, 'VA 2 f0 ksess:a f0 O13\r\nhi\r\n', REASON.token],
      [TOUCH, 'HD s2 s2 ksess:a O15\r\n', REASON.token],
      [GAT, 'VA 2 W W ksess:a O13\r\nhi\r\n', REASON.token],
    ]
    for (const [awaited, line, reason] of cases) assertViolation(meta, [awaited], text(line), reason, NEXT)
  })

  it('an O with leading zeros is read as its number: O08 answers the request sent with O8', () => {
    assertReadsAs(meta, [SET], text('HD c1 O08\r\n'), [reply('ok', { cas: 1n })])
    assertReadsAs(meta, [GET], text('VA 2 ksess:a O0013\r\nhi\r\n'), [reply('ok', { value: 'hi' })])
    assertViolation(meta, [SET], text('HD c1 O080\r\n'), REASON.opaque, NEXT)
  })
  it('a flag outside what its command and code allow: c, t, f, s, W on a miss; t, f, s, W, X, Z on a write; c, t on a delete; request flags on a hit', () => {
    const ADD: Awaited = { command: 'add', key: 'sess:a', opaque: 8 }
    const CAS: Awaited = { command: 'cas', key: 'sess:a', opaque: 8 }
    const REPLACE: Awaited = { command: 'replace', key: 'sess:a', opaque: 8 }
    const cases: Array<[Awaited, string]> = [
      // EN (a read's or touch's miss) carries O, k and b only.
      [GET, 'EN c1 ksess:a O13\r\n'],
      [GET, 'EN ksess:a O13 c0\r\n'],
      [GAT, 'EN t-1 ksess:a O13\r\n'],
      [TOUCH, 'EN f0 ksess:a O15\r\n'],
      [GET, 'EN s2 ksess:a O13\r\n'],
      [GAT, 'EN W ksess:a O13\r\n'],
      // A write's HD, NS, EX, NF carry O, c, k and b only.
      [SET, 'HD t5 c1 O8\r\n'],
      [SET, 'HD c1 O8 t-1\r\n'],
      [ADD, 'HD c1 f0 O8\r\n'],
      [ADD, 'NS c0 s2 O8\r\n'],
      [CAS, 'EX c0 W O8\r\n'],
      [CAS, 'NF c0 X O8\r\n'],
      [REPLACE, 'HD c2 Z O8\r\n'],
      // A delete's HD, NF, EX carry O, k and b only.
      [DELETE, 'HD c1 O17\r\n'],
      [DELETE, 'NF t-1 O17\r\n'],
      [DELETE, 'EX c0 O17\r\n'],
      // Flags no reply carries (the request's v, q, T, N, E) or that the store never asks for (h, l).
      [GET, 'VA 2 v c1 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 c1 ksess:a O13 q\r\nhi\r\n'],
      [GAT, 'VA 2 c1 T60 ksess:a O13\r\nhi\r\n'],
      [GAT, 'VA 2 c1 N30 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 c1 h0 ksess:a O13\r\nhi\r\n'],
      [TOUCH, 'HD l5 ksess:a O15\r\n'],
      [SET, 'HD c1 E5 O8\r\n'],
      // Case matters; so do bytes that are no flag at all.
      [SET, 'HD C1 O8\r\n'],
      [SET, 'HD c1 o8\r\n'],
      [GET, 'VA 2 c1 Ksess:a O13\r\nhi\r\n'],
      [SET, 'HD c1 O8 \x00\r\n'],
      [SET, 'HD \xff O8\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.token, NEXT)
  })

  it('every flag its code allows is read: O k b c t f s W X Z on a hit or a touch, O c k b on a write, O k b on a miss or a delete', () => {
    const b64 = Buffer.from('sess:a').toString('base64')
    const cases: Array<[Awaited, string, Reply]> = [
      [GET, 'VA 2 s2 f0 t-1 c9 W X Z ksess:a O13\r\nhi\r\n', reply('ok', { value: 'hi', cas: 9n })],
      [GAT, `VA 2 O13 b k${b64} c9 t59\r\nhi\r\n`, reply('ok', { value: 'hi', cas: 9n })],
      [TOUCH, 'HD t59 c9 f0 s7 W X Z ksess:a O15\r\n', reply('ok', { cas: 9n })],
      [GET, `EN b O13 k${b64}\r\n`, reply('miss')],
      [SET, 'HD O8 c9 ksess:a\r\n', reply('ok', { cas: 9n })],
      [{ ...SET, command: 'add' }, 'NS c0 ksess:a O8\r\n', reply('exists')],
      [DELETE, 'HD ksess:a O17\r\n', reply('ok')],
      [DELETE, 'NF ksess:a O17\r\n', reply('miss')],
    ]
    for (const [awaited, line, expected] of cases) assertReadsAs(meta, [awaited], text(line), [expected])
  })

  it('a flag that takes no token with one attached: b, W, X, Z', () => {
    const cases: Array<[Awaited, string]> = [
      [BINARY_KEY, 'VA 2 c5 kc2VzczpiaW4= b1 O22\r\nhi\r\n'],
      [BINARY_KEY, 'EN kc2VzczpiaW4= bb O22\r\n'],
      [GET, 'VA 2 c1 W1 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 c1 X0 ksess:a O13\r\nhi\r\n'],
      [TOUCH, 'HD Zx ksess:a O15\r\n'],
      [SET, 'HD c1 bb O8\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.token, NEXT)
  })

  it('an empty token: two spaces between flags, after the code, after the value length', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD  O8\r\n'],
      [SET, 'HD c1  O8\r\n'],
      [GET, 'VA 2  c1 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 c1 ksess:a  O13\r\nhi\r\n'],
      [GET, 'EN  ksess:a O13\r\n'],
      [DELETE, 'NF O17  ksess:a\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.token, NEXT)
  })

  it('a line ending in a space (memcached never writes one)', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD O8 \r\n'],
      [GET, 'VA 2 c1 ksess:a O13 \r\nhi\r\n'],
      [GET, 'EN ksess:a O13 \r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), /ending in a space/, NEXT)
  })

  it('client flags (f) or a size (s) that are not plain digits', () => {
    const cases: Array<[Awaited, string]> = [
      [GET, 'VA 2 f-1 ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 fx ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 f ksess:a O13\r\nhi\r\n'],
      [GET, 'VA 2 f0x1 ksess:a O13\r\nhi\r\n'],
      [GAT, 'VA 2 s2.0 ksess:a O13\r\nhi\r\n'],
      [GAT, 'VA 2 s ksess:a O13\r\nhi\r\n'],
      [TOUCH, 'HD s+2 ksess:a O15\r\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.numberFlag, NEXT)
  })

  it('a line ended by LF alone (memcached ends every line with CRLF), complete or still waiting for more', () => {
    const cases: Array<[Awaited, string]> = [
      [SET, 'HD c1 O8\n'],
      [SET, 'HD c1 O8\nHD c1 O8\r\n'],
      [NOOP, 'MN\n'],
      [GET, 'EN\n'],
      [GET, 'VA 2 c1 ksess:a O13\nhi\r\n'],
      [GET, 'SERVER_ERROR out of memory\n'],
      [SET, '\n'],
    ]
    for (const [awaited, line] of cases) assertViolation(meta, [awaited], text(line), REASON.lfAlone, NEXT)
  })

  it('CLIENT_ERROR is a reply only when it is about authentication; any other CLIENT_ERROR, and ERROR, are violations', () => {
    for (const line of ['CLIENT_ERROR unauthenticated', 'CLIENT_ERROR authentication failure', 'CLIENT_ERROR Authentication required']) {
      assertReadsAs(meta, [GET], text(`${line}\r\n`), [reply('authError', { message: line })])
    }
    for (const line of ['CLIENT_ERROR bad data chunk', 'CLIENT_ERROR line too long', 'CLIENT_ERROR', 'ERROR', 'ERROR unauthenticated']) {
      assertViolation(meta, [GET], text(`${line}\r\n`), REASON.notAllowed, NEXT)
      assertViolation(meta, [SET], text(`${line}\r\n`), REASON.notAllowed, NEXT)
    }
  })

  it('a bare EN answers only a read or a touch: for a write, a delete or a no-op it is a violation; EN with a lone space is not bare', () => {
    for (const awaited of [SET, DELETE, NOOP, { ...SET, command: 'add' } as Awaited]) {
      assertViolation(meta, [awaited], text('EN\r\n'), REASON.notAllowed, NEXT)
    }
    assertViolation(meta, [GET], text('EN \r\n'), /ending in a space/, NEXT)
  })

  it('the echoed k is compared as bytes: bytes that decode to the requested key as UTF-8 (U+FFFD, Latin-1) are another key, plain or base64', () => {
    const replacement: Awaited = { command: 'get', key: 'sess:\ufffd', opaque: 13 }
    const invalid = Buffer.from('sess:\xff', 'latin1')
    const lines = [
      Buffer.concat([text('VA 2 c1 k'), invalid, text(' O13\r\nhi\r\n')]),
      Buffer.concat([text('EN k'), invalid, text(' O13\r\n')]),
      text(`VA 2 c1 k${invalid.toString('base64')} b O13\r\nhi\r\n`),
    ]
    for (const bytes of lines) assertViolation(meta, [replacement], bytes, REASON.anotherKey, NEXT)
    assertViolation(meta, [{ command: 'get', key: 'sess:é', opaque: 13 }], text('EN ksess:\xe9 O13\r\n'), REASON.anotherKey, NEXT)
    // The same keys as their UTF-8 bytes are read.
    assertReadsAs(meta, [replacement], Buffer.from('EN ksess:\ufffd O13\r\n'), [reply('miss')])
    assertReadsAs(meta, [{ command: 'get', key: 'sess:é', opaque: 13 }], Buffer.from('EN ksess:é O13\r\n'), [reply('miss')])
  })

  it('a violation after good replies: those are delivered, the bad one is not, and nothing after it is read', () => {
    const good = [SESSION[0], SESSION[7], SESSION[12]]
    const stream = Buffer.concat([...good.map(bytesOf), text('HD O6\r\n'), text('HD O17\r\nHD O17\r\n')])
    const awaited = [...good.map(awaitedOf), { ...DELETE, opaque: 5 }, DELETE]
    for (const { label, chunks } of chunkings(stream)) {
      const events = readChunks(meta, awaited, chunks)
      assert.deepEqual(
        events.slice(0, 3),
        good.map((e) => ({ reply: e.expect })),
        label,
      )
      assert.equal(events.length, 4, `${label}: ${events.length} events`)
      assert.ok('violation' in events[3] && REASON.opaque.test(events[3].violation), label)
    }
  })
})

describe("meta: a read's value over maxItemSize is skipped unread, its CRLF checked, answered tooLarge, and the connection reads on", () => {
  const LIMIT = 64
  const small = metaProtocol(LIMIT)
  /** One byte over the limit, and full of what a reader must not take for replies. */
  const OVER = '\r\nHD O17\r\nVA 5 c1 ksess:a O13\r\nEN\r\nMN\r\n'.padEnd(LIMIT + 1, 'x')
  const line = (length: number, flags = 'c1 ksess:a O13') => `VA ${length} ${flags}\r\n`
  const overHit = `${line(LIMIT + 1)}${OVER}\r\n`

  it('a get hit one byte over maxItemSize, then a delete reply: tooLarge naming both sizes (no value, no CAS), then HD; whole, at every cut, byte by byte', () => {
    assert.equal(OVER.length, LIMIT + 1)
    assertReadsAs(small, [GET, DELETE], text(`${overHit}HD O17\r\n`), [skipped(LIMIT + 1, LIMIT), reply('ok')])
  })

  it('a gat hit likewise, its flags in any order (t, f, s, W); a value exactly at maxItemSize is still read whole', () => {
    const flags = 't59 f0 W ksess:a O13 c9 s65'
    assertReadsAs(small, [GAT, DELETE], text(`${line(LIMIT + 1, flags)}${OVER}\r\nHD O17\r\n`), [skipped(LIMIT + 1, LIMIT), reply('ok')])
    const atLimit = OVER.slice(0, LIMIT)
    assertReadsAs(small, [GAT, DELETE], text(`${line(LIMIT)}${atLimit}\r\nHD O17\r\n`), [
      reply('ok', { value: atLimit, cas: 1n }),
      reply('ok'),
    ])
  })

  it('skipped values back to back and between hits, misses, a binary key and writes, pipelined: every reply in order, however cut', () => {
    const awaited: Awaited[] = [
      { command: 'get', key: 'sess:1', opaque: 1 },
      { command: 'gat', key: 'sess:2', opaque: 2 },
      { command: 'get', key: 'sess:3', opaque: 3 },
      { command: 'get', key: 'sess:bin', opaque: 4 },
      { command: 'get', key: 'sess:5', opaque: 5 },
      { command: 'set', key: 'sess:5', opaque: 6 },
      { command: 'noop', key: '', opaque: 7 },
      { command: 'get', key: 'sess:8', opaque: 8 },
    ]
    const big = 'b'.repeat(200)
    const stream = text(
      [
        `${line(LIMIT + 1, 'c1 ksess:1 O1')}${OVER}\r\n`,
        `${line(200, 'ksess:2 O2 c2')}${big}\r\n`,
        'EN ksess:3 O3\r\n',
        `${line(LIMIT + 1, 'c4 kc2VzczpiaW4= b O4')}${OVER}\r\n`,
        `${line(2, 'c5 ksess:5 O5')}v5\r\n`,
        'HD c6 O6\r\n',
        'MN\r\n',
        'EN\r\n',
      ].join(''),
    )
    assertReadsAs(small, awaited, stream, [
      skipped(LIMIT + 1, LIMIT),
      skipped(200, LIMIT),
      reply('miss'),
      skipped(LIMIT + 1, LIMIT),
      reply('ok', { value: 'v5', cas: 5n }),
      reply('ok', { cas: 6n }),
      reply('ok'),
      reply('miss'),
    ])
  })

  it('a skipped hit and the reply after it, split over three chunks at every pair of offsets', () => {
    const bytes = text(`${overHit}HD O17\r\n`)
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const chunks = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)].map((c) => Buffer.from(c))
        assert.deepEqual(
          readChunks(small, [GET, DELETE], chunks),
          [{ reply: skipped(LIMIT + 1, LIMIT) }, { reply: reply('ok') }],
          `cut at ${a} and ${b}`,
        )
      }
    }
  })

  it('a value of 1 MiB + 1 byte under the default maxItemSize, skipped across 64 KiB chunks: the next reply read in the last chunk or in a later one', () => {
    const big = Buffer.alloc(MAX_ITEM_SIZE + 1, 'x')
    big.write('\r\nHD O4\r\n', 1000)
    const head = text(`VA ${big.length} c5 ksess:big O3\r\n`)
    const reply1 = Buffer.concat([head, big, text('\r\n')])
    const stream = Buffer.concat([reply1, text('MN\r\n')])
    const awaited: Awaited[] = [
      { command: 'gat', key: 'sess:big', opaque: 3 },
      { command: 'noop', key: '', opaque: 4 },
    ]
    const expected = [{ reply: skipped(MAX_ITEM_SIZE + 1, MAX_ITEM_SIZE) }, { reply: reply('ok') }]
    const every = (data: Buffer, size: number) => {
      const chunks: Buffer[] = []
      for (let at = 0; at < data.length; at += size) chunks.push(data.subarray(at, at + size))
      return chunks
    }
    assert.notEqual(reply1.length % 65536, 0)
    assert.deepEqual(readChunks(meta, awaited, every(stream, 65536)), expected, '64 KiB chunks, MN in the last one')
    assert.deepEqual(readChunks(meta, awaited, [...every(reply1, 65536), text('MN\r\n')]), expected, 'MN in a chunk of its own')
    assert.deepEqual(readChunks(meta, awaited, [...every(reply1, 65536), ...byteByByte(text('MN\r\n'))]), expected, 'MN byte by byte')
    assert.deepEqual(readChunks(meta, awaited, every(stream, 999)), expected, '999-byte chunks')
    assert.deepEqual(readChunks(meta, awaited, [stream]), expected, 'whole')
    const end = reply1.length
    for (const at of [1, head.length - 1, head.length, head.length + 1, end - 2, end - 1, end, end + 1]) {
      assert.deepEqual(readChunks(meta, awaited, cutAt(stream, at)), expected, `cut at ${at}`)
    }
    // Nothing is delivered before the CRLF after the value has passed; then the tooLarge at once.
    const reader = openReader(meta, awaited)
    reader.read(reply1.subarray(0, end - 1))
    assert.deepEqual(reader.events, [])
    reader.read(reply1.subarray(end - 1))
    assert.deepEqual(reader.events, [expected[0]])
  })

  it('a skipped value not followed by CRLF where its announced length ends is a violation, wherever the bytes are cut', () => {
    for (const tail of ['XY', '\n\r', '\r\r', '\rX', '\n\n', '  ', 'X\r\n']) {
      assertViolation(small, [GET, DELETE], text(`${line(LIMIT + 1)}${OVER}${tail}HD O17\r\n`), REASON.noCrlf)
      assertViolation(small, [GET], text(`${line(LIMIT + 1)}${OVER}${tail}`), REASON.noCrlf, NEXT)
    }
    // One byte more announced than sent: the skip takes the CR, and LF + "H" is no CRLF.
    assertViolation(small, [GET, DELETE], text(`${line(LIMIT + 2)}${OVER}\r\nHD O17\r\n`), REASON.noCrlf)
    // One byte more sent than announced.
    assertViolation(small, [GET, DELETE], text(`${line(LIMIT + 1)}${OVER}x\r\nHD O17\r\n`), REASON.noCrlf)
    // Across 64 KiB chunks under the default limit, the CRLF wrong in the last chunk.
    const big = Buffer.concat([text(`VA ${MAX_ITEM_SIZE + 1} c5 ksess:a O13\r\n`), Buffer.alloc(MAX_ITEM_SIZE + 1, 'x'), text('\n\r')])
    const chunks: Buffer[] = []
    for (let at = 0; at < big.length; at += 65536) chunks.push(big.subarray(at, at + 65536))
    const events = readChunks(meta, [GET], chunks)
    assert.equal(events.length, 1)
    assert.ok('violation' in events[0] && REASON.noCrlf.test(events[0].violation))
  })

  it('the O, the k and the flags are checked before a value is skipped: from the line alone', () => {
    const cases: Array<[string, RegExp]> = [
      ['c1 ksess:b O13', REASON.anotherKey],
      ['c1 O13', REASON.anotherKey],
      ['c1 ksess:a O14', REASON.opaque],
      ['c1 ksess:a', REASON.opaque],
      ['c1 v ksess:a O13', REASON.token],
      ['c1 ksess:a ksess:a O13', REASON.token],
      ['cx ksess:a O13', REASON.cas],
    ]
    for (const [flags, reason] of cases) {
      assertViolation(small, [GET], text(`${line(LIMIT + 1, flags)}${OVER}\r\n`), reason, NEXT)
      assertViolation(small, [GET], text(line(LIMIT + 1, flags)), reason, NEXT)
    }
  })

  it('after a skipped value the reader is clean: a reply out of order right after it is still a violation, and nothing after it is read', () => {
    for (const { label, chunks } of chunkings(text(`${overHit}HD O99\r\nHD O17\r\n`))) {
      const events = readChunks(small, [GET, DELETE, NEXT.awaited], chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: skipped(LIMIT + 1, LIMIT) }, label)
      assert.ok('violation' in events[1] && REASON.opaque.test(events[1].violation), label)
    }
  })
})

describe('a meta reader is never left half-way through a reply', () => {
  it('a value holding reply lines ("\\r\\nHD O14\\r\\n", "VA 5 ...") is one value, and the reply after it is read from a clean state', () => {
    const inner = '\r\nHD O14\r\nVA 5 c1 ksess:a O14\r\nEN\r\n'
    const stream = text(`VA ${inner.length} c1 ksess:a O13\r\n${inner}\r\nHD c2 O14\r\n`)
    assertReadsAs(meta, [GET, { ...SET, opaque: 14 }], stream, [reply('ok', { value: inner, cas: 1n }), reply('ok', { cas: 2n })])
  })

  it('zero-length values back to back with other replies', () => {
    const stream = text('VA 0 c4 ksess:e O1\r\n\r\nVA 0 c4 ksess:e O2\r\n\r\nHD O3\r\nVA 0 ksess:e O4\r\n\r\nMN\r\n')
    const awaited: Awaited[] = [
      { command: 'get', key: 'sess:e', opaque: 1 },
      { command: 'gat', key: 'sess:e', opaque: 2 },
      { command: 'delete', key: 'sess:e', opaque: 3 },
      { command: 'get', key: 'sess:e', opaque: 4 },
      { command: 'noop', key: '', opaque: 5 },
    ]
    const empty = Buffer.alloc(0)
    assertReadsAs(meta, awaited, stream, [
      reply('ok', { value: empty, cas: 4n }),
      reply('ok', { value: empty, cas: 4n }),
      reply('ok'),
      reply('ok', { value: empty }),
      reply('ok'),
    ])
  })

  it('a value exactly at maxItemSize is read, and the reply after it parses from a clean state', () => {
    const limit = 64
    const small = metaProtocol(limit)
    const full = `${'v'.repeat(limit - 2)}\r\n`
    assertReadsAs(small, [GET, DELETE], text(`VA ${limit} c1 ksess:a O13\r\n${full}\r\nHD O17\r\n`), [
      reply('ok', { value: full, cas: 1n }),
      reply('ok'),
    ])
  })

  it('a 1 MiB value, exactly the default maxItemSize, is read whole, however the stream is cut', () => {
    const big = Buffer.alloc(1024 * 1024, 'x')
    big.write('\r\nHD O14\r\n', 1000)
    const line = text('VA 1048576 c5 ksess:big O3\r\n')
    const stream = Buffer.concat([line, big, text('\r\nMN\r\n')])
    const awaited: Awaited[] = [
      { command: 'gat', key: 'sess:big', opaque: 3 },
      { command: 'noop', key: '', opaque: 4 },
    ]
    const expected = [{ reply: reply('ok', { value: big, cas: 5n }) }, { reply: reply('ok') }]
    const end = line.length + big.length
    for (const at of [
      0,
      1,
      line.length - 2,
      line.length - 1,
      line.length,
      line.length + 1,
      line.length + 1010,
      end,
      end + 1,
      end + 2,
      end + 5,
    ]) {
      assert.deepEqual(readChunks(meta, awaited, cutAt(stream, at)), expected, `cut at ${at}`)
    }
    assert.deepEqual(readChunks(meta, awaited, [stream]), expected, 'whole')
    const chunks: Buffer[] = []
    for (let at = 0; at < stream.length; at += 65536) chunks.push(stream.subarray(at, at + 65536))
    assert.deepEqual(readChunks(meta, awaited, chunks), expected, '64 KB chunks')
  })

  it('replies delivered byte by byte keep coming for as long as requests wait: 200 in a row', () => {
    const reader = openReader(
      meta,
      Array.from({ length: 200 }, (_, i) => ({ command: 'get', key: `sess:${i}`, opaque: i }) as Awaited),
    )
    for (let i = 0; i < 200; i++) {
      const line = i % 3 === 0 ? `EN ksess:${i} O${i}\r\n` : `VA ${`v${i}`.length} c${i} ksess:${i} O${i}\r\nv${i}\r\n`
      for (const chunk of i % 2 === 0 ? byteByByte(text(line)) : [text(line)]) reader.read(chunk)
    }
    assert.equal(reader.events.length, 200)
    assert.equal(reader.waiting, 0)
    reader.events.forEach((event, i) => {
      assert.deepEqual(event, { reply: i % 3 === 0 ? reply('miss') : reply('ok', { value: `v${i}`, cas: BigInt(i) }) }, `reply ${i}`)
    })
  })
})

describe('meta requests: encode writes exactly these bytes', () => {
  const encode = (command: Command, opaque: number) => meta.encode(command, opaque).toString('latin1')

  it('get: mg <key> v c k O<opaque>', () => {
    assert.equal(encode({ name: 'get', key: 'sess:a' }, 5), 'mg sess:a v c k O5\r\n')
    assert.equal(encode({ name: 'get', key: 'sess:a' }, 0xffffffff), 'mg sess:a v c k O4294967295\r\n')
  })

  it('gat: the same and T<expiry> (0 when none is given)', () => {
    assert.equal(encode({ name: 'gat', key: 'sess:a', expiry: 60 }, 5), 'mg sess:a v c k O5 T60\r\n')
    assert.equal(encode({ name: 'gat', key: 'sess:a' }, 5), 'mg sess:a v c k O5 T0\r\n')
  })

  it('touch: mg <key> k O<opaque> T<expiry>, no value asked for (an absolute time past 30 days as is, clamped to 2^31 - 1)', () => {
    assert.equal(encode({ name: 'touch', key: 'sess:a', expiry: 2592001 }, 6), 'mg sess:a k O6 T2592001\r\n')
    // memcached reads T as a signed 32-bit number: T2147483648 would store nothing.
    for (const expiry of [2 ** 31 - 1, 2 ** 31, 2 ** 32 - 2]) {
      assert.equal(encode({ name: 'touch', key: 'sess:a', expiry }, 6), 'mg sess:a k O6 T2147483647\r\n', `expiry ${expiry}`)
      assert.equal(encode({ name: 'gat', key: 'sess:a', expiry }, 6), 'mg sess:a v c k O6 T2147483647\r\n', `expiry ${expiry}`)
      assert.equal(encode({ name: 'set', key: 'sess:a', value: value('hi'), expiry }, 6), 'ms sess:a 2 T2147483647 c O6 MS\r\nhi\r\n')
    }
  })

  it('set, add, replace: ms <key> <length> T<expiry> c O<opaque> M<S|E|R>, then the value and CRLF', () => {
    assert.equal(encode({ name: 'set', key: 'sess:a', value: value(VALUE), expiry: 60 }, 8), `ms sess:a 7 T60 c O8 MS\r\n${VALUE}\r\n`)
    assert.equal(encode({ name: 'add', key: 'sess:a', value: value('hi'), expiry: 60 }, 9), 'ms sess:a 2 T60 c O9 ME\r\nhi\r\n')
    assert.equal(encode({ name: 'replace', key: 'sess:a', value: value('hi'), expiry: 60 }, 10), 'ms sess:a 2 T60 c O10 MR\r\nhi\r\n')
    assert.equal(encode({ name: 'set', key: 'sess:a', value: value('hi') }, 11), 'ms sess:a 2 T0 c O11 MS\r\nhi\r\n')
  })

  it('cas: mode S with C<cas>, all 64 bits', () => {
    assert.equal(
      encode({ name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 99n }, 12),
      'ms sess:a 2 T60 c O12 MS C99\r\nhi\r\n',
    )
    assert.equal(
      encode({ name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 18446744073709551615n }, 12),
      'ms sess:a 2 T60 c O12 MS C18446744073709551615\r\nhi\r\n',
    )
  })

  it('an empty value: length 0 and the CRLF alone (also with no value given)', () => {
    assert.equal(encode({ name: 'set', key: 'sess:e', value: Buffer.alloc(0), expiry: 60 }, 18), 'ms sess:e 0 T60 c O18 MS\r\n\r\n')
    assert.equal(encode({ name: 'set', key: 'sess:e', expiry: 60 }, 18), 'ms sess:e 0 T60 c O18 MS\r\n\r\n')
  })

  it('the length counts bytes: a UTF-8 value, a value holding CRLF, NUL and 0xff, sent unchanged', () => {
    const utf8 = meta.encode({ name: 'set', key: 'sess:a', value: value('é☃'), expiry: 1 }, 1)
    assert.deepEqual(utf8, Buffer.concat([text('ms sess:a 5 T1 c O1 MS\r\n'), value('é☃'), text('\r\n')]))
    const raw = Buffer.from([0x0d, 0x0a, 0x00, 0xff, 0x0d])
    const frame = meta.encode({ name: 'set', key: 'sess:a', value: raw, expiry: 1 }, 2)
    assert.deepEqual(frame, Buffer.concat([text('ms sess:a 5 T1 c O2 MS\r\n'), raw, text('\r\n')]))
  })

  it('delete: md <key> O<opaque>, and C<cas> only when a CAS is given', () => {
    assert.equal(encode({ name: 'delete', key: 'sess:a' }, 17), 'md sess:a O17\r\n')
    assert.equal(encode({ name: 'delete', key: 'sess:a', cas: 99n }, 16), 'md sess:a O16 C99\r\n')
    assert.equal(encode({ name: 'delete', key: 'sess:a', cas: 0n }, 16), 'md sess:a O16\r\n')
  })

  it('noop: mn, with no opaque (memcached echoes none)', () => {
    assert.equal(encode({ name: 'noop', key: '' }, 21), 'mn\r\n')
  })

  it('a UTF-8 key is written as its bytes', () => {
    assert.deepEqual(meta.encode({ name: 'get', key: 'sess:é' }, 3), Buffer.from('mg sess:é v c k O3\r\n'))
  })
})

/** The length of the meta reply at the start of `data`: its line, and a VA's value and CRLF. */
function metaReplyLength(data: Buffer): number | undefined {
  const end = data.indexOf('\r\n')
  if (end < 0) return undefined
  const size = /^VA (\d+)/.exec(data.toString('latin1', 0, end))?.[1]
  const length = end + 2 + (size === undefined ? 0 : Number(size) + 2)
  return data.length >= length ? length : undefined
}

describe('meta: against a real memcached', () => {
  it('a fresh memcached -B ascii answers the store’s encoded requests with exactly the lines above, and the reader reads them as stated', async () => {
    const server = await MemcachedServer.start({ protocol: 'ascii' })
    try {
      const requests = SESSION.map((e) => meta.encode(e.command, e.opaque))
      requests.splice(BINARY_KEY_AT, 0, text(STORE_BINARY_KEY))
      const replies = await roundTrips(server.address, requests, metaReplyLength)
      assert.equal(replies.splice(BINARY_KEY_AT, 1)[0].toString('latin1'), 'HD\r\n')
      SESSION.forEach((exchange, i) => {
        assert.equal(replies[i].toString('latin1'), exchange.reply, exchange.name)
      })
      assert.deepEqual(
        readChunks(meta, SESSION.map(awaitedOf), [Buffer.concat(replies)]),
        SESSION.map((e) => ({ reply: e.expect })),
      )
    } finally {
      await server.stop()
    }
  })
})
