// Account migration between two PDSes with the reference's own client flow
// (@atproto/api, the sequence of the reference's account-migration guide:
// bluesky-social/pds ACCOUNT_MIGRATION.md and atproto.com/guides/account-migration),
// plus the checks that show nothing was lost. e2e/migrate.sh drives it.
//
//   node migrate.mjs seed   --pds URL --state FILE [--records 520] [--blobs 22] [--blob-kib 256]
//       creates a fresh account on PDS URL (random handle under its first
//       handle domain), fills it (posts, some with images, likes, follows, a
//       profile with avatar and banner, preferences) and writes FILE.
//   node migrate.mjs move   --to URL --state FILE --plc URL --token-cmd CMD [--new-kind ours|ref]
//       moves the account of FILE from the PDS FILE names to URL, then checks
//       the result, and updates FILE (current PDS). CMD is a shell command that
//       prints the old PDS's PLC-operation token on its last line of stdout
//       (env MIGRATE_DID is the account's DID): the guide's out-of-band email.
//       --new-kind ref: the new PDS is the reference; two checks that ours
//       must pass are reported as reference quirks instead (its head stays
//       the imported commit, signed by the old key, until the next write;
//       checkAccountStatus.privateStateValues is a constant 0).
//   node migrate.mjs snapshot --state FILE --out SNAP
//   node migrate.mjs verify --state FILE --to URL --snapshot SNAP --plc URL [--new-kind ours|ref]
//       the same checks after another tool (goat) moved the account of FILE
//       to URL; SNAP is the old PDS's view taken by snapshot before the move.
//   node migrate.mjs ref-plc-token --db FILE --did DID
//       prints the newest plc_operation token of DID from a reference PDS's
//       account.sqlite (the reference without SMTP sends no mail).
//
// Only loopback targets are accepted. Needs node >= 22 and the refpds copy's
// node_modules (REFPDS_DIR, default /tmp/refpds): @atproto/api,
// @atproto/crypto, @atproto/repo, better-sqlite3.
//
// Exit status: 0 all steps and checks passed; 1 some checks failed but the
// flow went through; 3 a step of the flow failed and it stopped there (the
// failing request, its status, error name and message are printed); 2 usage.

import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { execSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const REFPDS_DIR = process.env.REFPDS_DIR ?? '/tmp/refpds'
const req = createRequire(path.join(REFPDS_DIR, 'package.json'))
const load = async (name) => {
  let p
  try {
    p = req.resolve(name)
  } catch {
    console.error(`migrate.mjs: cannot resolve ${name} from ${REFPDS_DIR}/node_modules (run ${REFPDS_DIR}/start.sh --install, or set REFPDS_DIR)`)
    process.exit(2)
  }
  return import(pathToFileURL(p).href)
}

// ---------------------------------------------------------------------------
const argv = process.argv.slice(2)
const cmd = argv.shift()
const opts = {}
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith('--') || argv[i + 1] === undefined) usage(`bad argument ${argv[i]}`)
  opts[argv[i].slice(2)] = argv[i + 1]
}
function usage(msg) {
  console.error(`migrate.mjs: ${msg}\n` + fs.readFileSync(new URL(import.meta.url)).toString().split('\n').slice(4, 31).join('\n'))
  process.exit(2)
}
const need = (k) => opts[k] ?? usage(`--${k} is required`)
const loopback = (u) => {
  const h = new URL(u).hostname
  if (!(h === 'localhost' || h === '[::1]' || h.startsWith('127.'))) usage(`refusing non-loopback target ${u}`)
  return u.replace(/\/$/, '')
}

// minimums of the issue's acceptance test
const MIN = { records: 500, collections: 3, blobs: 20, blobBytes: 5 * 1024 * 1024 }

