// The two memcached stores compared in the benchmark ship no type declarations.
declare module 'connect-memjs' {
  import type session from 'express-session'
  export default function connectMemjs(s: typeof session): new (options: Record<string, unknown>) => session.Store
}
declare module 'connect-memcached' {
  import type session from 'express-session'
  export default function connectMemcached(
    s: typeof session,
  ): new (
    options: Record<string, unknown>,
  ) => session.Store & { client: { end(): void } }
}
declare module 'autocannon' {
  interface Histogram {
    average: number
    p50: number
    p99: number
  }
  interface Result {
    requests: Histogram & { total: number }
    latency: Histogram
    duration: number
    errors: number
    timeouts: number
    non2xx: number
  }
  interface Options {
    url: string
    connections: number
    duration: number
    requests: Array<{ setupRequest(req: { headers?: Record<string, string> }): unknown }>
  }
  export default function autocannon(options: Options): Promise<Result>
}
// express-session's ID generator (a dependency of express-session), compared with store.genid.
declare module 'uid-safe' {
  const uid: { sync(bytes: number): string }
  export default uid
}
