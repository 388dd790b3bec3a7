// The binary protocol's framing, byte by byte and without a server: every reply memcached 1.6 sends
// to the store's requests (the frames below are what a fresh memcached 1.6.18 sent, checked again by
// the one test at the end that starts one) is read as the same reply however the stream is cut into
// chunks, alone or pipelined; every frame that cannot be trusted (wrong magic, opcode, opaque or
// echoed key, no request waiting, a length over the limit or shorter than its key and extras,
// garbage) is one violation and no reply, after which the reader reads nothing more; a reader is
// never left half-way through a frame; and `encode` writes exactly the header, extras, key and value
// memcached expects.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { binaryProtocol } from '../lib/memcached/binary.ts'
import { type Command, type Reply, replyLimit } from '../lib/memcached/wire.ts'
import { binaryResponse, OPCODES, readBinaryFrame, uint32s } from './harness/frames.ts'
import { MemcachedServer } from './harness/memcached.ts'
import {
  type Awaited,
  assertReadsAs,
  assertViolation,
  byteByByte,
  chunkings,
  cutAt,
  openReader,
  readChunks,
  reply,
  roundTrips,
} from './harness/wire-replies.ts'

/** The limit a store with the default maxItemSize (1 MB) gives its reader. */
const LIMIT = replyLimit(1024 * 1024)
const binary = binaryProtocol(LIMIT)

const FLAGS = uint32s(0)
const VALUE = '{"a":1}'
const NOT_FOUND = 'Not found'
const EXISTS = 'Data exists for key.'

interface Exchange {
  name: string
  command: Command
  opaque: number
  /** The reply's bytes. */
  reply: Buffer
  /** What the reader must make of them. */
  expect: Reply
}

const value = (text: string) => Buffer.from(text)

/**
 * A session with a fresh memcached 1.6.18 (`memcached -p ... -U 0`), in this order: each request is
 * the store's own encoding of the command, each reply the exact frame memcached sent back (CAS
 * values count from 1 on a fresh server). The test at the end replays it against a new memcached.
 */