// ---------------------------------------------------------------------------
// Reporting: every step prints one line; a failed step names the request
// (method, server), the HTTP status, the XRPC error and message.
let failures = 0
const t0 = Date.now()
const stamp = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`
const describeErr = (e) => {
  if (e && typeof e === 'object' && 'status' in e) {
    // status 2: the client's own lexicon check of the answer failed
    if (e.status === 2 && e.validationError) {
      return `answer does not match the lexicon: ${e.validationError.message}; body ${JSON.stringify(e.responseBody)}`
    }
    return `HTTP ${e.status} ${e.error ?? ''}: ${e.message}`
  }
  return String(e?.stack ?? e)
}
// step runs fn; a thrown error ends the run (the flow cannot go on)
async function step(name, fn) {
  try {
    const r = await fn()
    console.log(`${stamp()} ok    ${name}${r && typeof r === 'string' ? `: ${r}` : ''}`)
    return r
  } catch (e) {
    console.log(`${stamp()} FAIL  ${name}: ${describeErr(e)}`)
    failures++
    throw new Stop()
  }
}
class Stop extends Error {}
// soft is a step outside the guide's flow (an extra check): its failure is
// counted and the flow goes on; it returns undefined then
async function soft(name, fn) {
  try {
    return await step(name, fn)
  } catch (e) {
    if (e instanceof Stop) return undefined
    throw e
  }
}
// quirk records a known difference of the reference PDS as the new PDS
// (--new-kind ref): the check that ours must pass is not made for it
function quirk(name, detail) {
  console.log(`${stamp()} quirk check ${name}: ${detail}`)
}
const isRef = () => {
  const k = opts['new-kind'] ?? 'ours'
  if (k !== 'ours' && k !== 'ref') usage(`--new-kind must be ours or ref, not ${k}`)
  return k === 'ref'
}
// check records a failed assertion and goes on (to show every difference)
function check(name, ok, detail) {
  console.log(`${stamp()} ${ok ? 'ok   ' : 'FAIL '} check ${name}${detail ? `: ${detail}` : ''}`)
  if (!ok) failures++
  return ok
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex')

// ---------------------------------------------------------------------------
// The state file carries the account between runs: credentials, current PDS.
const readState = () => JSON.parse(fs.readFileSync(need('state'), 'utf8'))
const writeState = (s) => fs.writeFileSync(need('state'), JSON.stringify(s, null, 2) + '\n', { mode: 0o600 })

// snapshot: every record's CID by URI, every blob's sha-256 and size, and
// the preferences, as the PDS serves them.
async function snapshot(agent, did) {
  const repo = (await agent.com.atproto.repo.describeRepo({ repo: did })).data
  const records = {}
  for (const collection of repo.collections) {
    let cursor
    do {
      const r = (await agent.com.atproto.repo.listRecords({ repo: did, collection, limit: 100, cursor })).data
      for (const rec of r.records) records[rec.uri] = rec.cid
      cursor = r.records.length ? r.cursor : undefined
    } while (cursor)
  }
  const blobs = {}
  let cursor
  do {
    const r = (await agent.com.atproto.sync.listBlobs({ did, limit: 100, cursor })).data
    for (const cid of r.cids) {
      const b = await agent.com.atproto.sync.getBlob({ did, cid })
      blobs[cid] = { sha256: sha256(b.data), size: b.data.length, mimeType: b.headers['content-type'] }
    }
    cursor = r.cids.length ? r.cursor : undefined
  } while (cursor)
  return { collections: repo.collections.sort(), records, blobs }
}

const summarize = (s) => {
  const bytes = Object.values(s.blobs).reduce((a, b) => a + b.size, 0)
  return `${Object.keys(s.records).length} records in ${s.collections.length} collections (${s.collections.join(', ')}), ${Object.keys(s.blobs).length} blobs, ${(bytes / 1048576).toFixed(2)} MiB`
}

function compareSnapshots(label, want, got) {
  check(`${label}: same collections`, JSON.stringify(want.collections) === JSON.stringify(got.collections),
    `${want.collections.join(',')} vs ${got.collections.join(',')}`)
  const missing = Object.keys(want.records).filter((u) => !(u in got.records))
  const extra = Object.keys(got.records).filter((u) => !(u in want.records))
  const changed = Object.keys(want.records).filter((u) => u in got.records && got.records[u] !== want.records[u])
  check(`${label}: every record, same CID`, !missing.length && !extra.length && !changed.length,
    `${Object.keys(got.records).length}/${Object.keys(want.records).length} records` +
      (missing.length ? `; missing ${missing.length} (e.g. ${missing[0]})` : '') +
      (extra.length ? `; extra ${extra.length} (e.g. ${extra[0]})` : '') +
      (changed.length ? `; other CID ${changed.length} (e.g. ${changed[0]}: ${want.records[changed[0]]} -> ${got.records[changed[0]]})` : ''))
  const bmissing = Object.keys(want.blobs).filter((c) => !(c in got.blobs))
  const bdiff = Object.keys(want.blobs).filter((c) => c in got.blobs && got.blobs[c].sha256 !== want.blobs[c].sha256)
  const bextra = Object.keys(got.blobs).filter((c) => !(c in want.blobs))
  check(`${label}: every blob, same bytes`, !bmissing.length && !bdiff.length && !bextra.length,
    `${Object.keys(got.blobs).length}/${Object.keys(want.blobs).length} blobs` +
      (bmissing.length ? `; missing ${bmissing.join(' ')}` : '') +
      (bdiff.length ? `; other bytes ${bdiff.join(' ')}` : '') +
      (bextra.length ? `; extra ${bextra.join(' ')}` : ''))
  const mimeDiff = Object.keys(want.blobs).filter((c) => c in got.blobs && got.blobs[c].mimeType !== want.blobs[c].mimeType)
  check(`${label}: blob content types`, !mimeDiff.length,
    mimeDiff.map((c) => `${c}: ${want.blobs[c].mimeType} -> ${got.blobs[c].mimeType}`).join('; '))
}

// ---------------------------------------------------------------------------
async function seed() {
  const { AtpAgent } = await load('@atproto/api')
  const pds = loopback(need('pds'))
  const nRecords = Number(opts.records ?? 520)
  const nBlobs = Number(opts.blobs ?? 22)
  const blobKiB = Number(opts['blob-kib'] ?? 256)
  const agent = new AtpAgent({ service: pds })
  const desc = (await agent.com.atproto.server.describeServer()).data
  const suffix = crypto.randomBytes(3).toString('hex')
  const handle = `mig-${suffix}${desc.availableUserDomains[0]}`
  const password = `pw-${crypto.randomBytes(9).toString('base64url')}`
  const email = `mig-${suffix}@example.test`
  await step(`createAccount ${handle} on ${pds}`, async () => {
    await agent.createAccount({ handle, email, password })
    return agent.session.did
  })
  const did = agent.session.did

  // blobs: JPEG magic so the reference's content sniffing agrees with the
  // declared type, then random bytes (distinct CIDs, incompressible)
  const blobRefs = []
  await step(`uploadBlob x${nBlobs} (${blobKiB} KiB each)`, async () => {
    for (let i = 0; i < nBlobs; i++) {
      const bytes = Buffer.concat([Buffer.from('ffd8ffe000104a46494600', 'hex'), crypto.randomBytes(blobKiB * 1024 - 11)])
      const r = await agent.com.atproto.repo.uploadBlob(bytes, { encoding: 'image/jpeg' })
      blobRefs.push(r.data.blob)
    }
  })
  const [avatar, banner, ...images] = blobRefs
  await step('putRecord profile (avatar, banner)', () =>
    agent.com.atproto.repo.putRecord({
      repo: did, collection: 'app.bsky.actor.profile', rkey: 'self',
      record: { $type: 'app.bsky.actor.profile', displayName: 'Migrating Mig', description: 'moves between PDSes', avatar, banner },
    }))

  // records: posts (the first ones carry up to 4 images each), likes of own
  // posts, follows of made-up DIDs; applyWrites in batches of 100
  const writes = []
  const now = Date.now()
  const nPosts = Math.ceil((nRecords - 1) * 0.55)
  const nLikes = Math.ceil((nRecords - 1) * 0.3)
  const nFollows = nRecords - 1 - nPosts - nLikes
  const posts = []
  const batch = async (label, list) => {
    for (let i = 0; i < list.length; i += 100) {
      const r = await agent.com.atproto.repo.applyWrites({ repo: did, writes: list.slice(i, i + 100) })
      for (const res of r.data.results ?? []) if (res.uri) posts.push(res)
    }
    return `${list.length} ${label}`
  }
  for (let i = 0; i < nPosts; i++) {
    const rec = { $type: 'app.bsky.feed.post', text: `post ${i} of the migration test ${suffix}`, createdAt: new Date(now - (nPosts - i) * 1000).toISOString(), langs: ['en'] }
    const imgs = images.slice(i * 4, i * 4 + 4)
    if (imgs.length) {
      rec.embed = { $type: 'app.bsky.embed.images', images: imgs.map((image, j) => ({ image, alt: `image ${i}.${j}`, aspectRatio: { width: 4, height: 3 } })) }
    }
    writes.push({ $type: 'com.atproto.repo.applyWrites#create', collection: 'app.bsky.feed.post', value: rec })
  }
  await step('applyWrites posts', () => batch('posts', writes))
  const likes = posts.slice(0, nLikes).map((p, i) => ({
    $type: 'com.atproto.repo.applyWrites#create', collection: 'app.bsky.feed.like',
    value: { $type: 'app.bsky.feed.like', subject: { uri: p.uri, cid: p.cid }, createdAt: new Date(now + i).toISOString() },
  }))
  const follows = Array.from({ length: nFollows }, (_, i) => ({
    $type: 'com.atproto.repo.applyWrites#create', collection: 'app.bsky.graph.follow',
    value: { $type: 'app.bsky.graph.follow', subject: `did:plc:${crypto.createHash('sha256').update(`${suffix}${i}`).digest('hex').replace(/[^a-z2-7]/g, 'a').slice(0, 24).padEnd(24, 'a')}`, createdAt: new Date(now + i).toISOString() },
  }))
  await step('applyWrites likes', () => batch('likes', likes))
  await step('applyWrites follows', () => batch('follows', follows))
  await step('putPreferences', () =>
    agent.app.bsky.actor.putPreferences({
      preferences: [
        { $type: 'app.bsky.actor.defs#adultContentPref', enabled: false },
        { $type: 'app.bsky.actor.defs#contentLabelPref', label: 'nudity', visibility: 'hide' },
        { $type: 'app.bsky.actor.defs#threadViewPref', sort: 'newest' },
      ],
    }))
  const snap = await step('snapshot', async () => summarize(await snapshot(agent, did)))
  writeState({ did, handle, password, email, pds, hops: [{ pds, what: 'seed', summary: snap }] })
}

// ---------------------------------------------------------------------------
async function move() {
  const { AtpAgent } = await load('@atproto/api')
  const { Secp256k1Keypair } = await load('@atproto/crypto')
  const state = readState()
  const { did, handle, password, email } = state
  const oldURL = loopback(state.pds)
  const newURL = loopback(need('to'))
  const plc = loopback(need('plc'))
  const tokenCmd = need('token-cmd')
  console.log(`migrate ${did} (${handle}) from ${oldURL} to ${newURL}`)

  const oldAgent = new AtpAgent({ service: oldURL })
  const newAgent = new AtpAgent({ service: newURL })
  await step('old: createSession', () => oldAgent.login({ identifier: handle, password }))

  // what must arrive: the old PDS's view just before the move
  const before = await step('old: snapshot (listRecords, listBlobs, getBlob)', async () => snapshot(oldAgent, did))
  console.log(`         ${summarize(before)}`)
  const oldPrefs = (await step('old: getPreferences', () => oldAgent.app.bsky.actor.getPreferences())).data.preferences
  const bytes = Object.values(before.blobs).reduce((a, b) => a + b.size, 0)
  check('the account is big enough', Object.keys(before.records).length >= MIN.records && before.collections.length >= MIN.collections &&
    Object.keys(before.blobs).length >= MIN.blobs && bytes >= MIN.blobBytes, `needs >= ${MIN.records} records, ${MIN.collections} collections, ${MIN.blobs} blobs, ${MIN.blobBytes} bytes`)
  const oldStatusBefore = (await soft('old: checkAccountStatus', () => oldAgent.com.atproto.server.checkAccountStatus()))?.data ?? {}

  // --- 1. create the account on the new PDS ---------------------------------
  const newServerDid = (await step('new: describeServer', () => newAgent.com.atproto.server.describeServer())).data.did
  const serviceJwt = (await step(`old: getServiceAuth aud=${newServerDid} lxm=createAccount`, () =>
    oldAgent.com.atproto.server.getServiceAuth({ aud: newServerDid, lxm: 'com.atproto.server.createAccount' }))).data.token
  await step('new: createAccount with did and service auth', () =>
    newAgent.com.atproto.server.createAccount(
      { handle, email, password, did },
      { headers: { authorization: `Bearer ${serviceJwt}` }, encoding: 'application/json' },
    ))
  await step('new: createSession', () => newAgent.login({ identifier: handle, password }))
  const st0 = (await soft('new: checkAccountStatus (fresh)', () => newAgent.com.atproto.server.checkAccountStatus()))?.data
  if (st0) check('new account starts deactivated', st0.activated === false, JSON.stringify(st0))

  // --- 2. data ------------------------------------------------------------
  const car = (await step('old: sync.getRepo', async () => oldAgent.com.atproto.sync.getRepo({ did }))).data
  await step(`new: importRepo (${car.length} bytes)`, () =>
    newAgent.com.atproto.repo.importRepo(car, { encoding: 'application/vnd.ipld.car' }))
  const missing0 = await soft('new: listMissingBlobs (before blobs)', () => listMissing(newAgent))
  if (missing0) {
    check('listMissingBlobs names every blob before upload', missing0.length === Object.keys(before.blobs).length &&
      missing0.every((c) => c in before.blobs), `${missing0.length} missing of ${Object.keys(before.blobs).length}`)
  }
  await step('blobs: old listBlobs/getBlob -> new uploadBlob', async () => {
    let n = 0
    let cursor
    do {
      const listed = (await oldAgent.com.atproto.sync.listBlobs({ did, cursor })).data
      for (const cid of listed.cids) {
        const blob = await oldAgent.com.atproto.sync.getBlob({ did, cid })
        const up = await newAgent.com.atproto.repo.uploadBlob(blob.data, { encoding: blob.headers['content-type'] })
        if (up.data.blob.ref.toString() !== cid) throw new Error(`uploadBlob of ${cid} answered ${up.data.blob.ref}`)
        n++
      }
      cursor = listed.cids.length ? listed.cursor : undefined
    } while (cursor)
    return `${n} blobs`
  })
  await step('prefs: old getPreferences -> new putPreferences', () =>
    newAgent.app.bsky.actor.putPreferences({ preferences: oldPrefs }))
  const missing1 = await soft('new: listMissingBlobs (after blobs)', () => listMissing(newAgent))
  if (missing1) check('no blob missing', missing1.length === 0, missing1.join(' '))
  const st1 = (await soft('new: checkAccountStatus (imported)', () => newAgent.com.atproto.server.checkAccountStatus()))?.data ?? {}
  console.log(`         ${JSON.stringify(st1)}`)
  check('checkAccountStatus: still deactivated', st1.activated === false)
  check('checkAccountStatus: indexedRecords', st1.indexedRecords === Object.keys(before.records).length,
    `${st1.indexedRecords} vs ${Object.keys(before.records).length}`)
  check('checkAccountStatus: expectedBlobs = importedBlobs = blobs', st1.expectedBlobs === Object.keys(before.blobs).length &&
    st1.importedBlobs === Object.keys(before.blobs).length, `${st1.expectedBlobs}/${st1.importedBlobs} vs ${Object.keys(before.blobs).length}`)
  if (isRef()) {
    // @atproto/pds 0.5.35 answers a constant 0 (checkAccountStatus.js)
    quirk('checkAccountStatus: privateStateValues', `${st1.privateStateValues} vs ${oldPrefs.length} preferences: the reference always answers 0`)
  } else {
    check('checkAccountStatus: privateStateValues', st1.privateStateValues === oldPrefs.length, `${st1.privateStateValues} vs ${oldPrefs.length}`)
  }
  // the CAR's blocks, plus the new PDS's own commit if it re-signs
  const carBlocks = (await (await load('@atproto/repo')).readCarWithRoot(car)).blocks.size
  check('checkAccountStatus: repoBlocks = the CAR\'s blocks (+1 for a re-signed commit)', st1.repoBlocks === carBlocks || st1.repoBlocks === carBlocks + 1,
    `${st1.repoBlocks} vs ${carBlocks} in the CAR (old PDS: ${oldStatusBefore.repoBlocks})`)

  // --- 3. identity ----------------------------------------------------------
  const recoveryKey = await Secp256k1Keypair.create({ exportable: true })
  await step('old: requestPlcOperationSignature', () => oldAgent.com.atproto.identity.requestPlcOperationSignature())
  const token = await step('old: PLC token (out of band)', async () => {
    const out = execSync(tokenCmd, { env: { ...process.env, MIGRATE_DID: did }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30000 })
    const t = out.trim().split('\n').pop().trim()
    if (!t) throw new Error(`token command printed nothing: ${tokenCmd}`)
    return t
  })
  const creds = (await step('new: getRecommendedDidCredentials', () => newAgent.com.atproto.identity.getRecommendedDidCredentials())).data
  const op = (await step('old: signPlcOperation', () =>
    oldAgent.com.atproto.identity.signPlcOperation({ token, ...creds, rotationKeys: [recoveryKey.did(), ...(creds.rotationKeys ?? [])] }))).data.operation
  await step('new: submitPlcOperation', () => newAgent.com.atproto.identity.submitPlcOperation({ operation: op }))

  // --- 4. finalize ------------------------------------------------------------
  await step('new: activateAccount', () => newAgent.com.atproto.server.activateAccount())
  await step('old: deactivateAccount', () => oldAgent.com.atproto.server.deactivateAccount({}))

  // --- checks -----------------------------------------------------------------
  state.pds = newURL
  await verify({ state, before, prefs: oldPrefs, oldAgent, creds, recoveryKey: recoveryKey.did(), plc })
  state.hops.push({ from: oldURL, pds: newURL, failures })
  writeState(state)
}

// snapshot (for other migration tools, e.g. goat): the current PDS's view of
// the account, to compare with after the move
async function snapshotCmd() {
  const { AtpAgent } = await load('@atproto/api')
  const state = readState()
  const agent = new AtpAgent({ service: loopback(state.pds) })
  await step('createSession', () => agent.login({ identifier: state.handle, password: state.password }))
  const snap = await step('snapshot', async () => snapshot(agent, state.did))
  snap.prefs = (await step('getPreferences', () => agent.app.bsky.actor.getPreferences())).data.preferences
  console.log(`         ${summarize(snap)}`)
  fs.writeFileSync(need('out'), JSON.stringify(snap))
}

// verify (after another tool moved the account from the state's PDS to --to):
// the checks move makes after its flow
async function verifyCmd() {
  const { AtpAgent } = await load('@atproto/api')
  const state = readState()
  const before = JSON.parse(fs.readFileSync(need('snapshot'), 'utf8'))
  const oldAgent = new AtpAgent({ service: loopback(state.pds) })
  await step('old: createSession (deactivated account)', () => oldAgent.login({ identifier: state.handle, password: state.password }))
  const newURL = loopback(need('to'))
  const newAgent = new AtpAgent({ service: newURL })
  await step('new: createSession', () => newAgent.login({ identifier: state.handle, password: state.password }))
  const creds = (await step('new: getRecommendedDidCredentials', () => newAgent.com.atproto.identity.getRecommendedDidCredentials())).data
  const from = state.pds
  state.pds = newURL
  await verify({ state, before, prefs: before.prefs, oldAgent, creds, plc: loopback(need('plc')) })
  state.hops.push({ from, pds: newURL, failures, tool: opts.tool })
  writeState(state)
}

async function listMissing(agent) {
  const out = []
  let cursor
  do {
    const r = (await agent.com.atproto.repo.listMissingBlobs({ limit: 100, cursor })).data
    for (const b of r.blobs) out.push(b.cid)
    cursor = r.blobs.length ? r.cursor : undefined
  } while (cursor)
  return out
}

async function verify({ state, before, prefs, oldAgent, creds, recoveryKey, plc }) {
  const { AtpAgent } = await load('@atproto/api')
  const { did, handle, password } = state
  const newURL = state.pds
  const publicURL = `http://localhost:${new URL(newURL).port}`

  // the DID document (PLC) names the new PDS and its key
  const doc = await (await fetch(`${plc}/${did}`)).json()
  const data = await (await fetch(`${plc}/${did}/data`)).json()
  const svc = (doc.service ?? []).find((s) => s.id === '#atproto_pds' || s.id === `${did}#atproto_pds`)
  check('DID document: PDS endpoint is the new PDS', svc?.serviceEndpoint === publicURL, `${svc?.serviceEndpoint} (want ${publicURL})`)
  const vm = (doc.verificationMethod ?? []).find((v) => v.id === `${did}#atproto`)
  const wantKey = creds?.verificationMethods?.atproto
  if (creds) {
    check('DID document: signing key is the new PDS key', wantKey && `did:key:${vm?.publicKeyMultibase}` === wantKey, `${vm?.publicKeyMultibase} (want ${wantKey})`)
    const wantRot = recoveryKey ? [recoveryKey, ...(creds.rotationKeys ?? [])] : creds.rotationKeys ?? []
    check(`PLC data: rotation keys ${recoveryKey ? 'the recovery key, then ' : ''}the new PDS's`, JSON.stringify(data.rotationKeys) === JSON.stringify(wantRot),
      JSON.stringify(data.rotationKeys))
  }
  check('DID document: handle kept', (doc.alsoKnownAs ?? []).includes(`at://${handle}`), JSON.stringify(doc.alsoKnownAs))

  // the old PDS reports the account deactivated
  if (oldAgent) {
    const old = oldAgent.serviceUrl.toString().replace(/\/$/, '')
    const rs = await fetch(`${old}/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(did)}`).then((r) => r.json())
    check('old PDS: getRepoStatus active=false status=deactivated', rs.active === false && rs.status === 'deactivated', JSON.stringify(rs))
    const cs = await oldAgent.com.atproto.server.checkAccountStatus().then((r) => r.data, (e) => ({ error: describeErr(e) }))
    check('old PDS: checkAccountStatus activated=false', cs.activated === false, JSON.stringify(cs))
    const gr = await fetch(`${old}/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`)
    const grBody = await gr.json()
    check('old PDS: getLatestCommit answers RepoDeactivated', gr.status === 400 && grBody.error === 'RepoDeactivated', `${gr.status} ${JSON.stringify(grBody)}`)
  }

  // login on the new PDS with a fresh client, everything is there
  const agent = new AtpAgent({ service: newURL })
  await step('new: fresh login', () => agent.login({ identifier: handle, password }))
  const rh = await agent.com.atproto.identity.resolveHandle({ handle }).then((r) => r.data.did, (e) => describeErr(e))
  check('new PDS: resolveHandle', rh === did, rh)
  const rs = await fetch(`${newURL}/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(did)}`).then((r) => r.json())
  check('new PDS: getRepoStatus active=true', rs.active === true, JSON.stringify(rs))
  const st = (await step('new: checkAccountStatus', () => agent.com.atproto.server.checkAccountStatus())).data
  check('new PDS: checkAccountStatus activated, validDid', st.activated === true && st.validDid === true, JSON.stringify(st))
  const lc = (await step('new: getLatestCommit', () => agent.com.atproto.sync.getLatestCommit({ did }))).data
  check('new PDS: one rev (getLatestCommit = checkAccountStatus = getRepoStatus)', lc.rev === st.repoRev && lc.rev === rs.rev && lc.cid === st.repoCommit,
    `latest ${lc.rev}/${lc.cid}, status ${st.repoRev}/${st.repoCommit}, repoStatus ${rs.rev}`)
  const after = await step('new: snapshot', async () => snapshot(agent, did))
  compareSnapshots('new PDS', before, after)
  const newPrefs = (await step('new: getPreferences', () => agent.app.bsky.actor.getPreferences())).data.preferences
  check('new PDS: same preferences', JSON.stringify(newPrefs) === JSON.stringify(prefs), JSON.stringify(newPrefs))

  // the repo the new PDS serves is signed by the key the DID document
  // names. The reference keeps the imported commit (old key) as its head until
  // the next write, so for it (--new-kind ref) it is checked after the new post.
  const verifySig = async (label, wantRev, n) => {
    const { verifyRepoCar } = await load('@atproto/repo')
    const car = (await agent.com.atproto.sync.getRepo({ did })).data
    const v = await verifyRepoCar(car, did, `did:key:${vm?.publicKeyMultibase}`).then((r) => r, (e) => ({ error: describeErr(e) }))
    check(`new PDS: ${label}: getRepo signed by the DID document key, head = getLatestCommit`,
      !v.error && v.commit.rev === wantRev && v.creates.length === n,
      v.error ?? `rev ${v.commit.rev} (latest ${wantRev}), ${v.creates.length} records (want ${n})`)
  }
  if (isRef()) {
    quirk('getRepo signed by the new key right after activation', 'the reference keeps the imported commit (old key) as head until the next write; checked after the new post')
  } else {
    await verifySig('after activation', lc.rev, Object.keys(before.records).length)
  }

  // a new post works
  const post = (await step('new: createRecord (a new post)', () =>
    agent.com.atproto.repo.createRecord({
      repo: did, collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: `posted on ${publicURL} after the move`, createdAt: new Date().toISOString() },
    }))).data
  const got = (await step('new: getRecord of the new post', () =>
    agent.com.atproto.repo.getRecord({ repo: did, collection: 'app.bsky.feed.post', rkey: post.uri.split('/').pop() }))).data
  check('new post readable with its CID', got.cid === post.cid, `${got.cid} vs ${post.cid}`)
  const lc2 = (await agent.com.atproto.sync.getLatestCommit({ did })).data
  check('the new post moved the head forward', lc2.rev > lc.rev, `${lc.rev} -> ${lc2.rev}`)
  await verifySig('after the new post', lc2.rev, Object.keys(before.records).length + 1)
}

async function refPlcToken() {
  const Database = req(req.resolve('better-sqlite3'))
  const db = new Database(need('db'), { readonly: true, fileMustExist: true })
  const row = db.prepare(`SELECT token FROM email_token WHERE did = ? AND purpose = 'plc_operation' ORDER BY requestedAt DESC LIMIT 1`).get(need('did'))
  db.close()
  if (!row) {
    console.error(`migrate.mjs: no plc_operation token for ${opts.did} in ${opts.db}`)
    process.exit(1)
  }
  console.log(row.token)
  process.exit(0)
}

// ---------------------------------------------------------------------------
const commands = { seed, move, snapshot: snapshotCmd, verify: verifyCmd, 'ref-plc-token': refPlcToken }
if (!commands[cmd]) usage(`unknown command ${cmd ?? '(none)'}`)
let stopped = false
try {
  await commands[cmd]()
} catch (e) {
  stopped = true
  if (!(e instanceof Stop)) {
    console.log(`${stamp()} FAIL  ${describeErr(e)}`)
    failures++
  }
}
console.log(`${stamp()} ${cmd}: ${failures ? `${failures} FAILED${stopped ? ', stopped' : ''}` : 'all passed'}`)
process.exit(stopped ? 3 : failures ? 1 : 0)
