// The binary protocol's framing, byte by byte and without a server: every reply memcached 1.6 sends
// to the store's requests (the frames below are what a fresh memcached 1.6.18 sent, checked again by
// the one test at the end that starts one) is read as the same reply however the stream is cut into
// chunks, alone or pipelined; a read's value longer than maxItemSize is skipped unread and answered
// as tooLarge, and the reply after it is read as usual; every frame that cannot be trusted (wrong
// magic, opcode, opaque, data type or echoed key, a shape its status does not allow, no request
// waiting, a length no memcached item can hold or shorter than its key and extras, garbage) is one
// violation and no reply, after which the reader reads nothing more; a reader is never left half-way
// through a frame; and `encode` writes exactly the header, extras, key and value memcached expects.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { binaryProtocol } from '../lib/memcached/binary.ts'
import { type Command, MAX_VALUE_BYTES, type Reply } from '../lib/memcached/wire.ts'
import { binaryResponse, OPCODES, readBinaryFrame, uint32s } from './harness/frames.ts'
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
const binary = binaryProtocol(MAX_ITEM_SIZE)

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
  tooLong: /more than any memcached item can hold/,
  shortBody: /key and extras exceed/,
  shape: /\d+ bytes of extras, \d+ of key and \d+ of value/,
  dataType: /data type/,
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

  it('a length no memcached item can hold (a value over 1 GiB): refused from the header alone, whatever maxItemSize', () => {
    // A GETK or GATK hit: extras 4 + key 6, and one byte more of value than 1 GiB; then 2 GiB and 4 GiB - 1.
    for (const body of [10 + MAX_VALUE_BYTES + 1, 0x80000000, 0xffffffff]) {
      for (const protocol of [binary, binaryProtocol(64)]) {
        assertViolation(protocol, [GET], withBodyLength(GET_HIT, body).subarray(0, 24), REASON.tooLong, NEXT)
        assertViolation(protocol, [GET], withBodyLength(GET_HIT, body).subarray(0, 34), REASON.tooLong, NEXT)
        const gatHit = binaryResponse({ opcode: OPCODES.gatk, opaque: 13, cas: 1n, extras: FLAGS, key: 'sess:a' })
        assertViolation(protocol, [{ ...GET, command: 'gat' }], withBodyLength(gatHit, body), REASON.tooLong, NEXT)
      }
    }
    // Any other reply announcing as much: a set's success, a miss, an error.
    const set: Awaited = { command: 'set', key: 'sess:a', opaque: 8 }
    assertViolation(binary, [set], withBodyLength(binaryResponse({ opcode: OPCODES.set, opaque: 8 }), 0x80000000), REASON.tooLong, NEXT)
    const miss = binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 13, key: 'sess:a' })
    assertViolation(binary, [GET], withBodyLength(miss, 0xffffffff), REASON.tooLong, NEXT)
    const error = binaryResponse({ opcode: OPCODES.set, status: 0x0082, opaque: 8 })
    assertViolation(binary, [set], withBodyLength(error, MAX_VALUE_BYTES + 1), REASON.tooLong, NEXT)
  })

  it('a hit announcing exactly 1 GiB of value is not refused: it is being skipped, so nothing is delivered before its bytes pass', () => {
    const header = withBodyLength(GET_HIT, 10 + MAX_VALUE_BYTES).subarray(0, 34)
    assertNothingYet(binary, [GET], header)
    assertNothingYet(binaryProtocol(64), [GET], header)
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

/** A GETK (or GATK) hit with `value`: by default the answer to GET (key sess:a, opaque 13), CAS 1. */
function hitFrame(
  value: Buffer | string,
  { opaque = 13, key = 'sess:a' as string | Buffer, opcode = OPCODES.getk as number, cas = 1n } = {},
): Buffer {
  return binaryResponse({ opcode, opaque, cas, extras: FLAGS, key, value })
}

/** GET_HIT's fields, for variants of it. */
const HIT_FIELDS = { opcode: OPCODES.getk, opaque: 13, cas: 1n, extras: FLAGS, key: 'sess:a', value: VALUE }

describe("binary: a read's value over maxItemSize is skipped unread, answered tooLarge, and the connection reads on", () => {
  const LIMIT = 64
  const small = binaryProtocol(LIMIT)
  /** One byte over the limit, and full of what a reader must not take for frames: a NOOP reply, CRLF, 0x81. */
  const OVER = Buffer.concat([binaryResponse({ opcode: OPCODES.noop, opaque: 14 }), Buffer.from('\r\n\x81\x81', 'latin1')])
  const over = Buffer.concat([OVER, Buffer.alloc(LIMIT + 1 - OVER.length, 0x81)])
  assert.equal(over.length, LIMIT + 1)
  const NOOP14: Awaited = { command: 'noop', key: '', opaque: 14 }
  const noop14 = binaryResponse({ opcode: OPCODES.noop, opaque: 14 })

  it('a GETK hit one byte over maxItemSize, then a NOOP reply: tooLarge naming both sizes (no value, no CAS), then the NOOP; whole, at every cut, byte by byte', () => {
    assertReadsAs(small, [GET, NOOP14], Buffer.concat([hitFrame(over), noop14]), [skipped(LIMIT + 1, LIMIT), reply('ok')])
  })

  it('a GATK hit likewise; a value exactly at maxItemSize is still read whole', () => {
    const gat: Awaited = { command: 'gat', key: 'sess:a', opaque: 13 }
    assertReadsAs(small, [gat, NOOP14], Buffer.concat([hitFrame(over, { opcode: OPCODES.gatk }), noop14]), [
      skipped(LIMIT + 1, LIMIT),
      reply('ok'),
    ])
    const atLimit = over.subarray(0, LIMIT)
    assertReadsAs(small, [gat, NOOP14], Buffer.concat([hitFrame(atLimit, { opcode: OPCODES.gatk }), noop14]), [
      reply('ok', { value: atLimit, cas: 1n }),
      reply('ok'),
    ])
  })

  it('skipped values back to back and between hits, misses and writes, pipelined: every reply in order, however cut', () => {
    const big = Buffer.alloc(200, 'b')
    const awaited: Awaited[] = [
      { command: 'get', key: 'sess:1', opaque: 1 },
      { command: 'gat', key: 'sess:2', opaque: 2 },
      { command: 'get', key: 'sess:3', opaque: 3 },
      { command: 'get', key: 'sess:4', opaque: 4 },
      { command: 'set', key: 'sess:4', opaque: 5 },
      { command: 'get', key: 'sess:5', opaque: 6 },
    ]
    const stream = Buffer.concat([
      hitFrame(over, { key: 'sess:1', opaque: 1 }),
      hitFrame(big, { key: 'sess:2', opaque: 2, opcode: OPCODES.gatk }),
      binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 3, key: 'sess:3' }),
      hitFrame('v4', { key: 'sess:4', opaque: 4, cas: 4n }),
      binaryResponse({ opcode: OPCODES.set, opaque: 5, cas: 5n }),
      hitFrame(over, { key: 'sess:5', opaque: 6 }),
    ])
    assertReadsAs(small, awaited, stream, [
      skipped(LIMIT + 1, LIMIT),
      skipped(200, LIMIT),
      reply('miss'),
      reply('ok', { value: 'v4', cas: 4n }),
      reply('ok', { cas: 5n }),
      skipped(LIMIT + 1, LIMIT),
    ])
  })

  it('a skipped hit and the reply after it, split over three chunks at every pair of offsets', () => {
    const bytes = Buffer.concat([hitFrame(over), noop14])
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const chunks = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)].map((c) => Buffer.from(c))
        assert.deepEqual(
          readChunks(small, [GET, NOOP14], chunks),
          [{ reply: skipped(LIMIT + 1, LIMIT) }, { reply: reply('ok') }],
          `cut at ${a} and ${b}`,
        )
      }
    }
  })

  it('a value of 1 MiB + 1 byte under the default maxItemSize, skipped across 64 KiB chunks: the next reply read in the last chunk or in a later one', () => {
    const big = Buffer.alloc(MAX_ITEM_SIZE + 1, 0x81)
    big.set(noop14, 1000)
    const frame = hitFrame(big, { opcode: OPCODES.gatk, cas: 5n })
    const gat: Awaited = { command: 'gat', key: 'sess:a', opaque: 13 }
    const stream = Buffer.concat([frame, noop14])
    const expected = [{ reply: skipped(MAX_ITEM_SIZE + 1, MAX_ITEM_SIZE) }, { reply: reply('ok') }]
    const every = (data: Buffer, size: number) => {
      const chunks: Buffer[] = []
      for (let at = 0; at < data.length; at += size) chunks.push(data.subarray(at, at + size))
      return chunks
    }
    // The frame is not a multiple of 64 KiB: its last bytes and the NOOP reply share the last chunk.
    assert.notEqual(frame.length % 65536, 0)
    assert.deepEqual(readChunks(binary, [gat, NOOP14], every(stream, 65536)), expected, '64 KiB chunks, the NOOP in the last one')
    assert.deepEqual(readChunks(binary, [gat, NOOP14], [...every(frame, 65536), noop14]), expected, 'the NOOP in a chunk of its own')
    assert.deepEqual(readChunks(binary, [gat, NOOP14], [...every(frame, 65536), ...byteByByte(noop14)]), expected, 'the NOOP byte by byte')
    assert.deepEqual(readChunks(binary, [gat, NOOP14], every(stream, 999)), expected, '999-byte chunks')
    assert.deepEqual(readChunks(binary, [gat, NOOP14], [stream]), expected, 'whole')
    for (const at of [1, 24, 34, 35, 24 + 4096, frame.length - 1, frame.length, frame.length + 1]) {
      assert.deepEqual(readChunks(binary, [gat, NOOP14], cutAt(stream, at)), expected, `cut at ${at}`)
    }
    // Nothing is delivered before the last byte of the value has passed; then the tooLarge at once.
    const reader = openReader(binary, [gat, NOOP14])
    reader.read(frame.subarray(0, frame.length - 1))
    assert.deepEqual(reader.events, [])
    reader.read(frame.subarray(frame.length - 1))
    assert.deepEqual(reader.events, [expected[0]])
  })

  it('the opcode, opaque and echoed key are checked before a value is skipped: from the header and key alone', () => {
    const cases: Array<[Buffer, RegExp]> = [
      [hitFrame(over, { key: 'sess:b' }), REASON.anotherKey],
      [hitFrame(over, { key: 'sess:aa' }), REASON.anotherKey],
      [hitFrame(over, { opaque: 14 }), REASON.outOfOrder],
      [hitFrame(over, { opcode: OPCODES.gatk }), REASON.outOfOrder],
    ]
    for (const [frame, reason] of cases) {
      assertViolation(small, [GET], frame, reason, NEXT)
      const keyLength = frame.readUInt16BE(2)
      assertViolation(small, [GET], frame.subarray(0, 24 + 4 + keyLength), reason, NEXT)
    }
  })

  it('only a hit is skipped: a miss or a write carrying more than maxItemSize is a violation', () => {
    const miss = binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 13, key: 'sess:a', value: over })
    assertViolation(small, [GET], miss, REASON.shape, NEXT)
    const set = binaryResponse({ opcode: OPCODES.set, opaque: 8, cas: 1n, value: over })
    assertViolation(small, [{ command: 'set', key: 'sess:a', opaque: 8 }], set, REASON.shape, NEXT)
  })

  it('after a skipped value the reader is clean: a reply out of order right after it is still a violation, and nothing after it is read', () => {
    const stream = Buffer.concat([hitFrame(over), binaryResponse({ opcode: OPCODES.noop, opaque: 15 }), noop14])
    for (const { label, chunks } of chunkings(stream)) {
      const events = readChunks(small, [GET, NOOP14, NEXT.awaited], chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: skipped(LIMIT + 1, LIMIT) }, label)
      assert.ok('violation' in events[1] && REASON.outOfOrder.test(events[1].violation), label)
    }
  })
})

