export type { Serializer } from './codec.js'
export { MemcacheStoreError } from './errors.js'
export type { Logger, MemcacheStoreOptions, WeightedServer } from './options.js'
export { MemcacheStore } from './store.js'
