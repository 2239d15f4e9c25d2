// Signs in to the PDS through its real OAuth pages in Chromium, with
// @atproto/oauth-client-node as the app (a loopback development client),
// approves, then creates a post with the DPoP-bound session.
//
// Run by the Go test TestBrowserOAuth (cmd/pds), which starts the PDS and a
// mock PLC and checks that the firehose carries the post. Environment:
//   PDS_URL, PLC_URL, HANDLE, PASSWORD   the server and the account
//   CHROMIUM                             the browser binary (Debian chromium)
//   USER_DATA_DIR                        a fresh, empty profile directory
//   SHOTS_DIR                            if set, PNG screenshots of the pages go there
// Prints one JSON line: {"did", "uri", "cid", "text"}.
import http from 'node:http'
import { NodeOAuthClient, buildAtprotoLoopbackClientMetadata } from '@atproto/oauth-client-node'
import { chromium } from 'playwright-core'

const env = (k) => {
  const v = process.env[k]
  if (!v) throw new Error(`${k} is not set`)
  return v
}
const PDS_URL = env('PDS_URL')
const scope = 'atproto transition:generic'

// The app's callback, on 127.0.0.1 as a loopback client's must be.
let onCallback
const called = new Promise((resolve) => (onCallback = resolve))
const cbServer = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://127.0.0.1')
  if (u.pathname !== '/callback') return res.writeHead(404).end()
  res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>Signed in</title><p>Signed in. You can close this window.</p>')
  onCallback(u.searchParams)
})
await new Promise((r) => cbServer.listen(0, '127.0.0.1', r))
const redirectUri = `http://127.0.0.1:${cbServer.address().port}/callback`

const mem = () => {
  const m = new Map()
  return { set: async (k, v) => void m.set(k, v), get: async (k) => m.get(k), del: async (k) => void m.delete(k) }
}
const client = new NodeOAuthClient({
  clientMetadata: buildAtprotoLoopbackClientMetadata({ scope, redirect_uris: [redirectUri] }),
  stateStore: mem(),
  sessionStore: mem(),
  handleResolver: PDS_URL,
  plcDirectoryUrl: env('PLC_URL'),
  allowHttp: true,
})

const authUrl = await client.authorize(env('HANDLE'), { scope })

// The system browser, headless, in a fresh profile, with nothing that
// reaches the internet on its own (no QUIC, sync, component or background
// updates). Playwright takes the profile as launchPersistentContext's
// argument, not as --user-data-dir.
const browser = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ],
  viewport: { width: 480, height: 860 },
  deviceScaleFactor: 1,
  javaScriptEnabled: false,
})
try {
  const page = browser.pages()[0] ?? (await browser.newPage())
  const shot = async (name) => {
    if (process.env.SHOTS_DIR) await page.screenshot({ path: `${process.env.SHOTS_DIR}/${name}.png`, fullPage: true })
  }
  await page.goto(authUrl.toString())
  await page.getByLabel('Password').waitFor()
  await shot('oauth-sign-in')
  await page.getByLabel('Password').fill(env('PASSWORD'))
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Allow this app to use your account?' }).waitFor()
  await shot('oauth-consent')
  await page.getByRole('button', { name: 'Allow' }).click()
  const params = await Promise.race([
    called,
    // unref: a pending timer would keep node alive 20 s after the work is done
    new Promise((_, reject) => setTimeout(() => reject(new Error('no callback within 20 s')), 20000).unref()),
  ])
  const { session } = await client.callback(params)

  const text = `Hello from an OAuth app (${new Date().toISOString()})`
  const res = await session.fetchHandler('/xrpc/com.atproto.repo.createRecord', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      repo: session.did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
    }),
  })
  const body = await res.json()
  if (!res.ok) throw new Error(`createRecord: HTTP ${res.status} ${JSON.stringify(body)}`)
  console.log(JSON.stringify({ did: session.did, uri: body.uri, cid: body.cid, text }))
} finally {
  await browser.close()
  cbServer.close()
}