const SESSION: readonly Exchange[] = [
  {
    name: 'noop',
    command: { name: 'noop', key: '' },
    opaque: 1,
    reply: binaryResponse({ opcode: OPCODES.noop, opaque: 1 }),
    expect: reply('ok'),
  },
  {
    name: 'get (GETK) miss, echoing the key',
    command: { name: 'get', key: 'sess:a' },
    opaque: 2,
    reply: binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 2, key: 'sess:a' }),
    expect: reply('miss'),
  },
  {
    name: 'gat (GATK) miss, echoing the key',
    command: { name: 'gat', key: 'sess:a', expiry: 60 },
    opaque: 3,
    reply: binaryResponse({ opcode: OPCODES.gatk, status: 0x0001, opaque: 3, key: 'sess:a' }),
    expect: reply('miss'),
  },
  {
    name: 'touch miss',
    command: { name: 'touch', key: 'sess:a', expiry: 60 },
    opaque: 4,
    reply: binaryResponse({ opcode: OPCODES.touch, status: 0x0001, opaque: 4, value: NOT_FOUND }),
    expect: reply('miss'),
  },
  {
    name: 'delete miss',
    command: { name: 'delete', key: 'sess:a' },
    opaque: 5,
    reply: binaryResponse({ opcode: OPCODES.delete, status: 0x0001, opaque: 5, value: NOT_FOUND }),
    expect: reply('miss'),
  },
  {
    name: 'replace of a missing key',
    command: { name: 'replace', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 6,
    reply: binaryResponse({ opcode: OPCODES.replace, status: 0x0001, opaque: 6, value: NOT_FOUND }),
    expect: reply('miss'),
  },
  {
    name: 'cas of a missing key',
    command: { name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 99n },
    opaque: 7,
    reply: binaryResponse({ opcode: OPCODES.set, status: 0x0001, opaque: 7, value: NOT_FOUND }),
    expect: reply('miss'),
  },
  {
    name: 'set stored',
    command: { name: 'set', key: 'sess:a', value: value(VALUE), expiry: 60 },
    opaque: 8,
    reply: binaryResponse({ opcode: OPCODES.set, opaque: 8, cas: 1n }),
    expect: reply('ok', { cas: 1n }),
  },
  {
    name: 'add of an existing key',
    command: { name: 'add', key: 'sess:a', value: value('hi'), expiry: 60 },
    opaque: 9,
    reply: binaryResponse({ opcode: OPCODES.add, status: 0x0002, opaque: 9, value: EXISTS }),
    expect: reply('exists'),
  },
  {
    name: 'add stored',
    command: { name: 'add', key: 'sess:b', value: value('hi'), expiry: 60 },
    opaque: 10,
    reply: binaryResponse({ opcode: OPCODES.add, opaque: 10, cas: 2n }),
    expect: reply('ok', { cas: 2n }),
  },
  {
    name: 'replace stored',
    command: { name: 'replace', key: 'sess:b', value: value('ho'), expiry: 60 },
    opaque: 11,
    reply: binaryResponse({ opcode: OPCODES.replace, opaque: 11, cas: 3n }),
    expect: reply('ok', { cas: 3n }),
  },
  {
    name: 'cas that does not match',
    command: { name: 'cas', key: 'sess:a', value: value('hi'), expiry: 60, cas: 99n },
    opaque: 12,
    reply: binaryResponse({ opcode: OPCODES.set, status: 0x0002, opaque: 12, value: EXISTS }),
    expect: reply('exists'),
  },
  {
    name: 'get (GETK) hit: flags, echoed key, value, CAS',
    command: { name: 'get', key: 'sess:a' },
    opaque: 13,
    reply: binaryResponse({ opcode: OPCODES.getk, opaque: 13, cas: 1n, extras: FLAGS, key: 'sess:a', value: VALUE }),
    expect: reply('ok', { value: VALUE, cas: 1n }),
  },
  {
    name: 'gat (GATK) hit: flags, echoed key, value, CAS',
    command: { name: 'gat', key: 'sess:a', expiry: 120 },
    opaque: 14,
    reply: binaryResponse({ opcode: OPCODES.gatk, opaque: 14, cas: 1n, extras: FLAGS, key: 'sess:a', value: VALUE }),
    expect: reply('ok', { value: VALUE, cas: 1n }),
  },
  {
    name: 'touch found (flags in its extras, no value)',
    command: { name: 'touch', key: 'sess:a', expiry: 120 },
    opaque: 15,
    reply: binaryResponse({ opcode: OPCODES.touch, opaque: 15, cas: 1n, extras: FLAGS }),
    expect: reply('ok', { cas: 1n }),
  },
  {
    name: 'delete whose CAS does not match',
    command: { name: 'delete', key: 'sess:a', cas: 99n },
    opaque: 16,
    reply: binaryResponse({ opcode: OPCODES.delete, status: 0x0002, opaque: 16, value: EXISTS }),
    expect: reply('exists'),
  },
  {
    name: 'delete done',
    command: { name: 'delete', key: 'sess:a' },
    opaque: 17,
    reply: binaryResponse({ opcode: OPCODES.delete, opaque: 17 }),
    expect: reply('ok'),
  },
  {
    name: 'set of an empty value',
    command: { name: 'set', key: 'sess:e', value: Buffer.alloc(0), expiry: 60 },
    opaque: 18,
    reply: binaryResponse({ opcode: OPCODES.set, opaque: 18, cas: 4n }),
    expect: reply('ok', { cas: 4n }),
  },
  {
    name: 'get of an empty value: a hit with a 0-byte value',
    command: { name: 'get', key: 'sess:e' },
    opaque: 19,
    reply: binaryResponse({ opcode: OPCODES.getk, opaque: 19, cas: 4n, extras: FLAGS, key: 'sess:e' }),
    expect: reply('ok', { value: Buffer.alloc(0), cas: 4n }),
  },
  {
    name: 'set of a value over the item size (0x0003)',
    command: { name: 'set', key: 'sess:big', value: Buffer.alloc(2 * 1024 * 1024, 'a'), expiry: 60 },
    opaque: 20,
    reply: binaryResponse({ opcode: OPCODES.set, status: 0x0003, opaque: 20, value: 'Too large.' }),
    expect: reply('tooLarge'),
  },
]

/**
 * Replies a plain memcached does not give these requests: memcached -S answering a request on a
 * connection that did not authenticate (captured), and error statuses with memcached's own texts
 * (proto_bin.c's write_bin_error; 0x0081 and 0x0004 captured with other opcodes, which memcached
 * echoes: a proxy or server that does not know GATK answers 0x0081 to it).
 */
