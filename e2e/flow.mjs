// Black-box client flow run by @atproto/api against the reference PDS and
// against ours, with a side-by-side comparison of the answers.
//
//   e2e/run.sh                      (starts both servers, runs this, stops them)
//   REFPDS_DIR=/tmp/refpds /tmp/refpds/node.sh e2e/flow.mjs \
//       --ref http://127.0.0.1:2583 --ours http://127.0.0.1:2683 [--json out.json] [--verbose]
//   ... e2e/flow.mjs --only http://127.0.0.1:2683      (one server, prints its answers)
//
// Needs node >= 22 and @atproto/api: both come from the refpds copy
// (REFPDS_DIR, default /tmp/refpds, after its start.sh --install). ESM
// imports ignore NODE_PATH, so @atproto/api is resolved from REFPDS_DIR's
// node_modules explicitly below.
//
// Every step records {status, error, fields}: the HTTP status, the XRPC error
// name, and the stable fields of the answer (record and blob CIDs,
// validationStatus, collection/rkey of URIs, with the account's DID and
// handle replaced by <did>/<handle>). Things that differ per server by
// design (DIDs, commit CIDs, revs, tokens, TID record keys) are reduced to
// their shape. The exit status is 1 when a difference is found that is not
// in ALLOWED below, 0 otherwise (2 on usage errors, 3 if a server is down).
//
// Only loopback targets are accepted.

import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

// ---------------------------------------------------------------------------
// Known, accepted differences between the reference PDS (@atproto/pds 0.5.35
// as run by refpds/start.sh) and ours. Key: "<step>" (the whole step) or
// "<step>.<field>" where field is status, error or a field name. Every entry
// says why the difference is expected. Anything not listed fails the run.
const ALLOWED = {
  // --- by design: a single-user server --------------------------------------
  // A second account (another handle): ours hosts exactly one account and
  // refuses any other; the reference is multi-user and creates it.
  'createAccount.secondAccount': 'single-user server: every second account is refused',
  // (Unknown methods and app.bsky.* reads are proxied by both to the AppView
  // run.sh configures, a dead loopback port: both answer 502 UpstreamFailure.
  // With an older build of ours that did not proxy (501 MethodNotImplemented),
  // the steps unknownMethod and appviewRead differ.)

  // --- configuration ---------------------------------------------------------
  // ours defaults to the distro's PDS_BLOB_UPLOAD_LIMIT (100 MiB, README
  // configuration table); the reference code's own default is 5 MiB and
  // refpds does not set it.
  'describeServer.blobUploadLimit': 'ours: 100 MiB distro default; reference code default 5 MiB',

  // --- reference bugs: it answers 500 (or leaks a JS exception name) where
  // --- ours gives the 400 InvalidRequest the situation calls for -----------
  // a second app password with an existing name: the reference answers
  // 500 InternalServerError (an unhandled exception, presumably its
  // database's unique constraint)
  'createAppPassword.duplicateName.status': 'reference: 500 on a duplicate app password name',
  'createAppPassword.duplicateName.error': 'reference: 500 on a duplicate app password name',
  // createRecord with an rkey that exists: the reference answers 500
  // InternalServerError (an unhandled exception)
  'createRecord.existingRkey.status': 'reference: 500 on an existing rkey',
  'createRecord.existingRkey.error': 'reference: 500 on an existing rkey',
  // a body that is not JSON: both 400, the reference names the error after
  // the JavaScript exception (SyntaxError), not an XRPC error name
  'createRecord.notJson.error': 'reference: error name is the JS exception class (SyntaxError)',
}

// ---------------------------------------------------------------------------
const REFPDS_DIR = process.env.REFPDS_DIR ?? '/tmp/refpds'
const req = createRequire(path.join(REFPDS_DIR, 'package.json'))
const load = async (name) => {
  let p
  try {
    p = req.resolve(name)
  } catch (e) {
    console.error(`flow.mjs: cannot resolve ${name} from ${REFPDS_DIR}/node_modules (run ${REFPDS_DIR}/start.sh --install, or set REFPDS_DIR)`)
    process.exit(2)
  }
  return import(pathToFileURL(p).href)
}
const { AtpAgent } = await load('@atproto/api')
const { cidForLex } = await load('@atproto/lex-cbor')

