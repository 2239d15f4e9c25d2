// Firehose and sync figures of one PDS, measured by one client (this script)
// so that our server and the reference PDS can be compared side by side.
//
//   REFPDS_DIR=/tmp/refpds-bench /tmp/refpds-bench/node.sh e2e/firehose-bench/bench.mjs \
//     --url http://127.0.0.1:2693 --label ours [--subs 100] [--warm 20] [--live 200] \
//     [--records 5000] [--getrepo-runs 5] [--handle H --password P --login-only] [--json]
//
// Phases, on one account (created here unless --login-only):
//   live    --subs websocket subscribers (no cursor, live only) on
//           com.atproto.sync.subscribeRepos; --warm then --live sequential
//           createRecord calls, each followed by a wait until every
//           subscriber has its #commit (a closed loop: writes never queue).
//           Latency of a delivery: from just before the HTTP request is sent
//           to the frame's arrival at a subscriber, matched by rev after the
//           run (the message handler only timestamps and keeps the frame).
//   bulk    sequential createRecord calls until the account has --records
//           records (no subscriber attached); their latency is reported too.
//   replay  one subscriber from cursor=0, counting frames and bytes until no
//           frame arrived for 2 s; rate = frames / (last arrival - connect).
//   getRepo --getrepo-runs GETs of com.atproto.sync.getRepo, the body counted
//           as it streams; MB/s of the median run.
//
// Writes use plain fetch (undici, keep-alive) with the session's access JWT;
// websockets use the `ws` package; frames are decoded with @atproto/lex-cbor.
// All resolved from REFPDS_DIR's node_modules. Loopback targets only.

import crypto from 'node:crypto'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const REFPDS_DIR = process.env.REFPDS_DIR ?? '/tmp/refpds-bench'
const req = createRequire(path.join(REFPDS_DIR, 'package.json'))
const load = async (name) => {
  let p
  try {
    p = req.resolve(name)
  } catch {
    console.error(`bench.mjs: cannot resolve ${name} from ${REFPDS_DIR}/node_modules (run ${REFPDS_DIR}/start.sh --install, or set REFPDS_DIR)`)
    process.exit(2)
  }
  return import(pathToFileURL(p).href)
}
const WebSocket = (await load('ws')).default
const { decodeAll } = await load('@atproto/lex-cbor')

// --- arguments --------------------------------------------------------------
const args = process.argv.slice(2)
const opt = (name, def) => {
  const i = args.indexOf(name)
  if (i < 0) return def
  const v = args[i + 1]
  args.splice(i, 2)
  return v
}
const flag = (name) => {
  const i = args.indexOf(name)
  if (i < 0) return false
  args.splice(i, 1)
  return true
}
const base = (opt('--url') ?? 'http://127.0.0.1:2693').replace(/\/+$/, '')
const label = opt('--label', new URL(base).port)
const SUBS = Number(opt('--subs', 100))
const WARM = Number(opt('--warm', 20))
const LIVE = Number(opt('--live', 200))
const RECORDS = Number(opt('--records', 5000))
const GETREPO_RUNS = Number(opt('--getrepo-runs', 5))
const IDLE_MS = Number(opt('--idle-ms', 2000))
const handleArg = opt('--handle')
const passwordArg = opt('--password')
const loginOnly = flag('--login-only')
const asJson = flag('--json')
if (args.length) {
  console.error(`bench.mjs: unknown arguments ${args.join(' ')}`)
  process.exit(2)
}
const host = new URL(base).hostname
if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host) && !host.startsWith('127.')) {
  console.error(`bench.mjs: refusing non-loopback target ${base}`)
  process.exit(2)
}
const wsBase = base.replace(/^http/, 'ws') + '/xrpc/com.atproto.sync.subscribeRepos'
const log = (...a) => console.error(`bench.mjs [${label}]`, ...a)

// --- helpers ----------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))]
const r2 = (x) => +x.toFixed(2)
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return { n: s.length, p50: r2(pct(s, 0.5)), p90: r2(pct(s, 0.9)), p99: r2(pct(s, 0.99)), max: r2(s.at(-1)), mean: r2(s.reduce((a, b) => a + b, 0) / s.length) }
}
const load1 = () => os.loadavg()[0].toFixed(2)