const ERRORS: readonly Exchange[] = [
  {
    name: 'authentication required (0x0020, memcached -S)',
    command: { name: 'get', key: 'sess:a' },
    opaque: 30,
    reply: binaryResponse({ opcode: OPCODES.getk, status: 0x0020, opaque: 30, value: 'Auth failure.' }),
    expect: reply('authError'),
  },
  {
    name: 'unknown command (0x0081)',
    command: { name: 'gat', key: 'sess:a', expiry: 60 },
    opaque: 31,
    reply: binaryResponse({ opcode: OPCODES.gatk, status: 0x0081, opaque: 31, value: 'Unknown command' }),
    expect: reply('serverError', { message: 'unknown command' }),
  },
  {
    name: 'out of memory (0x0082)',
    command: { name: 'set', key: 'sess:a', value: value(VALUE), expiry: 60 },
    opaque: 32,
    reply: binaryResponse({ opcode: OPCODES.set, status: 0x0082, opaque: 32, value: 'Out of memory' }),
    expect: reply('serverError', { message: 'out of memory' }),
  },
  {
    name: 'invalid arguments (0x0004)',
    command: { name: 'touch', key: 'sess:a', expiry: 60 },
    opaque: 33,
    reply: binaryResponse({ opcode: OPCODES.touch, status: 0x0004, opaque: 33, value: 'Invalid arguments' }),
    expect: reply('serverError', { message: 'invalid arguments' }),
  },
  {
    name: 'not stored (0x0005)',
    command: { name: 'set', key: 'sess:a', value: value(VALUE), expiry: 60 },
    opaque: 34,
    reply: binaryResponse({ opcode: OPCODES.set, status: 0x0005, opaque: 34, value: 'Not stored.' }),
    expect: reply('exists'),
  },
  {
    name: 'a status memcached does not define (0x00ff)',
    command: { name: 'delete', key: 'sess:a' },
    opaque: 35,
    reply: binaryResponse({ opcode: OPCODES.delete, status: 0x00ff, opaque: 35 }),
    expect: reply('serverError', { message: 'status 0x00ff' }),
  },
]

const awaitedOf = ({ command, opaque }: Exchange): Awaited => ({ command: command.name, key: command.key, opaque })

function describeReply(r: Reply): string {
  return [r.status, r.value && `${r.value.length}-byte value`, r.cas && `CAS ${r.cas}`, r.message && JSON.stringify(r.message)]
    .filter(Boolean)
    .join(', ')
}

describe('binary replies memcached sends: the same reply however the bytes are cut', () => {
  for (const exchange of [...SESSION, ...ERRORS]) {
    it(`${exchange.name} is read as ${describeReply(exchange.expect)}: whole, cut at every byte, byte by byte`, () => {
      assertReadsAs(binary, [awaitedOf(exchange)], exchange.reply, [exchange.expect])
    })
  }

  it('the whole session pipelined in one stream gives every reply in order, wherever the stream is cut', () => {
    const all = [...SESSION, ...ERRORS]
    assertReadsAs(
      binary,
      all.map(awaitedOf),
      Buffer.concat(all.map((e) => e.reply)),
      all.map((e) => e.expect),
    )
  })

  it('replies split over three chunks at every pair of offsets: get hit, then delete done', () => {
    const pair = [SESSION[12], SESSION[16]]
    const bytes = Buffer.concat(pair.map((e) => e.reply))
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const chunks = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)].map((c) => Buffer.from(c))
        assert.deepEqual(
          readChunks(binary, pair.map(awaitedOf), chunks),
          pair.map((e) => ({ reply: e.expect })),
          `cut at ${a} and ${b}`,
        )
      }
    }
  })

  it('the frames built here are byte for byte what memcached 1.6.18 sent (two captures, as hex)', () => {
    // get hit and touch miss, as captured from `memcached -U 0` on the wire.
    assert.equal(SESSION[12].reply.toString('hex'), '810c000604000000000000110000000d000000000000000100000000736573733a617b2261223a317d')
    assert.equal(SESSION[3].reply.toString('hex'), '811c000000000001000000090000000400000000000000004e6f7420666f756e64')
  })

  it('a hit whose value holds bytes of every kind (a frame header, CRLF, NUL, 0xff) gives them back unchanged', () => {
    const inner = Buffer.concat([binaryResponse({ opcode: OPCODES.noop, opaque: 6 }), Buffer.from('\r\n\0\xff', 'latin1')])
    const frame = binaryResponse({ opcode: OPCODES.getk, opaque: 5, cas: 77n, extras: FLAGS, key: 'sess:a', value: inner })
    const noop = binaryResponse({ opcode: OPCODES.noop, opaque: 6 })
    assertReadsAs(
      binary,
      [
        { command: 'get', key: 'sess:a', opaque: 5 },
        { command: 'noop', key: '', opaque: 6 },
      ],
      Buffer.concat([frame, noop]),
      [reply('ok', { value: inner, cas: 77n }), reply('ok')],
    )
  })

  it('a CAS is read as the full unsigned 64 bits, and a non-ASCII key is compared as UTF-8', () => {
    const key = 'sess:é☃'
    const frame = binaryResponse({ opcode: OPCODES.getk, opaque: 0xffffffff, cas: 0xfedcba9876543210n, extras: FLAGS, key, value: 'v' })
    assertReadsAs(binary, [{ command: 'get', key, opaque: 0xffffffff }], frame, [reply('ok', { value: 'v', cas: 0xfedcba9876543210n })])
  })
})

