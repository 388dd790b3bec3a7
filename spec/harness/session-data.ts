// The session fields the tests use, and any other: with this index signature a session read from
// the store (store.get, store.all, req.session) is read field by field without a cast.
declare module 'express-session' {
  interface SessionData {
    views?: number
    user?: string
    secret?: string
    [field: string]: unknown
  }
}

export {}
