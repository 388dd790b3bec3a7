// The shape of lib/: the memcached client (lib/memcached/) imports nothing from the session layer
// above it, and no module of lib/ imports itself back through others (no cycle, type imports
// included). Read from the sources' import lines; no memcached needed.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

const lib = fileURLToPath(new URL('../lib/', import.meta.url))

/** Every .ts file under lib/, with the lib/ files it imports (relative imports, `import type` included). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>()
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const file = path.join(dir, name)
      if (statSync(file).isDirectory()) walk(file)
      else if (file.endsWith('.ts')) {
        const source = readFileSync(file, 'utf8')
        const imports = [...source.matchAll(/^(?:import|export)\b[^;]*?\bfrom '(\.{1,2}\/[^']+)'/gms)].map((match) =>
          path.join(path.dirname(file), match[1].replace(/\.js$/, '.ts')),
        )
        graph.set(file, imports)
      }
    }
  }
  walk(lib)
  return graph
}

function relative(file: string): string {
  return path.relative(path.dirname(lib), file)
}

describe('lib/', () => {
  const graph = importGraph()

  it('reads every module and the imports of each (the graph is not empty)', () => {
    assert.ok(graph.size > 20, `${graph.size} modules`)
    assert.ok((graph.get(path.join(lib, 'store.ts'))?.length ?? 0) > 5)
  })

  it('lib/memcached/ imports nothing from the session layer', () => {
    const inside = (file: string) => file.startsWith(path.join(lib, 'memcached') + path.sep)
    const upward = [...graph].flatMap(([file, imports]) =>
      inside(file) ? imports.filter((target) => !inside(target)).map((target) => `${relative(file)} -> ${relative(target)}`) : [],
    )
    assert.deepEqual(upward, [])
  })

  it('has no import cycle', () => {
    const cycles: string[] = []
    const state = new Map<string, 'visiting' | 'done'>()
    const stack: string[] = []
    const visit = (file: string): void => {
      if (state.get(file) === 'done') return
      if (state.get(file) === 'visiting') {
        cycles.push([...stack.slice(stack.indexOf(file)), file].map(relative).join(' -> '))
        return
      }
      state.set(file, 'visiting')
      stack.push(file)
      for (const target of graph.get(file) ?? []) {
        assert.ok(graph.has(target), `${relative(file)} imports ${relative(target)}, which does not exist`)
        visit(target)
      }
      stack.pop()
      state.set(file, 'done')
    }
    for (const file of graph.keys()) visit(file)
    assert.deepEqual(cycles, [])
  })
})