/** What each refusal's reason says (lib/memcached/binary.ts words them). */
const REASON = {
  magic: /0x81|not binary/,
  unexpected: /no request waiting/,
  outOfOrder: /out of order/,
  anotherKey: /another key/,
  tooLong: /more than any item can hold/,
  shortBody: /key and extras exceed/,
}

const GET: Awaited = { command: 'get', key: 'sess:a', opaque: 13 }
const GET_HIT = SESSION[12].reply
/** A valid reply for the request queued after the refused one: the broken reader must ignore it. */
const NEXT = { awaited: { command: 'noop', key: '', opaque: 99 } as Awaited, bytes: binaryResponse({ opcode: OPCODES.noop, opaque: 99 }) }

/** `frame` with `length` written over its header's total body length. */
function withBodyLength(frame: Buffer, length: number): Buffer {
  const copy = Buffer.from(frame)
  copy.writeUInt32BE(length, 8)
  return copy
}

describe('binary replies that cannot be trusted: one violation, no reply, nothing read after it', () => {
  it('a first byte that is not the reply magic 0x81 (a request 0x80, a zero byte, text)', () => {
    assertViolation(binary, [GET], Buffer.concat([Buffer.from([0x80]), GET_HIT.subarray(1)]), REASON.magic, NEXT)
    assertViolation(binary, [GET], Buffer.concat([Buffer.from([0x00]), GET_HIT.subarray(1)]), REASON.magic, NEXT)
    // What a text-only server (memcached -B ascii) answers a binary request with, several times.
    assertViolation(binary, [GET], Buffer.from('ERROR\r\nERROR\r\nERROR\r\nERROR\r\n'), REASON.magic, NEXT)
    assertViolation(binary, [GET], Buffer.from('SERVER_ERROR out of memory storing object\r\n'), REASON.magic, NEXT)
  })

  it('garbage: 0xff bytes, an HTTP reply, random bytes', () => {
    assertViolation(binary, [GET], Buffer.alloc(40, 0xff), REASON.magic, NEXT)
    assertViolation(binary, [GET], Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'), REASON.magic, NEXT)
    // A fixed pseudo-random stream (not starting with 0x81).
    const noise = Buffer.alloc(64)
    for (let i = 0, x = 12345; i < noise.length; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff
      noise[i] = x >> 16
    }
    assert.notEqual(noise[0], 0x81)
    assertViolation(binary, [GET], noise, REASON.magic, NEXT)
  })

  it('a reply with no request waiting for it', () => {
    assertViolation(binary, [], binaryResponse({ opcode: OPCODES.noop, opaque: 1 }), REASON.unexpected)
    assertViolation(binary, [], GET_HIT, REASON.unexpected)
  })

  it('a reply after the last request was answered: the first is read, the extra one is a violation', () => {
    const noop = binaryResponse({ opcode: OPCODES.noop, opaque: 1 })
    for (const { label, chunks } of chunkings(Buffer.concat([noop, noop]))) {
      const events = readChunks(binary, [{ command: 'noop', key: '', opaque: 1 }], chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: reply('ok') }, label)
      assert.ok('violation' in events[1] && REASON.unexpected.test(events[1].violation), label)
    }
  })

  it("a reply whose opcode is not its request's, though opaque, key and status would fit", () => {
    // A set's reply where a get (GETK) was due, and the reverse.
    assertViolation(binary, [GET], binaryResponse({ opcode: OPCODES.set, opaque: 13, cas: 1n }), REASON.outOfOrder, NEXT)
    assertViolation(binary, [{ command: 'set', key: 'sess:a', opaque: 13 }], GET_HIT, REASON.outOfOrder, NEXT)
    // GATK where GETK was due and the reverse: same layout, same key.
    const gatkHit = binaryResponse({ opcode: OPCODES.gatk, opaque: 13, cas: 1n, extras: FLAGS, key: 'sess:a', value: VALUE })
    assertViolation(binary, [GET], gatkHit, REASON.outOfOrder, NEXT)
    assertViolation(binary, [{ command: 'gat', key: 'sess:a', opaque: 13 }], GET_HIT, REASON.outOfOrder, NEXT)
    // Plain GET (0x00), which does not echo the key, where GETK was due.
    assertViolation(
      binary,
      [GET],
      binaryResponse({ opcode: 0x00, opaque: 13, cas: 1n, extras: FLAGS, value: VALUE }),
      REASON.outOfOrder,
      NEXT,
    )
    // delete for touch, add for set, set for add, replace for cas, noop for delete.
    const swaps: Array<[Awaited['command'], number]> = [
      ['touch', OPCODES.delete],
      ['set', OPCODES.add],
      ['add', OPCODES.set],
      ['cas', OPCODES.replace],
      ['delete', OPCODES.noop],
      ['noop', OPCODES.touch],
    ]
    for (const [command, opcode] of swaps) {
      assertViolation(
        binary,
        [{ command, key: 'sess:a', opaque: 8 }],
        binaryResponse({ opcode, opaque: 8, cas: 1n }),
        REASON.outOfOrder,
        NEXT,
      )
    }
  })

  it("a reply whose opaque is not its request's (the next one's, the previous one's, 0)", () => {
    for (const opaque of [14, 12, 0, 13 + 2 ** 16]) {
      const frame = binaryResponse({ opcode: OPCODES.getk, opaque, cas: 1n, extras: FLAGS, key: 'sess:a', value: VALUE })
      assertViolation(binary, [GET], frame, REASON.outOfOrder, NEXT)
    }
    assertViolation(
      binary,
      [{ command: 'set', key: 'sess:a', opaque: 8 }],
      binaryResponse({ opcode: OPCODES.set, opaque: 9, cas: 1n }),
      REASON.outOfOrder,
    )
  })

  it('a swapped pair: each reply carries the other request’s opaque', () => {
    const a = binaryResponse({ opcode: OPCODES.getk, opaque: 2, extras: FLAGS, key: 'sess:b', value: 'B' })
    const b = binaryResponse({ opcode: OPCODES.getk, opaque: 1, extras: FLAGS, key: 'sess:a', value: 'A' })
    assertViolation(
      binary,
      [
        { command: 'get', key: 'sess:a', opaque: 1 },
        { command: 'get', key: 'sess:b', opaque: 2 },
      ],
      Buffer.concat([a, b]),
      REASON.outOfOrder,
    )
  })

  it('a GETK or GATK reply, hit or miss, echoing another key than the one requested', () => {
    for (const command of ['get', 'gat'] as const) {
      const opcode = command === 'get' ? OPCODES.getk : OPCODES.gatk
      const awaited: Awaited = { command, key: 'sess:a', opaque: 13 }
      for (const key of ['sess:b', 'sess:', 'sess:aa', '', 'SESS:A']) {
        const hit = binaryResponse({ opcode, opaque: 13, cas: 1n, extras: FLAGS, key, value: VALUE })
        assertViolation(binary, [awaited], hit, REASON.anotherKey, NEXT)
        const miss = binaryResponse({ opcode, status: 0x0001, opaque: 13, key })
        assertViolation(binary, [awaited], miss, REASON.anotherKey, NEXT)
      }
    }
  })

  it('a hit whose key is its value shifted by one: the key length is checked, not only the bytes', () => {
    // Key length 7 where 6 was due: "sess:a{" is not "sess:a".
    const frame = Buffer.from(GET_HIT)
    frame.writeUInt16BE(7, 2)
    assertViolation(binary, [GET], frame, REASON.anotherKey, NEXT)
  })

  it('a total body length over the limit: refused from the header alone, before the body is waited for', () => {
    const limit = 64
    const small = binaryProtocol(limit)
    const over = binaryResponse({
      opcode: OPCODES.getk,
      opaque: 13,
      cas: 1n,
      extras: FLAGS,
      key: 'sess:a',
      value: 'x'.repeat(limit - 10 + 1),
    })
    assert.equal(over.readUInt32BE(8), limit + 1)
    assertViolation(small, [GET], over, REASON.tooLong, NEXT)
    assertViolation(small, [GET], over.subarray(0, 24), REASON.tooLong, NEXT)
    // The default limit: a header announcing 2 GB, with no body to follow.
    assertViolation(binary, [GET], withBodyLength(GET_HIT, 0x80000000).subarray(0, 24), REASON.tooLong, NEXT)
    assertViolation(binary, [GET], withBodyLength(GET_HIT, LIMIT + 1).subarray(0, 24), REASON.tooLong, NEXT)
    // An error reply over the limit too: the limit is not only for values.
    const error = binaryResponse({ opcode: OPCODES.set, status: 0x0082, opaque: 8, value: 'x'.repeat(limit + 1) })
    assertViolation(small, [{ command: 'set', key: 'sess:a', opaque: 8 }], error, REASON.tooLong, NEXT)
  })

  it('key and extras longer than the whole body', () => {
    // Extras 4 + key 6 = 10 bytes, in a body announced as 9, then 0.
    for (const body of [9, 0]) {
      const frame = withBodyLength(GET_HIT, body).subarray(0, 24 + body)
      assertViolation(binary, [GET], frame, REASON.shortBody, NEXT)
    }
    // 255 bytes of extras in a 10-byte body.
    const extras = Buffer.from(GET_HIT)
    extras[4] = 0xff
    assertViolation(binary, [GET], extras, REASON.shortBody, NEXT)
    // A key length of 65535 in the same body.
    const key = Buffer.from(GET_HIT)
    key.writeUInt16BE(0xffff, 2)
    assertViolation(binary, [GET], key, REASON.shortBody, NEXT)
  })

  it('a violation after good replies: those are delivered, the bad one is not, and nothing after it is read', () => {
    const good = [SESSION[0], SESSION[7], SESSION[12]]
    const bad = binaryResponse({ opcode: OPCODES.delete, opaque: 6 })
    const after = SESSION[16]
    const stream = Buffer.concat([...good.map((e) => e.reply), bad, after.reply, after.reply])
    const awaited = [...good.map(awaitedOf), { command: 'delete', key: 'sess:a', opaque: 5 } as Awaited, awaitedOf(after)]
    for (const { label, chunks } of chunkings(stream)) {
      const events = readChunks(binary, awaited, chunks)
      assert.deepEqual(
        events.slice(0, 3),
        good.map((e) => ({ reply: e.expect })),
        label,
      )
      assert.equal(events.length, 4, `${label}: ${events.length} events`)
      assert.ok('violation' in events[3] && REASON.outOfOrder.test(events[3].violation), label)
    }
  })
})