async function xrpc(method, nsid, body, token) {
  const headers = {}
  if (body) headers['content-type'] = 'application/json'
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(`${base}/xrpc/${nsid}`, { method, headers, body: body ? JSON.stringify(body) : undefined })
  const text = await res.text()
  if (!res.ok) throw new Error(`${nsid}: ${res.status} ${text}`)
  return JSON.parse(text)
}

// decode a frame: [header, body]
const decodeFrame = (buf) => {
  const [h, b] = decodeAll(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength))
  return { op: h.op, t: h.t, seq: b?.seq, rev: b?.rev, blocks: b?.blocks?.byteLength }
}

const words = 'the a of to and in is it you that was for on are with as his they be at one have this from or had by hot word but what some we can out other were all there when up use your how said atproto bluesky federation relay appview firehose feed post repo'.split(' ')
const text = () => {
  const n = 60 + crypto.randomInt(221)
  let s = ''
  while (s.length < n) s += words[crypto.randomInt(words.length)] + ' '
  return s.slice(0, n)
}

// --- account ----------------------------------------------------------------
const desc = await xrpc('GET', 'com.atproto.server.describeServer')
const handle = handleArg ?? `fhb${crypto.randomBytes(3).toString('hex')}${desc.availableUserDomains[0]}`
const password = passwordArg ?? 'bench-Passw0rd!'
if (!loginOnly) {
  await xrpc('POST', 'com.atproto.server.createAccount', { handle, email: `${handle.split('.')[0]}@example.com`, password })
}
const session = await xrpc('POST', 'com.atproto.server.createSession', { identifier: handle, password })
const did = session.did
const token = session.accessJwt
let records = 0
async function createRecord() {
  const t0 = performance.now()
  const out = await xrpc('POST', 'com.atproto.repo.createRecord', {
    repo: did,
    collection: 'app.bsky.feed.post',
    record: { $type: 'app.bsky.feed.post', text: text(), langs: ['en'], createdAt: new Date().toISOString() },
  }, token)
  records++
  return { t0, ms: performance.now() - t0, rev: out.commit.rev }
}
log(`account ${did} (${handle}); load ${load1()}`)

// --- live delivery ----------------------------------------------------------
async function live() {
  const subs = []
  let received = 0
  let waiter = null
  for (let i = 0; i < SUBS; i++) {
    const ws = new WebSocket(wsBase, { perMessageDeflate: false })
    const sub = { ws, arrivals: [], msgs: [], closed: false }
    ws.on('message', (data) => {
      sub.arrivals.push(performance.now())
      sub.msgs.push(data)
      received++
      if (waiter && received >= waiter.target) {
        const w = waiter
        waiter = null
        w.resolve()
      }
    })
    ws.on('close', () => { sub.closed = true })
    ws.on('error', (e) => log(`subscriber ${i}: ${e.message}`))
    subs.push(sub)
  }
  await Promise.all(subs.map((s) => new Promise((res, rej) => { s.ws.once('open', res); s.ws.once('error', rej) })))
  // The reference polls its event table (backoff up to 1 s), so the
  // account's own events may still arrive as live ones: let them pass.
  await sleep(1500)
  const stray = received
  for (const s of subs) s.arrivals.length = s.msgs.length = 0
  received = 0
  const sent = new Map() // rev -> t0
  const revs = []
  const httpMs = []
  const one = async (measure) => {
    const target = received + SUBS
    const done = new Promise((resolve, reject) => {
      waiter = { target, resolve }
      setTimeout(() => reject(new Error(`deliveries stuck at ${received}/${target}`)), 30000).unref()
    })
    const w = await createRecord()
    sent.set(w.rev, w.t0)
    revs.push(w.rev)
    if (measure) httpMs.push(w.ms)
    if (received < target) await done
  }
  for (let i = 0; i < WARM; i++) await one(false)
  const loadBefore = load1()
  const t0 = performance.now()
  for (let i = 0; i < LIVE; i++) await one(true)
  const elapsed = performance.now() - t0
  for (const s of subs) s.ws.close()
  // match every frame to its write by rev
  const all = []
  const last = new Array(LIVE).fill(0)
  subs.forEach((s, si) => {
    if (s.msgs.length !== WARM + LIVE) throw new Error(`subscriber ${si}: ${s.msgs.length} frames, want ${WARM + LIVE}`)
    s.msgs.forEach((m, j) => {
      const f = decodeFrame(m)
      if (f.t !== '#commit' || f.rev !== revs[j]) throw new Error(`subscriber ${si} frame ${j}: ${f.t} rev ${f.rev}, want ${revs[j]}`)
      if (j < WARM) return
      const lat = s.arrivals[j] - sent.get(f.rev)
      all.push(lat)
      last[j - WARM] = Math.max(last[j - WARM], lat)
    })
  })
  return { subs: SUBS, writes: LIVE, strayFramesBeforeWrites: stray, delivery: stats(all), lastSubscriber: stats(last), createRecord: stats(httpMs), writesPerSec: r2((LIVE / elapsed) * 1000), load: loadBefore }
}

