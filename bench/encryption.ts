// The cost of `secret`: AES-256-GCM per operation, in isolation and through the store against a
// real memcached. Starts its own memcached; run with `npm run build && node --import tsx bench/encryption.ts`.
import { availableParallelism, loadavg } from 'node:os'
import { SessionCipher } from '../lib/crypto.ts'
import { MemcachedServer } from '../spec/harness/memcached.ts'
import { plainSession } from '../spec/harness/stores.ts'
import { MemcacheStore } from './package.ts'

const CIPHER_OPS = 50_000
const STORE_OPS = 10_000
const CONCURRENCY = 50

const sizes = { small: 'x'.repeat(100), large: 'x'.repeat(4000) }

let t0 = performance.now()
const cipher = new SessionCipher(['a secret for the benchmark'])
console.log(`key derivation (scrypt N=2^14, once per secret at construction): ${(performance.now() - t0).toFixed(1)} ms\n`)

console.log('| value | seal (encrypt) | open (decrypt) |\n|---|---|---|')
for (const [name, pad] of Object.entries(sizes)) {
  const plain = Buffer.from(JSON.stringify(plainSession({ user: 'ada', pad })))
  const key = 'sess:abcdefghijklmnopqrstuvwxyz012345'
  for (let i = 0; i < 2000; i++) cipher.open(cipher.seal(plain, key), key) // warm-up
  t0 = performance.now()
  let sealed: Buffer = plain
  for (let i = 0; i < CIPHER_OPS; i++) sealed = cipher.seal(plain, key)
  const sealUs = ((performance.now() - t0) * 1000) / CIPHER_OPS
  t0 = performance.now()
  for (let i = 0; i < CIPHER_OPS; i++) cipher.open(sealed, key)
  const openUs = ((performance.now() - t0) * 1000) / CIPHER_OPS
  console.log(`| ${name} (${plain.length} B) | ${sealUs.toFixed(1)} µs | ${openUs.toFixed(1)} µs |`)
}

const server = await MemcachedServer.start({ memoryMb: 256 })
const plainStore = new MemcacheStore({ servers: server.address, prefix: 'plain:' })
const encryptedStore = new MemcacheStore({ servers: server.address, prefix: 'enc:', secret: 'a secret for the benchmark' })
try {
  console.log(
    `\n| store | sequential set+get (median of ${STORE_OPS}) | p99 | ${CONCURRENCY} in flight: set+get pairs/s | Node CPU per pair |\n|---|---|---|---|---|`,
  )
  for (let round = 0; round < 4; round++) {
    for (const [name, store] of [
      ['plain', plainStore],
      ['secret', encryptedStore],
    ] as const) {
      const sess = plainSession({ user: 'ada', pad: sizes.small })
      const latencies: number[] = []
      for (let i = 0; i < STORE_OPS; i++) {
        const start = performance.now()
        await store.set(`s${i}`, sess)
        await store.get(`s${i}`)
        latencies.push(performance.now() - start)
      }
      latencies.sort((a, b) => a - b)
      let next = 0
      const cpuBefore = process.cpuUsage()
      const begun = performance.now()
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < STORE_OPS) {
            const sid = `c${next++}`
            await store.set(sid, sess)
            await store.get(sid)
          }
        }),
      )
      const perSecond = STORE_OPS / ((performance.now() - begun) / 1000)
      const cpu = process.cpuUsage(cpuBefore)
      const cpuPerPair = (cpu.user + cpu.system) / STORE_OPS
      if (round > 0) {
        const ms = (q: number) => `${(latencies[Math.floor(latencies.length * q)] * 1000).toFixed(0)} µs`
        console.log(`| ${name} (round ${round}) | ${ms(0.5)} | ${ms(0.99)} | ${perSecond.toFixed(0)} | ${cpuPerPair.toFixed(0)} µs |`)
      }
    }
  }
  console.log(
    `\nnode ${process.version}, ${availableParallelism()} CPU(s), load average ${loadavg()
      .map((n) => n.toFixed(1))
      .join(' ')} (round 0, a warm-up, is not shown; rounds alternate plain and secret)`,
  )
} finally {
  await plainStore.close()
  await encryptedStore.close()
  await server.stop()
}
