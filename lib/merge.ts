import { isDeepStrictEqual } from 'node:util'

type Fields = Record<string, unknown>

/**
 * Three-way merge of a session at the top level, for a save that lost a race. `base` is what this
 * request started from, `mine` what it wants to save, `theirs` what another request stored
 * meanwhile. A field this request added, changed or deleted takes this request's value; every
 * other field keeps the stored one. The cookie is this request's. Both changed one field: this
 * (the later) save wins.
 */
export function mergeSessions(base: Fields, mine: Fields, theirs: Fields): Fields {
  const merged: Fields = { ...theirs }
  for (const name of new Set([...Object.keys(base), ...Object.keys(mine)])) {
    if (name === 'cookie') continue
    const inBase = Object.hasOwn(base, name)
    const inMine = Object.hasOwn(mine, name)
    const unchanged = inBase === inMine && (!inMine || isDeepStrictEqual(base[name], mine[name]))
    if (unchanged) continue
    if (inMine) merged[name] = mine[name]
    else delete merged[name]
  }
  merged.cookie = mine.cookie
  return merged
}

/** Whether two versions of a session hold the same fields, the cookie aside (the cookie is renewed on every request). */
export function sameFieldsButCookie(a: Fields, b: Fields): boolean {
  let count = 0
  for (const name of Object.keys(a)) {
    if (name === 'cookie') continue
    if (!Object.hasOwn(b, name) || !isDeepStrictEqual(a[name], b[name])) return false
    count++
  }
  for (const name of Object.keys(b)) if (name !== 'cookie') count--
  return count === 0
}