// --- bulk -------------------------------------------------------------------
async function bulk() {
  const ms = []
  const loadBefore = load1()
  const t0 = performance.now()
  let n = 0
  while (records < RECORDS) {
    ms.push((await createRecord()).ms)
    if (++n % 1000 === 0) log(`bulk: ${records}/${RECORDS} records`)
  }
  return { writes: n, records, createRecord: n ? stats(ms) : null, perSec: n ? r2((n / (performance.now() - t0)) * 1000) : null, load: loadBefore }
}

// --- replay -----------------------------------------------------------------
async function replay() {
  const loadBefore = load1()
  const t0 = performance.now()
  const ws = new WebSocket(`${wsBase}?cursor=0`, { perMessageDeflate: false, maxPayload: 16 << 20 })
  let n = 0
  let bytes = 0
  let lastAt = t0
  let first = null
  let lastMsg = null
  const types = {}
  ws.on('message', (data) => {
    lastAt = performance.now()
    n++
    bytes += data.byteLength
    if (!first) first = data
    lastMsg = data
  })
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej) })
  const openedAt = performance.now()
  while (performance.now() - Math.max(lastAt, openedAt) < IDLE_MS) await sleep(50)
  ws.close()
  const lf = lastMsg ? decodeFrame(lastMsg) : {}
  const ff = first ? decodeFrame(first) : {}
  const secs = (lastAt - t0) / 1000
  return { events: n, bytes, firstSeq: ff.seq, lastSeq: lf.seq, seconds: r2(secs), eventsPerSec: r2(n / secs), MBps: r2(bytes / (1 << 20) / secs), bytesPerEvent: Math.round(bytes / n), load: loadBefore }
}

// --- getRepo ----------------------------------------------------------------
async function getRepo() {
  const runs = []
  const loadBefore = load1()
  for (let i = 0; i < GETREPO_RUNS + 1; i++) {
    const t0 = performance.now()
    const res = await fetch(`${base}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    if (!res.ok) throw new Error(`getRepo: ${res.status} ${await res.text()}`)
    let size = 0
    for await (const chunk of res.body) size += chunk.byteLength
    const ms = performance.now() - t0
    if (i > 0) runs.push({ size, ms }) // the first is a warm-up
  }
  runs.sort((a, b) => a.ms - b.ms)
  const med = runs[Math.floor((runs.length - 1) / 2)]
  return { records, bytes: med.size, medianMs: r2(med.ms), MBps: r2(med.size / (1 << 20) / (med.ms / 1000)), bestMBps: r2(runs[0].size / (1 << 20) / (runs[0].ms / 1000)), runs: runs.length, load: loadBefore }
}

// --- run ----------------------------------------------------------------------
const result = { label, base, did, subs: SUBS }
log(`live: ${SUBS} subscribers, ${WARM} warm-up + ${LIVE} writes`)
result.live = await live()
log(`live: delivery p50 ${result.live.delivery.p50} ms p99 ${result.live.delivery.p99} ms`)
log(`bulk: to ${RECORDS} records`)
result.bulk = await bulk()
log(`replay from cursor 0`)
result.replay = await replay()
log(`replay: ${result.replay.events} events, ${result.replay.eventsPerSec} events/s, ${result.replay.MBps} MB/s`)
result.getRepo = await getRepo()
log(`getRepo: ${result.getRepo.bytes} bytes, ${result.getRepo.MBps} MB/s`)
if (asJson) console.log(JSON.stringify(result))
else console.log(JSON.stringify(result, null, 2))
process.exit(0)