describe('a binary reader is never left half-way through a frame', () => {
  it('a value exactly at the limit is read, and the reply after it parses from a clean state', () => {
    const limit = 64
    const small = binaryProtocol(limit)
    const atLimit = binaryResponse({ opcode: OPCODES.getk, opaque: 1, extras: FLAGS, key: 'sess:a', value: 'v'.repeat(limit - 10) })
    assert.equal(atLimit.readUInt32BE(8), limit)
    const next = binaryResponse({ opcode: OPCODES.set, opaque: 2, cas: 9n })
    assertReadsAs(
      small,
      [
        { command: 'get', key: 'sess:a', opaque: 1 },
        { command: 'set', key: 'sess:a', opaque: 2 },
      ],
      Buffer.concat([atLimit, next]),
      [reply('ok', { value: 'v'.repeat(limit - 10) }), reply('ok', { cas: 9n })],
    )
  })

  it('a 1 MB value under the default limit is read whole, however the stream is cut', () => {
    const big = Buffer.alloc(1024 * 1024, 'x')
    big.write('\r\n\x81', 1000, 'latin1')
    const frame = binaryResponse({ opcode: OPCODES.gatk, opaque: 3, cas: 5n, extras: FLAGS, key: 'sess:big', value: big })
    const awaited: Awaited[] = [
      { command: 'gat', key: 'sess:big', opaque: 3 },
      { command: 'noop', key: '', opaque: 4 },
    ]
    const stream = Buffer.concat([frame, binaryResponse({ opcode: OPCODES.noop, opaque: 4 })])
    const expected = [{ reply: reply('ok', { value: big, cas: 5n }) }, { reply: reply('ok') }]
    for (const at of [0, 1, 23, 24, 25, 24 + 14, 24 + 4096, frame.length - 1, frame.length, frame.length + 23]) {
      assert.deepEqual(readChunks(binary, awaited, cutAt(stream, at)), expected, `cut at ${at}`)
    }
    assert.deepEqual(readChunks(binary, awaited, [stream]), expected, 'whole')
    // In 64 KB socket-sized chunks.
    const chunks: Buffer[] = []
    for (let at = 0; at < stream.length; at += 65536) chunks.push(stream.subarray(at, at + 65536))
    assert.deepEqual(readChunks(binary, awaited, chunks), expected, '64 KB chunks')
  })

  it('a zero-length value, a reply with no body and an error with a body, back to back', () => {
    const exchanges = [SESSION[18], SESSION[0], SESSION[19], SESSION[4], SESSION[16], ERRORS[1], SESSION[19]]
    assertReadsAs(
      binary,
      exchanges.map(awaitedOf),
      Buffer.concat(exchanges.map((e) => e.reply)),
      exchanges.map((e) => e.expect),
    )
  })

  it('replies delivered byte by byte keep coming for as long as requests wait: 200 in a row', () => {
    const reader = openReader(
      binary,
      Array.from({ length: 200 }, (_, i) => ({ command: 'get', key: `sess:${i}`, opaque: i }) as Awaited),
    )
    for (let i = 0; i < 200; i++) {
      const frame =
        i % 3 === 0
          ? binaryResponse({ opcode: OPCODES.getk, status: 1, opaque: i, key: `sess:${i}` })
          : binaryResponse({ opcode: OPCODES.getk, opaque: i, cas: BigInt(i), extras: FLAGS, key: `sess:${i}`, value: `v${i}` })
      for (const chunk of i % 2 === 0 ? byteByByte(frame) : [frame]) reader.read(chunk)
    }
    assert.equal(reader.events.length, 200)
    assert.equal(reader.waiting, 0)
    reader.events.forEach((event, i) => {
      assert.deepEqual(event, { reply: i % 3 === 0 ? reply('miss') : reply('ok', { value: `v${i}`, cas: BigInt(i) }) }, `reply ${i}`)
    })
  })
})

