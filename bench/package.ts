// The store as users run it: the built package in dist/ (`npm run build`, which `npm run bench`
// does first). Not lib/ through tsx: its transform wraps every function that lib/ creates per
// operation in a naming helper, a cost that the published package and the other stores don't have.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type * as Package from '../lib/index.ts'

const built = new URL('../dist/index.js', import.meta.url)
if (!existsSync(built)) throw new Error(`${fileURLToPath(built)} is missing: run \`npm run build\` first (\`npm run bench\` does)`)

export const { MemcacheStore } = (await import(built.href)) as typeof Package