describe('binary: a reply must have the shape its request and status allow', () => {
  const SET: Awaited = { command: 'set', key: 'sess:a', opaque: 8 }
  const TOUCH: Awaited = { command: 'touch', key: 'sess:a', opaque: 15 }

  it('the magic byte is checked on the first byte: a text reply shorter than a header is refused at once', () => {
    for (const bytes of ['E', 'ERROR\r\n', 'SERVER_ERROR\r\n', '\r\n']) {
      assertViolation(binary, [GET], Buffer.from(bytes), REASON.magic, NEXT)
    }
    // A good reply, then one byte that is not 0x81: the first is read, the byte refused without waiting for 23 more.
    for (const { label, chunks } of chunkings(Buffer.concat([GET_HIT, Buffer.from('E')]))) {
      const events = readChunks(binary, [GET, NEXT.awaited], chunks)
      assert.equal(events.length, 2, label)
      assert.deepEqual(events[0], { reply: SESSION[12].expect }, label)
      assert.ok('violation' in events[1] && REASON.magic.test(events[1].violation), label)
    }
  })

  it('a data type other than 0 (raw bytes), on a hit, a miss, a write, a no-op, an error', () => {
    for (const dataType of [1, 0x80, 0xff]) {
      assertViolation(binary, [GET], binaryResponse({ ...HIT_FIELDS, dataType }), REASON.dataType, NEXT)
      assertViolation(
        binary,
        [GET],
        binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 13, key: 'sess:a', dataType }),
        REASON.dataType,
        NEXT,
      )
      assertViolation(binary, [SET], binaryResponse({ opcode: OPCODES.set, opaque: 8, cas: 1n, dataType }), REASON.dataType, NEXT)
      assertViolation(binary, [NEXT.awaited], binaryResponse({ opcode: OPCODES.noop, opaque: 99, dataType }), REASON.dataType)
      assertViolation(
        binary,
        [SET],
        binaryResponse({ opcode: OPCODES.set, status: 0x0082, opaque: 8, value: 'Out of memory', dataType }),
        REASON.dataType,
        NEXT,
      )
    }
  })

  it("a read's hit without exactly 4 bytes of extras (none, 8)", () => {
    for (const command of ['get', 'gat'] as const) {
      const opcode = command === 'get' ? OPCODES.getk : OPCODES.gatk
      for (const extras of [Buffer.alloc(0), uint32s(0, 0), Buffer.alloc(1)]) {
        const frame = binaryResponse({ opcode, opaque: 13, cas: 1n, extras, key: 'sess:a', value: VALUE })
        assertViolation(binary, [{ ...GET, command }], frame, REASON.shape, NEXT)
      }
    }
  })

  it("a read's miss with anything besides the echoed key (flags, a message, both)", () => {
    for (const command of ['get', 'gat'] as const) {
      const opcode = command === 'get' ? OPCODES.getk : OPCODES.gatk
      for (const fields of [{ extras: FLAGS }, { value: NOT_FOUND }, { extras: FLAGS, value: VALUE }]) {
        const frame = binaryResponse({ opcode, status: 0x0001, opaque: 13, key: 'sess:a', ...fields })
        assertViolation(binary, [{ ...GET, command }], frame, REASON.shape, NEXT)
      }
    }
  })

  it("TOUCH's success carries nothing or its 4 bytes of flags, and is read as ok with its CAS", () => {
    assertReadsAs(binary, [TOUCH], binaryResponse({ opcode: OPCODES.touch, opaque: 15, cas: 3n }), [reply('ok', { cas: 3n })])
    assertReadsAs(binary, [TOUCH], binaryResponse({ opcode: OPCODES.touch, opaque: 15, cas: 3n, extras: FLAGS }), [
      reply('ok', { cas: 3n }),
    ])
  })

  it("TOUCH's success with anything else: 8 bytes of extras, a key, a value", () => {
    for (const fields of [
      { extras: uint32s(0, 0) },
      { key: 'sess:a' },
      { value: VALUE },
      { extras: FLAGS, value: VALUE },
      { extras: FLAGS, key: 'sess:a' },
    ]) {
      assertViolation(binary, [TOUCH], binaryResponse({ opcode: OPCODES.touch, opaque: 15, cas: 3n, ...fields }), REASON.shape, NEXT)
    }
  })

  it('any other success with extras, a key or a value (set, cas, add, replace, delete, noop)', () => {
    const cases: Array<[Awaited['command'], number]> = [
      ['set', OPCODES.set],
      ['cas', OPCODES.set],
      ['add', OPCODES.add],
      ['replace', OPCODES.replace],
      ['delete', OPCODES.delete],
      ['noop', OPCODES.noop],
    ]
    for (const [command, opcode] of cases) {
      for (const fields of [{ extras: FLAGS }, { key: 'sess:a' }, { value: VALUE }, { value: 'x' }]) {
        const frame = binaryResponse({ opcode, opaque: 8, cas: 1n, ...fields })
        assertViolation(binary, [{ command, key: command === 'noop' ? '' : 'sess:a', opaque: 8 }], frame, REASON.shape, NEXT)
      }
    }
  })

  it('an error status with extras, a key, or a body over 1024 bytes; 1024 bytes of message are still read', () => {
    for (const [awaited, opcode] of [
      [GET, OPCODES.getk],
      [SET, OPCODES.set],
      [TOUCH, OPCODES.touch],
    ] as const) {
      for (const status of [0x0002, 0x0003, 0x0020, 0x0082]) {
        const error = { opcode, status, opaque: awaited.opaque }
        assertViolation(binary, [awaited], binaryResponse({ ...error, extras: FLAGS, value: 'Out of memory' }), REASON.shape, NEXT)
        assertViolation(binary, [awaited], binaryResponse({ ...error, key: 'sess:a' }), REASON.shape, NEXT)
        assertViolation(binary, [awaited], binaryResponse({ ...error, value: 'x'.repeat(1025) }), REASON.shape, NEXT)
      }
      // A miss of a write or touch: the same rule (only a read's miss echoes the key).
      if (awaited !== GET) {
        assertViolation(
          binary,
          [awaited],
          binaryResponse({ opcode, status: 0x0001, opaque: awaited.opaque, key: 'sess:a' }),
          REASON.shape,
          NEXT,
        )
      }
    }
    assertReadsAs(binary, [SET], binaryResponse({ opcode: OPCODES.set, status: 0x0082, opaque: 8, value: 'x'.repeat(1024) }), [
      reply('serverError', { message: 'out of memory' }),
    ])
  })

  it('the echoed key is compared as bytes: bytes that decode to the requested key as UTF-8 (U+FFFD, Latin-1) are another key', () => {
    // 0xff is no UTF-8: decoded, "sess:\xff" would read as "sess:\ufffd".
    const replacement: Awaited = { command: 'get', key: 'sess:\ufffd', opaque: 13 }
    const invalid = Buffer.from('sess:\xff', 'latin1')
    assertViolation(binary, [replacement], hitFrame(VALUE, { key: invalid }), REASON.anotherKey, NEXT)
    const miss = binaryResponse({ opcode: OPCODES.getk, status: 0x0001, opaque: 13, key: invalid })
    assertViolation(binary, [replacement], miss, REASON.anotherKey, NEXT)
    // An overlong encoding of ':' (0xc0 0xba), and "é" as one Latin-1 byte.
    const overlong = Buffer.concat([Buffer.from('sess'), Buffer.from([0xc0, 0xba]), Buffer.from('a')])
    assertViolation(binary, [GET], hitFrame(VALUE, { key: overlong }), REASON.anotherKey, NEXT)
    const latin1 = Buffer.from('sess:\xe9', 'latin1')
    assertViolation(binary, [{ command: 'get', key: 'sess:é', opaque: 13 }], hitFrame(VALUE, { key: latin1 }), REASON.anotherKey, NEXT)
    // The same keys as their UTF-8 bytes are read.
    assertReadsAs(binary, [replacement], hitFrame(VALUE, { key: 'sess:\ufffd' }), [reply('ok', { value: VALUE, cas: 1n })])
    assertReadsAs(binary, [{ command: 'get', key: 'sess:é', opaque: 13 }], hitFrame(VALUE, { key: 'sess:é' }), [
      reply('ok', { value: VALUE, cas: 1n }),
    ])
  })
})

