import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { SessionData } from 'express-session'
import { lifetimeSeconds, MAX_RELATIVE_EXPIRY, memcachedExpiry } from '../lib/ttl.ts'

const now = Date.UTC(2026, 10, 25, 12, 0, 0)
const withCookie = (expires: unknown) => ({ cookie: { originalMaxAge: 1, expires } }) as unknown as SessionData

describe('lifetime in seconds', () => {
  it('comes from the cookie: remaining time rounded up, as a Date or an ISO string', () => {
    assert.equal(lifetimeSeconds(withCookie(new Date(now + 60_000)), 99, now), 60)
    assert.equal(lifetimeSeconds(withCookie(new Date(now + 60_001).toISOString()), 99, now), 61)
    assert.equal(lifetimeSeconds(withCookie(new Date(now + 1)), 99, now), 1)
  })

  it('is negative once the cookie has expired, to the millisecond', () => {
    assert.ok(lifetimeSeconds(withCookie(new Date(now)), 99, now) < 0)
    assert.ok(lifetimeSeconds(withCookie(new Date(now - 5_000)), 99, now) < 0)
  })

  it('falls back to the ttl number without a cookie expiry (null, false, missing, unparseable)', () => {
    for (const expires of [null, false, undefined, 'not a date']) assert.equal(lifetimeSeconds(withCookie(expires), 99, now), 99)
    assert.equal(lifetimeSeconds({} as SessionData, 0, now), 0)
  })

  it('comes from the ttl function whenever one is given, rounded up', () => {
    assert.equal(
      lifetimeSeconds(withCookie(new Date(now + 60_000)), () => 7.5, now),
      8,
    )
    assert.throws(() => lifetimeSeconds(withCookie(null), () => Number.NaN, now), /ttl` function to return a number/)
  })
})

describe('memcached expiry', () => {
  it('0 stays 0 (no expiry); otherwise one second more (memcached ticks in whole seconds)', () => {
    assert.equal(memcachedExpiry(0, now), 0)
    assert.equal(memcachedExpiry(1, now), 2)
    assert.equal(memcachedExpiry(86_400, now), 86_401)
  })

  it('switches to an absolute Unix time above 30 days, where memcached would read a timestamp', () => {
    assert.equal(memcachedExpiry(MAX_RELATIVE_EXPIRY - 1, now), MAX_RELATIVE_EXPIRY)
    const days31 = 31 * 86_400
    assert.equal(memcachedExpiry(days31, now), now / 1000 + days31 + 1)
    assert.equal(memcachedExpiry(MAX_RELATIVE_EXPIRY, now), now / 1000 + MAX_RELATIVE_EXPIRY + 1)
  })

  it('never exceeds what memcached keeps: it reads the field as a signed 32-bit number (T2147483648 stores nothing)', () => {
    assert.equal(memcachedExpiry(Number.POSITIVE_INFINITY, now), 2 ** 31 - 1)
    assert.equal(memcachedExpiry(200 * 365 * 86_400, now), 2 ** 31 - 1)
  })
})