// ---------------------------------------------------------------------------
const args = process.argv.slice(2)
const opt = (name) => {
  const i = args.indexOf(name)
  if (i < 0) return undefined
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
const refURL = opt('--ref')
const oursURL = opt('--ours')
const onlyURL = opt('--only')
const jsonOut = opt('--json')
const verbose = flag('--verbose')
if (!((refURL && oursURL) || onlyURL) || args.length) {
  console.error('usage: flow.mjs --ref URL --ours URL [--json FILE] [--verbose] | --only URL')
  process.exit(2)
}
for (const u of [refURL, oursURL, onlyURL].filter(Boolean)) {
  const h = new URL(u).hostname
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(h) && !h.startsWith('127.')) {
    console.error(`flow.mjs: refusing non-loopback target ${u}`)
    process.exit(2)
  }
}

// ---------------------------------------------------------------------------
// Fixed inputs: identical bytes on both servers give identical CIDs.
const POST_RKEY = '3jzfcijpj2z2a'
const POST = {
  $type: 'app.bsky.feed.post',
  text: 'Hello from the pds e2e flow',
  createdAt: '2024-01-01T00:00:00.000Z',
  langs: ['en'],
}
const PROFILE = {
  $type: 'app.bsky.actor.profile',
  displayName: 'Alice E2E',
  description: 'fixed profile of the e2e flow',
}
const PROFILE2 = { ...PROFILE, displayName: 'Alice E2E (updated by applyWrites)' }
const BATCH = [
  ['3jzfcijpj2z2b', 'batch post b'],
  ['3jzfcijpj2z2c', 'batch post c'],
  ['3jzfcijpj2z2d', 'batch post d'],
]
const batchPost = (text) => ({ $type: 'app.bsky.feed.post', text, createdAt: '2024-01-02T00:00:00.000Z' })
const IMAGE_RKEY = '3jzfcijpj2z2e'
const APP_RKEY = '3jzfcijpj2z2f'
const UNKNOWN_RKEY = '3jzfcijpj2z2g'
// a valid 1x1 PNG, so that content sniffing agrees with the declared type
const BLOB = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
)

