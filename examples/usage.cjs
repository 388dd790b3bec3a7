// The README's usage example in CommonJS. spec/package.spec.ts runs it against the packed package.
const express = require('express')
const session = require('express-session')
const { MemcacheStore } = require('express-session-memcache')

const secret = process.env.SESSION_SECRET
if (!secret) throw new Error('SESSION_SECRET is not set: set it to a long random string, which signs the session cookie')

const store = new MemcacheStore() // memcached at MEMCACHIER_SERVERS, MEMCACHE_SERVERS or localhost:11211
const app = express()
app.use(
  session({
    store,
    genid: store.genid, // optional: IDs that memcached has reserved (collision-checked ahead of time)
    secret,
    resave: false,
    saveUninitialized: false,
  }),
)
app.get('/', (req, res) => {
  req.session.views = (req.session.views ?? 0) + 1
  res.send(`${req.session.views} views`)
})
const port = Number(process.env.PORT ?? 3000)
app.listen(port, (error) => {
  if (error) throw error
  console.log(`Listening on http://localhost:${port}/`)
})
