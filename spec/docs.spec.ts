// The README's tables derive from the code's single sources: every error code (ERROR_CODES) and
// every option (KNOWN_OPTIONS) appears in them, and nothing else does. spec/README.md names every
// spec file, and only those.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { ERROR_CODES } from '../lib/index.ts'
import { OPTION_NAMES } from '../lib/options.ts'

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')

/** The rows of the first table under a `## heading`, as arrays of cells. */
function table(heading: string): string[][] {
  const section = readme.split(`\n## ${heading}\n`)[1]?.split('\n## ')[0]
  assert.ok(section, `README has a "${heading}" section`)
  const lines = section.split('\n')
  const start = lines.findIndex((line) => line.startsWith('| '))
  const end = lines.findIndex((line, i) => i > start && !line.startsWith('| '))
  return lines
    .slice(start, end === -1 ? undefined : end)
    .filter((line) => !line.startsWith('| ---'))
    .slice(1)
    .map((line) => line.split(' | ').map((cell) => cell.replace(/^\| /, '').trim()))
}

describe('the README', () => {
  it('lists every error code with its kind, and no other', () => {
    const rows = table('Errors')
    const listed = rows.map(([code]) => code.replaceAll('`', ''))
    assert.deepEqual([...listed].sort(), Object.keys(ERROR_CODES).sort())
    for (const [code, kind] of rows) assert.equal(kind, ERROR_CODES[code.replaceAll('`', '') as keyof typeof ERROR_CODES].kind, code)
  })

  it('documents every option, and no other', () => {
    const listed = table('Options').flatMap(([cell]) => cell.split(',').map((name) => name.trim().replaceAll('`', '')))
    assert.deepEqual([...listed].sort(), [...OPTION_NAMES].sort())
  })

  it('stays short: at most about 250 lines, the way in within the first 120', () => {
    const lines = readme.split('\n')
    assert.ok(lines.length <= 250, `${lines.length} lines`)
    const runItLocally = lines.indexOf('## Run it locally')
    assert.ok(runItLocally >= 0 && runItLocally < 120, `"Run it locally" at line ${runItLocally + 1}`)
  })
})

describe('spec/README.md', () => {
  it('names every spec file, and no other', () => {
    const index = readFileSync(new URL('./README.md', import.meta.url), 'utf8')
    const listed = [...new Set([...index.matchAll(/`([\w-]+\.spec\.ts)`/g)].map((match) => match[1]))].sort()
    const files = readdirSync(new URL('.', import.meta.url))
      .filter((name) => name.endsWith('.spec.ts'))
      .sort()
    assert.deepEqual(listed, files)
  })
})