// raw-codec CIDv1 (sha-256), base32: what a blob's CID must be
const b32 = (buf) => {
  const alpha = 'abcdefghijklmnopqrstuvwxyz234567'
  let bits = 0
  let val = 0
  let out = ''
  for (const b of buf) {
    val = (val << 8) | b
    bits += 8
    while (bits >= 5) {
      out += alpha[(val >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += alpha[(val << (5 - bits)) & 31]
  return out
}
const rawCid = (bytes) =>
  'b' + b32(Buffer.concat([Buffer.from([0x01, 0x55, 0x12, 0x20]), crypto.createHash('sha256').update(bytes).digest()]))

const EXPECTED = {
  post: (await cidForLex(POST)).toString(),
  profile: (await cidForLex(PROFILE)).toString(),
  profile2: (await cidForLex(PROFILE2)).toString(),
  blob: rawCid(BLOB),
}

// ---------------------------------------------------------------------------
const TID_RE = /^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$/
const CID_RE = /^bafy[a-z2-7]+$/
const shapeOf = (v) => {
  if (v === undefined) return 'absent'
  if (typeof v === 'string') {
    if (CID_RE.test(v)) return '<cid>'
    if (TID_RE.test(v)) return '<tid>'
    if (/^did:plc:[a-z2-7]{24}$/.test(v)) return '<did:plc>'
    if (/^eyJ/.test(v)) return '<jwt>'
  }
  return typeof v
}
const decodeJwt = (t) => {
  try {
    const [h, p] = t.split('.').slice(0, 2).map((x) => JSON.parse(Buffer.from(x, 'base64url').toString()))
    return { h, p }
  } catch {
    return null
  }
}
// the comparable parts of a JWT: header type, scope, audience, lifetime
const jwtShape = (t, ctx) => {
  const j = decodeJwt(t)
  if (!j) return 'not a JWT'
  return {
    alg: j.h.alg,
    typ: j.h.typ,
    scope: j.p.scope,
    aud: j.p.aud,
    sub: j.p.sub === ctx.did ? '<did>' : j.p.sub,
    ttlSeconds: j.p.exp - j.p.iat,
    jti: j.p.jti === undefined ? 'absent' : 'present',
  }
}
const uriParts = (uri, ctx) => {
  const m = /^at:\/\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(uri ?? '')
  if (!m) return `bad uri ${uri}`
  const rk = [POST_RKEY, IMAGE_RKEY, APP_RKEY, UNKNOWN_RKEY, 'self', ...BATCH.map((b) => b[0])].includes(m[3])
    ? m[3]
    : shapeOf(m[3])
  return `${m[1] === ctx.did ? '<did>' : m[1]}/${m[2]}/${rk}`
}
// JSON with sorted keys (CIDs and blob refs through their toJSON)
const canon = (v) => {
  const norm = (x) => {
    if (Array.isArray(x)) return x.map(norm)
    if (x && typeof x === 'object') {
      return Object.fromEntries(
        Object.keys(x)
          .sort()
          .map((k) => [k, norm(x[k])]),
      )
    }
    return x
  }
  return JSON.stringify(norm(JSON.parse(JSON.stringify(v))))
}
const commitShape = (c) => (c ? { cid: shapeOf(c.cid), rev: shapeOf(c.rev) } : 'absent')

// ---------------------------------------------------------------------------
async function runFlow(base) {
  const steps = []
  const ctx = {}
  const step = async (name, fn) => {
    let r
    try {
      const fields = await fn()
      r = { status: 200, error: null, fields: fields ?? {} }
    } catch (e) {
      if (e && typeof e.status === 'number') {
        r = { status: e.status, error: e.error ?? null, message: e.message, fields: e.fields ?? {} }
        if (e.constructor?.name === 'XRPCInvalidResponseError') {
          r.error = 'XRPCInvalidResponse'
          r.message = `${e.message}: ${JSON.stringify(e.responseBody)?.slice(0, 300)}`
        }
      } else {
        r = { status: 'client-exception', error: String(e?.message ?? e), fields: {} }
      }
    }
    steps.push({ name, ...r })
    return r
  }
  // a raw fetch that reports like the agent (for paths the client cannot call)
  const raw = async (method, nsid, { query, headers, body } = {}) => {
    const u = new URL(`/xrpc/${nsid}`, base)
    for (const [k, v] of Object.entries(query ?? {})) u.searchParams.set(k, v)
    const res = await fetch(u, { method, headers, body })
    const text = await res.text()
    let json = null
    try {
      json = JSON.parse(text)
    } catch {}
    if (res.status !== 200) {
      const e = new Error(json?.message ?? text.slice(0, 200))
      e.status = res.status
      e.error = json?.error ?? null
      throw e
    }
    return json
  }
  const bare = () => new AtpAgent({ service: base })
  const bearer = (t) => ({ headers: { authorization: `Bearer ${t}` } })

  // --- server ---------------------------------------------------------------
  await step('describeServer', async () => {
    const { data } = await bare().com.atproto.server.describeServer()
    ctx.domain = data.availableUserDomains[0]
    return {
      did: data.did,
      availableUserDomains: data.availableUserDomains,
      inviteCodeRequired: data.inviteCodeRequired ?? 'absent',
      phoneVerificationRequired: data.phoneVerificationRequired ?? 'absent',
      blobUploadLimit: data.blobUploadLimit ?? 'absent',
    }
  })
  if (!ctx.domain) return { steps, ctx }

  // --- account --------------------------------------------------------------
  const rand = crypto.randomBytes(4).toString('hex')
  ctx.handle = `alice-${rand}${ctx.domain}`
  ctx.email = `alice-${rand}@example.com`
  ctx.password = `e2e-Passw0rd-${rand}`
  const agent = bare()
  ctx.agent = agent
  await step('createAccount', async () => {
    const { data } = await agent.createAccount({ handle: ctx.handle, email: ctx.email, password: ctx.password })
    ctx.did = data.did
    return {
      did: shapeOf(data.did),
      handle: data.handle === ctx.handle ? '<handle>' : data.handle,
      accessJwt: jwtShape(data.accessJwt, ctx),
      refreshJwt: jwtShape(data.refreshJwt, ctx),
      didDocId: !data.didDoc ? 'absent' : data.didDoc.id === data.did ? '<did>' : String(data.didDoc.id),
      // the PDS endpoint in the DID document, with 127.0.0.1 read as localhost
      didDocPds: !data.didDoc
        ? 'absent'
        : data.didDoc.service?.find((s) => s.id?.endsWith('#atproto_pds'))?.serviceEndpoint === base.replace('127.0.0.1', 'localhost')
          ? '<base>'
          : 'other',
    }
  })
  if (!ctx.did) return { steps, ctx }
  const sub = (s) => (typeof s === 'string' ? s.replaceAll(ctx.did, '<did>').replaceAll(ctx.handle, '<handle>') : s)

  await step('createAccount.handleTaken', async () => {
    // the same handle again: refused by both (by different rules)
    await bare().com.atproto.server.createAccount({ handle: ctx.handle, email: `x${ctx.email}`, password: ctx.password })
  })
  await step('createAccount.secondAccount', async () => {
    // another handle: the reference creates it, a single-user server cannot
    const { data } = await bare().com.atproto.server.createAccount({
      handle: `bob-${rand}${ctx.domain}`,
      email: `bob-${rand}@example.com`,
      password: ctx.password,
    })
    return { did: shapeOf(data.did) }
  })

  // --- sessions -------------------------------------------------------------
  const sessionFields = (data) => ({
    did: data.did === ctx.did ? '<did>' : data.did,
    handle: data.handle === ctx.handle ? '<handle>' : data.handle,
    email: data.email === ctx.email ? '<email>' : (data.email ?? 'absent'),
    emailConfirmed: data.emailConfirmed ?? 'absent',
    active: data.active ?? 'absent',
    status: data.status ?? 'absent',
    didDoc: data.didDoc ? 'present' : 'absent',
  })
  let login
  await step('createSession.byHandle', async () => {
    const { data } = await agent.login({ identifier: ctx.handle, password: ctx.password })
    login = data
    return { ...sessionFields(data), accessJwt: jwtShape(data.accessJwt, ctx), refreshJwt: jwtShape(data.refreshJwt, ctx) }
  })
  await step('createSession.byEmail', async () => {
    const { data } = await bare().login({ identifier: ctx.email, password: ctx.password })
    return sessionFields(data)
  })
  await step('createSession.byDid', async () => {
    const { data } = await bare().login({ identifier: ctx.did, password: ctx.password })
    return sessionFields(data)
  })
  await step('createSession.byHandleUppercase', async () => {
    const { data } = await bare().login({ identifier: ctx.handle.toUpperCase(), password: ctx.password })
    return sessionFields(data)
  })
  let refreshed
  await step('refreshSession', async () => {
    const { data } = await bare().com.atproto.server.refreshSession(undefined, bearer(login.refreshJwt))
    refreshed = data
    return {
      ...sessionFields(data),
      newAccessToken: data.accessJwt !== login.accessJwt,
      newRefreshToken: data.refreshJwt !== login.refreshJwt,
    }
  })
  if (refreshed) {
    // keep the agent on the refreshed session
    agent.sessionManager.session = { ...agent.session, accessJwt: refreshed.accessJwt, refreshJwt: refreshed.refreshJwt }
  }
  await step('refreshSession.withAccessToken', async () => {
    await bare().com.atproto.server.refreshSession(undefined, bearer(agent.session.accessJwt))
  })
  await step('getSession', async () => {
    const { data } = await agent.com.atproto.server.getSession()
    return sessionFields(data)
  })
  await step('getSession.withRefreshToken', async () => {
    await bare().com.atproto.server.getSession(undefined, bearer(agent.session.refreshJwt))
  })

  // --- records --------------------------------------------------------------
  const repo = agent.com.atproto.repo
  const writeFields = (data, expectedCid) => ({
    uri: uriParts(data.uri, ctx),
    cid: data.cid,
    cidAsComputed: expectedCid === undefined ? 'n/a' : data.cid === expectedCid,
    validationStatus: data.validationStatus ?? 'absent',
    commit: commitShape(data.commit),
  })
  await step('createRecord.post', async () => {
    const { data } = await repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY, record: POST })
    ctx.postCid = data.cid
    return writeFields(data, EXPECTED.post)
  })
  await step('createRecord.tidKey', async () => {
    // no rkey: the server picks a TID; the record itself is fixed
    const { data } = await repo.createRecord({
      repo: ctx.did,
      collection: 'com.example.e2e.scratch',
      record: { $type: 'com.example.e2e.scratch', n: 1 },
    })
    ctx.scratchUri = data.uri
    return writeFields(data)
  })
  await step('putRecord.profile', async () => {
    const { data } = await repo.putRecord({ repo: ctx.did, collection: 'app.bsky.actor.profile', rkey: 'self', record: PROFILE })
    ctx.profileCid = data.cid
    return writeFields(data, EXPECTED.profile)
  })
  await step('applyWrites', async () => {
    const { data } = await repo.applyWrites({
      repo: ctx.did,
      writes: [
        ...BATCH.map(([rkey, text]) => ({
          $type: 'com.atproto.repo.applyWrites#create',
          collection: 'app.bsky.feed.post',
          rkey,
          value: batchPost(text),
        })),
        { $type: 'com.atproto.repo.applyWrites#update', collection: 'app.bsky.actor.profile', rkey: 'self', value: PROFILE2 },
        { $type: 'com.atproto.repo.applyWrites#delete', collection: 'com.example.e2e.scratch', rkey: ctx.scratchUri?.split('/').pop() ?? 'x' },
      ],
    })
    return {
      commit: commitShape(data.commit),
      results: (data.results ?? []).map((r) => ({
        $type: r.$type,
        uri: r.uri ? uriParts(r.uri, ctx) : 'absent',
        cid: r.cid ?? 'absent',
        validationStatus: r.validationStatus ?? 'absent',
      })),
      profileCidAsComputed: (data.results ?? [])[3]?.cid === EXPECTED.profile2,
    }
  })
  await step('getRecord.post', async () => {
    const { data } = await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY })
    return { uri: uriParts(data.uri, ctx), cid: data.cid, value: canon(data.value), valueAsWritten: canon(data.value) === canon(POST) }
  })
  await step('getRecord.byHandle', async () => {
    const { data } = await repo.getRecord({ repo: ctx.handle, collection: 'app.bsky.actor.profile', rkey: 'self' })
    return { uri: uriParts(data.uri, ctx), cid: data.cid }
  })
  await step('getRecord.withCid', async () => {
    const { data } = await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY, cid: ctx.postCid })
    return { cid: data.cid }
  })
  await step('getRecord.wrongCid', async () => {
    await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY, cid: EXPECTED.profile })
  })
  const page = (data) => ({
    rkeys: data.records.map((r) => r.uri.split('/').pop()).join(','),
    cids: data.records.map((r) => r.cid.slice(-8)).join(','),
    cursor: data.cursor === undefined ? 'absent' : shapeOf(data.cursor) === '<tid>' ? data.cursor : shapeOf(data.cursor),
  })
  for (const reverse of [false, true]) {
    const name = reverse ? 'listRecords.reverse' : 'listRecords'
    let cursor
    for (let p = 1; p <= 3; p++) {
      const r = await step(`${name}.page${p}`, async () => {
        const { data } = await repo.listRecords({ repo: ctx.did, collection: 'app.bsky.feed.post', limit: 2, reverse, cursor })
        cursor = data.cursor
        return page(data)
      })
      if (r.status !== 200 || !cursor) break
    }
  }
  await step('listRecords.emptyCollection', async () => {
    const { data } = await repo.listRecords({ repo: ctx.did, collection: 'app.bsky.graph.follow' })
    return page(data)
  })
  await step('describeRepo', async () => {
    const { data } = await repo.describeRepo({ repo: ctx.did })
    return {
      handle: data.handle === ctx.handle ? '<handle>' : data.handle,
      did: data.did === ctx.did ? '<did>' : data.did,
      handleIsCorrect: data.handleIsCorrect,
      collections: data.collections.join(','),
      didDoc: data.didDoc ? 'present' : 'absent',
    }
  })
  await step('deleteRecord', async () => {
    const { data } = await repo.deleteRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: BATCH[1][0] })
    return { commit: commitShape(data?.commit) }
  })
  await step('getRecord.deleted', async () => {
    await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: BATCH[1][0] })
  })
  await step('deleteRecord.missing', async () => {
    const { data } = await repo.deleteRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: '3jzfcijpj2zzz' })
    return { commit: commitShape(data?.commit) }
  })

  // --- blobs ----------------------------------------------------------------
  let blob
  await step('uploadBlob', async () => {
    const { data } = await repo.uploadBlob(new Uint8Array(BLOB), { encoding: 'image/png' })
    blob = data.blob
    const j = JSON.parse(JSON.stringify(blob))
    return { cid: j.ref?.$link, cidAsComputed: j.ref?.$link === EXPECTED.blob, mimeType: j.mimeType, size: j.size, $type: j.$type }
  })
  await step('uploadBlob.again', async () => {
    const { data } = await repo.uploadBlob(new Uint8Array(BLOB), { encoding: 'image/png' })
    return { cid: JSON.parse(JSON.stringify(data.blob)).ref?.$link }
  })
  await step('createRecord.withBlob', async () => {
    if (!blob) throw new Error('no blob uploaded')
    const { data } = await repo.createRecord({
      repo: ctx.did,
      collection: 'app.bsky.feed.post',
      rkey: IMAGE_RKEY,
      record: {
        $type: 'app.bsky.feed.post',
        text: 'a post with one image',
        createdAt: '2024-01-03T00:00:00.000Z',
        embed: { $type: 'app.bsky.embed.images', images: [{ alt: 'one pixel', image: blob, aspectRatio: { width: 1, height: 1 } }] },
      },
    })
    return writeFields(data)
  })
  await step('getRecord.withBlob', async () => {
    const { data } = await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: IMAGE_RKEY })
    return { cid: data.cid, value: canon(data.value) }
  })
  await step('sync.getBlob', async () => {
    const res = await fetch(new URL(`/xrpc/com.atproto.sync.getBlob?did=${ctx.did}&cid=${EXPECTED.blob}`, base))
    const bytes = Buffer.from(await res.arrayBuffer())
    if (res.status !== 200) {
      const e = new Error(bytes.toString().slice(0, 200))
      e.status = res.status
      e.error = JSON.parse(bytes.toString() || '{}').error ?? null
      throw e
    }
    return { sameBytes: bytes.equals(BLOB), contentType: res.headers.get('content-type') }
  })

  // --- app passwords --------------------------------------------------------
  let appPw
  await step('createAppPassword', async () => {
    const { data } = await agent.com.atproto.server.createAppPassword({ name: 'e2e-app' })
    appPw = data.password
    return {
      name: data.name,
      passwordShape: /^[a-z2-7]{4}(-[a-z2-7]{4}){3}$/.test(data.password),
      privileged: data.privileged ?? 'absent',
      createdAt: shapeOf(data.createdAt),
    }
  })
  await step('createAppPassword.duplicateName', async () => {
    await agent.com.atproto.server.createAppPassword({ name: 'e2e-app' })
  })
  const appAgent = bare()
  await step('createSession.appPassword', async () => {
    const { data } = await appAgent.login({ identifier: ctx.handle, password: appPw })
    return { ...sessionFields(data), accessJwt: jwtShape(data.accessJwt, ctx), refreshJwt: jwtShape(data.refreshJwt, ctx) }
  })
  await step('appPassword.createRecord', async () => {
    const { data } = await appAgent.com.atproto.repo.createRecord({
      repo: ctx.did,
      collection: 'app.bsky.feed.post',
      rkey: APP_RKEY,
      record: batchPost('written with an app password'),
    })
    return writeFields(data)
  })
  await step('appPassword.createAppPassword', async () => {
    await appAgent.com.atproto.server.createAppPassword({ name: 'from-app-session' })
  })
  await step('listAppPasswords', async () => {
    const { data } = await agent.com.atproto.server.listAppPasswords()
    return { names: data.passwords.map((p) => `${p.name}:${p.privileged ?? 'absent'}`).join(',') }
  })
  const appSession = appAgent.session ? { ...appAgent.session } : null
  await step('revokeAppPassword', async () => {
    await agent.com.atproto.server.revokeAppPassword({ name: 'e2e-app' })
  })
  await step('createSession.revokedAppPassword', async () => {
    await bare().login({ identifier: ctx.handle, password: appPw })
  })
  await step('refreshSession.revokedAppPassword', async () => {
    if (!appSession) throw new Error('no app session')
    await bare().com.atproto.server.refreshSession(undefined, bearer(appSession.refreshJwt))
  })
  await step('listAppPasswords.afterRevoke', async () => {
    const { data } = await agent.com.atproto.server.listAppPasswords()
    return { names: data.passwords.map((p) => p.name).join(',') || 'none' }
  })

  // --- error cases ----------------------------------------------------------
  await step('createSession.wrongPassword', async () => {
    await bare().login({ identifier: ctx.handle, password: 'wrong-password' })
  })
  await step('createSession.unknownHandle', async () => {
    await bare().login({ identifier: `nobody-${rand}${ctx.domain}`, password: ctx.password })
  })
  await step('getSession.garbageToken', async () => {
    await bare().com.atproto.server.getSession(undefined, bearer('garbage'))
  })
  await step('getSession.expiredLookingToken', async () => {
    // right shape and claims, exp in the past, signature we cannot make
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
    const now = Math.floor(Date.now() / 1000)
    const t = [
      enc({ alg: 'HS256', typ: 'at+jwt' }),
      enc({ scope: 'com.atproto.access', sub: ctx.did, aud: 'did:web:localhost', iat: now - 7300, exp: now - 100 }),
      crypto.randomBytes(32).toString('base64url'),
    ].join('.')
    await bare().com.atproto.server.getSession(undefined, bearer(t))
  })
  await step('getSession.basicAuth', async () => {
    await bare().com.atproto.server.getSession(undefined, { headers: { authorization: 'Basic ' + Buffer.from('admin:nope').toString('base64') } })
  })
  await step('createRecord.noAuth', async () => {
    await bare().com.atproto.repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', record: POST })
  })
  await step('uploadBlob.noAuth', async () => {
    await bare().com.atproto.repo.uploadBlob(new Uint8Array(BLOB), { encoding: 'image/png' })
  })
  await step('createRecord.invalidCollection', async () => {
    await repo.createRecord({ repo: ctx.did, collection: 'not a collection', record: { $type: 'not a collection' } })
  })
  await step('createRecord.invalidRkey', async () => {
    await repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: 'bad/key', record: POST })
  })
  await step('createRecord.missingCreatedAt', async () => {
    await repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: 'no date' } })
  })
  await step('createRecord.typeMismatch', async () => {
    await repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', record: { ...PROFILE } })
  })
  await step('createRecord.unknownLexicon', async () => {
    const { data } = await repo.createRecord({
      repo: ctx.did,
      collection: 'com.example.e2e.thing',
      rkey: UNKNOWN_RKEY,
      record: { $type: 'com.example.e2e.thing', anything: 'goes' },
    })
    return writeFields(data)
  })
  await step('createRecord.unknownLexiconValidateTrue', async () => {
    await repo.createRecord({
      repo: ctx.did,
      collection: 'com.example.e2e.thing',
      validate: true,
      record: { $type: 'com.example.e2e.thing', anything: 'goes' },
    })
  })
  await step('createRecord.invalidPostValidateFalse', async () => {
    const { data } = await repo.createRecord({
      repo: ctx.did,
      collection: 'app.bsky.feed.post',
      rkey: '3jzfcijpj2z2h',
      validate: false,
      record: { $type: 'app.bsky.feed.post', text: 'no date, validation off' },
    })
    return writeFields(data)
  })
  await step('createRecord.existingRkey', async () => {
    await repo.createRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY, record: POST })
  })
  await step('createRecord.otherRepo', async () => {
    await repo.createRecord({ repo: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', collection: 'app.bsky.feed.post', record: POST })
  })
  await step('createRecord.swapCommitMismatch', async () => {
    await repo.createRecord({
      repo: ctx.did,
      collection: 'app.bsky.feed.post',
      record: POST,
      swapCommit: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
    })
  })
  await step('putRecord.swapRecordMismatch', async () => {
    await repo.putRecord({ repo: ctx.did, collection: 'app.bsky.actor.profile', rkey: 'self', record: PROFILE, swapRecord: EXPECTED.post })
  })
  await step('deleteRecord.swapRecordMismatch', async () => {
    await repo.deleteRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: POST_RKEY, swapRecord: EXPECTED.profile })
  })
  await step('getRecord.missing', async () => {
    await repo.getRecord({ repo: ctx.did, collection: 'app.bsky.feed.post', rkey: '3jzfcijpj2zzz' })
  })
  await step('getRecord.unknownRepo', async () => {
    await repo.getRecord({ repo: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', collection: 'app.bsky.feed.post', rkey: POST_RKEY })
  })
  await step('getRecord.missingParam', async () => {
    await raw('GET', 'com.atproto.repo.getRecord', { query: { repo: ctx.did, collection: 'app.bsky.feed.post' } })
  })
  await step('createRecord.notJson', async () => {
    await raw('POST', 'com.atproto.repo.createRecord', {
      headers: { authorization: `Bearer ${agent.session.accessJwt}`, 'content-type': 'application/json' },
      body: '{not json',
    })
  })
  await step('createRecord.wrongHttpMethod', async () => {
    await raw('GET', 'com.atproto.repo.createRecord', { headers: { authorization: `Bearer ${agent.session.accessJwt}` } })
  })
  await step('unknownMethod', async () => {
    await raw('GET', 'com.example.e2e.noSuchMethod', { headers: { authorization: `Bearer ${agent.session.accessJwt}` } })
  })
  await step('appviewRead', async () => {
    await raw('GET', 'app.bsky.actor.getProfile', {
      query: { actor: ctx.did },
      headers: { authorization: `Bearer ${agent.session.accessJwt}` },
    })
  })

  // --- the final state, then log out ---------------------------------------
  await step('listRecords.final', async () => {
    const { data } = await repo.listRecords({ repo: ctx.did, collection: 'app.bsky.feed.post', limit: 100 })
    return page(data)
  })
  await step('deleteSession', async () => {
    await bare().com.atproto.server.deleteSession(undefined, bearer(agent.session.refreshJwt))
  })
  await step('refreshSession.afterDelete', async () => {
    await bare().com.atproto.server.refreshSession(undefined, bearer(agent.session.refreshJwt))
  })

  for (const s of steps) {
    if (s.message) s.message = sub(s.message)
  }
  return { steps, ctx: { did: ctx.did, handle: ctx.handle, email: ctx.email, password: ctx.password } }
}

// ---------------------------------------------------------------------------
const show = (v) => (v === undefined ? '-' : typeof v === 'string' ? v : JSON.stringify(v))
const cell = (s) => {
  if (!s) return 'no such step'
  let out = String(s.status)
  if (s.error) out += ` ${s.error}`
  return out
}

async function alive(base) {
  try {
    const r = await fetch(new URL('/xrpc/_health', base))
    return r.ok
  } catch {
    return false
  }
}

if (onlyURL) {
  if (!(await alive(onlyURL))) {
    console.error(`flow.mjs: ${onlyURL} does not answer /xrpc/_health`)
    process.exit(3)
  }
  const r = await runFlow(onlyURL)
  for (const s of r.steps) {
    console.log(`${s.name.padEnd(40)} ${cell(s)}${s.message ? ` (${s.message})` : ''}`)
    for (const [k, v] of Object.entries(s.fields)) console.log(`${''.padEnd(42)}${k}: ${show(v)}`)
  }
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(r, null, 2) + '\n')
  process.exit(0)
}