/**
 * A request as its fields: header (magic, opcode, key length, extras length, data type, vbucket,
 * total body length, opaque, CAS), then extras, key and value, each in hex.
 */
function layout(frame: Buffer): string {
  const hex = (from: number, to: number) => frame.toString('hex', from, to)
  const keyLength = frame.readUInt16BE(2)
  const extrasEnd = 24 + frame[4]
  const header = [hex(0, 1), hex(1, 2), hex(2, 4), hex(4, 5), hex(5, 6), hex(6, 8), hex(8, 12), hex(12, 16), hex(16, 24)].join(' ')
  return [header, hex(24, extrasEnd), hex(extrasEnd, extrasEnd + keyLength), hex(extrasEnd + keyLength, frame.length)].join(' | ')
}

const hexOf = (text: string) => Buffer.from(text).toString('hex')
const SESS_A = hexOf('sess:a')

describe('binary requests: encode writes exactly these bytes', () => {
  const encode = binary.encode

  it('get: GETK (0x0c), the key, no extras, no CAS', () => {
    assert.equal(
      layout(encode({ name: 'get', key: 'sess:a' }, 0x01020304)),
      `80 0c 0006 00 00 0000 00000006 01020304 0000000000000000 |  | ${SESS_A} | `,
    )
  })

  it('gat: GATK (0x23), 4 bytes of extras holding the expiry', () => {
    assert.equal(
      layout(encode({ name: 'gat', key: 'sess:a', expiry: 3600 }, 7)),
      `80 23 0006 04 00 0000 0000000a 00000007 0000000000000000 | 00000e10 | ${SESS_A} | `,
    )
    assert.equal(
      layout(encode({ name: 'gat', key: 'sess:a' }, 7)),
      `80 23 0006 04 00 0000 0000000a 00000007 0000000000000000 | 00000000 | ${SESS_A} | `,
    )
  })

  it('touch: TOUCH (0x1c), the expiry in its extras (an absolute time past 30 days as is)', () => {
    assert.equal(
      layout(encode({ name: 'touch', key: 'sess:a', expiry: 2592001 }, 8)),
      `80 1c 0006 04 00 0000 0000000a 00000008 0000000000000000 | 00278d01 | ${SESS_A} | `,
    )
    assert.equal(
      layout(encode({ name: 'touch', key: 'sess:a', expiry: 0xfffffffe }, 8)),
      `80 1c 0006 04 00 0000 0000000a 00000008 0000000000000000 | fffffffe | ${SESS_A} | `,
    )
  })

  it('set, add, replace: 8 bytes of extras (flags 0, expiry), key, value; no CAS', () => {
    const v = Buffer.from(VALUE)
    for (const [name, opcode] of [
      ['set', '01'],
      ['add', '02'],
      ['replace', '03'],
    ] as const) {
      assert.equal(
        layout(encode({ name, key: 'sess:a', value: v, expiry: 60 }, 9)),
        `80 ${opcode} 0006 08 00 0000 00000015 00000009 0000000000000000 | 000000000000003c | ${SESS_A} | ${v.toString('hex')}`,
        name,
      )
    }
  })

  it('cas: SET (0x01) with the CAS in the header, all 64 bits', () => {
    const v = Buffer.from('hi')
    assert.equal(
      layout(encode({ name: 'cas', key: 'sess:a', value: v, expiry: 60, cas: 0xfedcba9876543210n }, 10)),
      `80 01 0006 08 00 0000 00000010 0000000a fedcba9876543210 | 000000000000003c | ${SESS_A} | 6869`,
    )
    assert.equal(
      layout(encode({ name: 'cas', key: 'sess:a', value: v, expiry: 60, cas: 99n }, 10)),
      `80 01 0006 08 00 0000 00000010 0000000a 0000000000000063 | 000000000000003c | ${SESS_A} | 6869`,
    )
  })

  it('delete: DELETE (0x04), the key, a CAS only when given', () => {
    assert.equal(
      layout(encode({ name: 'delete', key: 'sess:a' }, 11)),
      `80 04 0006 00 00 0000 00000006 0000000b 0000000000000000 |  | ${SESS_A} | `,
    )
    assert.equal(
      layout(encode({ name: 'delete', key: 'sess:a', cas: 99n }, 11)),
      `80 04 0006 00 00 0000 00000006 0000000b 0000000000000063 |  | ${SESS_A} | `,
    )
  })

  it('noop: NOOP (0x0a), a bare header', () => {
    assert.equal(layout(encode({ name: 'noop', key: '' }, 12)), '80 0a 0000 00 00 0000 00000000 0000000c 0000000000000000 |  |  | ')
    assert.equal(encode({ name: 'noop', key: '' }, 0xffffffff).toString('hex'), '800a00000000000000000000ffffffff0000000000000000')
  })

  it('lengths count bytes: a UTF-8 key, a value with NUL, CR, LF and 0xff', () => {
    const key = 'sess:é'
    const v = Buffer.from([0x00, 0x0d, 0x0a, 0xff, 0x81])
    const frame = encode({ name: 'set', key, value: v, expiry: 1 }, 13)
    assert.equal(layout(frame), `80 01 0007 08 00 0000 00000014 0000000d 0000000000000000 | 0000000000000001 | ${hexOf(key)} | 000d0aff81`)
    assert.equal(frame.length, 24 + 8 + 7 + 5)
    assert.equal(layout(encode({ name: 'get', key }, 14)), `80 0c 0007 00 00 0000 00000007 0000000e 0000000000000000 |  | ${hexOf(key)} | `)
  })

  it('every byte is written: encoding over a dirtied buffer pool gives the same bytes', () => {
    const commands: Command[] = [
      { name: 'get', key: 'sess:a' },
      { name: 'gat', key: 'sess:a', expiry: 5 },
      { name: 'touch', key: 'sess:a', expiry: 5 },
      { name: 'set', key: 'sess:a', value: Buffer.from('abc'), expiry: 5 },
      { name: 'cas', key: 'sess:a', value: Buffer.from('abc'), expiry: 5, cas: 1n },
      { name: 'delete', key: 'sess:a' },
      { name: 'noop', key: '' },
    ]
    const clean = commands.map((c) => encode(c, 42).toString('hex'))
    for (let round = 0; round < 3; round++) {
      // Fill Node's shared pool (what allocUnsafe hands out) with 0xff and 0x81.
      for (let i = 0; i < 64; i++) Buffer.allocUnsafe(128).fill(i % 2 ? 0xff : 0x81)
      assert.deepEqual(
        commands.map((c) => encode(c, 42).toString('hex')),
        clean,
      )
    }
  })
})

describe('binary: against a real memcached', () => {
  it('a fresh memcached answers the store’s encoded requests with exactly the frames above, and the reader reads them as stated', async () => {
    const server = await MemcachedServer.start()
    try {
      const replies = await roundTrips(
        server.address,
        SESSION.map((e) => binary.encode(e.command, e.opaque)),
        (data) => readBinaryFrame(data)?.length,
      )
      SESSION.forEach((exchange, i) => {
        assert.equal(replies[i].toString('hex'), exchange.reply.toString('hex'), exchange.name)
      })
      assert.deepEqual(
        readChunks(binary, SESSION.map(awaitedOf), [Buffer.concat(replies)]),
        SESSION.map((e) => ({ reply: e.expect })),
      )
    } finally {
      await server.stop()
    }
  })
})