describe('a binary reader is never left half-way through a frame', () => {
  it('a value exactly at maxItemSize is read, and the reply after it parses from a clean state', () => {
    const limit = 64
    const small = binaryProtocol(limit)
    const atLimit = binaryResponse({ opcode: OPCODES.getk, opaque: 1, extras: FLAGS, key: 'sess:a', value: 'v'.repeat(limit) })
    const next = binaryResponse({ opcode: OPCODES.set, opaque: 2, cas: 9n })
    assertReadsAs(
      small,
      [
        { command: 'get', key: 'sess:a', opaque: 1 },
        { command: 'set', key: 'sess:a', opaque: 2 },
      ],
      Buffer.concat([atLimit, next]),
      [reply('ok', { value: 'v'.repeat(limit) }), reply('ok', { cas: 9n })],
    )
  })

  it('a 1 MiB value, exactly the default maxItemSize, is read whole, however the stream is cut', () => {
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

  it('touch: TOUCH (0x1c), the expiry in its extras (an absolute time past 30 days as is, clamped to 2^31 - 1)', () => {
    assert.equal(
      layout(encode({ name: 'touch', key: 'sess:a', expiry: 2592001 }, 8)),
      `80 1c 0006 04 00 0000 0000000a 00000008 0000000000000000 | 00278d01 | ${SESS_A} | `,
    )
    // memcached reads the field as a signed 32-bit number: anything larger is written as the largest it keeps.
    for (const expiry of [0x7fffffff, 0x80000000, 0xfffffffe]) {
      assert.equal(
        layout(encode({ name: 'touch', key: 'sess:a', expiry }, 8)),
        `80 1c 0006 04 00 0000 0000000a 00000008 0000000000000000 | 7fffffff | ${SESS_A} | `,
        `expiry ${expiry}`,
      )
    }
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