for (const u of [refURL, oursURL]) {
  if (!(await alive(u))) {
    console.error(`flow.mjs: ${u} does not answer /xrpc/_health`)
    process.exit(3)
  }
}
const ref = await runFlow(refURL)
const ours = await runFlow(oursURL)

// compare step by step, field by field
const rows = []
const names = [...new Set([...ref.steps.map((s) => s.name), ...ours.steps.map((s) => s.name)])]
for (const name of names) {
  const a = ref.steps.find((s) => s.name === name)
  const b = ours.steps.find((s) => s.name === name)
  const diffs = []
  if (!a || !b) diffs.push({ key: 'step', ref: a ? 'ran' : 'missing', ours: b ? 'ran' : 'missing' })
  else {
    if (a.status !== b.status) diffs.push({ key: 'status', ref: a.status, ours: b.status })
    if (a.error !== b.error) diffs.push({ key: 'error', ref: a.error, ours: b.error })
    for (const k of new Set([...Object.keys(a.fields), ...Object.keys(b.fields)])) {
      if (canon(a.fields[k] ?? null) !== canon(b.fields[k] ?? null)) diffs.push({ key: k, ref: a.fields[k], ours: b.fields[k] })
    }
  }
  for (const d of diffs) {
    const why = ALLOWED[name] ?? ALLOWED[`${name}.${d.key}`]
    d.allowed = why ?? null
  }
  rows.push({ name, ref: a, ours: b, diffs })
}

