// memcached's own command counters (`stats`), to count what the store sent during a request.
import type { MemcachedServer } from './memcached.ts'

/** Commands memcached received, by kind (a get-and-touch counts as one touch). */
export interface CommandCounts {
  get: number
  touch: number
  set: number
  delete: number
}

export async function commandCounts(server: MemcachedServer): Promise<CommandCounts> {
  const text = await server.command('stats')
  const read = (name: string) => Number(new RegExp(`STAT ${name} (\\d+)`).exec(text)?.[1])
  return { get: read('cmd_get'), touch: read('cmd_touch'), set: read('cmd_set'), delete: read('delete_hits') + read('delete_misses') }
}

/** The commands memcached received while `run` ran (nothing else may use the server meanwhile). */
export async function commandsDuring(server: MemcachedServer, run: () => Promise<unknown>): Promise<CommandCounts & { total: number }> {
  const before = await commandCounts(server)
  await run()
  const after = await commandCounts(server)
  const sent = {
    get: after.get - before.get,
    touch: after.touch - before.touch,
    set: after.set - before.set,
    delete: after.delete - before.delete,
  }
  return { ...sent, total: sent.get + sent.touch + sent.set + sent.delete }
}