const W = 38
const C = 30
const pad = (s, n) => {
  s = String(s)
  return s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n)
}
console.log(`reference: ${refURL}   ours: ${oursURL}`)
console.log(`computed locally: post ${EXPECTED.post}  profile ${EXPECTED.profile}  blob ${EXPECTED.blob}\n`)
console.log(`${pad('step', W)} ${pad('reference', C)} ${pad('ours', C)} verdict`)
console.log(`${'-'.repeat(W)} ${'-'.repeat(C)} ${'-'.repeat(C)} -------`)
let bad = 0
let allowed = 0
let same = 0
for (const r of rows) {
  const verdict = !r.diffs.length ? 'same' : r.diffs.every((d) => d.allowed) ? 'allowed' : 'DIFF'
  if (verdict === 'same') same++
  else if (verdict === 'allowed') allowed++
  else bad++
  // show the CID (if any) next to the status: the key figure of the comparison
  const extra = (s) => (s?.fields?.cid ? ` ${s.fields.cid.slice(-10)}` : '')
  console.log(`${pad(r.name, W)} ${pad(cell(r.ref) + extra(r.ref), C)} ${pad(cell(r.ours) + extra(r.ours), C)} ${verdict}`)
  for (const d of r.diffs) {
    console.log(`${''.padEnd(4)}${d.allowed ? 'allowed' : 'DIFF   '} ${d.key}: ref=${show(d.ref)}  ours=${show(d.ours)}`)
    if (d.allowed) console.log(`${''.padEnd(12)}(${d.allowed})`)
  }
  if (verbose || r.diffs.length) {
    for (const [label, s] of [['ref', r.ref], ['ours', r.ours]]) {
      if (s?.message) console.log(`${''.padEnd(12)}${label} message: ${s.message}`)
    }
  }
  if (verbose) {
    for (const [k, v] of Object.entries(r.ref?.fields ?? {})) console.log(`${''.padEnd(12)}${k}: ${show(v)}`)
  }
}
console.log(`\n${rows.length} steps: ${same} same, ${allowed} differ only as allowed, ${bad} differ`)
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ expected: EXPECTED, ref, ours, rows }, null, 2) + '\n')
process.exit(bad ? 1 : 0)
