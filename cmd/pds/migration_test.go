package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/internal/testpds"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// This file moves an account between servers of ours that share one mock
// PLC directory, with the calls the reference's migration guides (and goat
// account migrate) make, and checks what each side and the firehose show.

// startPeer starts a server with its own service DID, on the shared PLC.
func startPeer(t *testing.T, plc *testpds.MockPLC, name string, tweak func(*config)) *testServer {
	t.Helper()
	return startServerWith(t, map[string]string{
		"PDS_DID_PLC_URL": plc.URL,
		"PDS_SERVICE_DID": "did:web:" + name + ".example",
	}, tweak)
}

// migAccount is an account as a migrating client knows it.
type migAccount struct {
	did, handle, password, access string
}

// migFill writes records in three collections, some referencing uploaded
// blobs, and preferences; it returns the blob bytes by CID.
func migFill(t *testing.T, s *testServer, a migAccount, posts, blobs int) map[string][]byte {
	t.Helper()
	bytesOf := map[string][]byte{}
	var refs []map[string]any
	for i := range blobs {
		b := pngBytes(t, 20_000+i*1000)
		st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", a.access, "", b, "image/png")
		var up map[string]any
		_ = json.Unmarshal(raw, &up)
		wantStatus(t, "uploadBlob", st, up, 200, "")
		ref := up["blob"].(map[string]any)
		refs = append(refs, ref)
		bytesOf[ref["ref"].(map[string]any)["$link"].(string)] = b
	}
	var writes []map[string]any
	flush := func() {
		if len(writes) == 0 {
			return
		}
		st, out := s.call(t, "POST", "com.atproto.repo.applyWrites", a.access, "", map[string]any{"repo": a.did, "writes": writes})
		wantStatus(t, "applyWrites", st, out, 200, "")
		writes = nil
	}
	for i := range posts {
		rec := post(fmt.Sprintf("post %d", i))
		if i < len(refs) {
			rec["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": refs[i]}}}
		}
		writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": rec})
		if i%3 == 0 {
			writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.like", "value": map[string]any{
				"$type": "app.bsky.feed.like", "createdAt": "2026-11-29T12:00:00.000Z",
				"subject": map[string]any{"uri": fmt.Sprintf("at://%s/app.bsky.feed.post/x%d", a.did, i), "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}})
		}
		if len(writes) >= 100 {
			flush()
		}
	}
	flush()
	prof := map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Alice"}
	if len(refs) > 0 {
		prof["avatar"] = refs[len(refs)-1]
	}
	st, out := s.call(t, "POST", "com.atproto.repo.putRecord", a.access, "", map[string]any{"repo": a.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": prof})
	wantStatus(t, "putRecord profile", st, out, 200, "")
	st, out = s.call(t, "POST", "app.bsky.actor.putPreferences", a.access, "", map[string]any{"preferences": []any{
		map[string]any{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": false},
	}})
	wantStatus(t, "putPreferences", st, out, 200, "")
	return bytesOf
}

// migRecords lists every record of the account: path → CID.
func migRecords(t *testing.T, s *testServer, did, token string) map[string]string {
	t.Helper()
	out := map[string]string{}
	st, desc := s.call(t, "GET", "com.atproto.repo.describeRepo", token, "repo="+did, nil)
	wantStatus(t, "describeRepo", st, desc, 200, "")
	for _, c := range desc["collections"].([]any) {
		cursor := ""
		for {
			q := "repo=" + did + "&collection=" + c.(string) + "&limit=100"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			st, page := s.call(t, "GET", "com.atproto.repo.listRecords", token, q, nil)
			wantStatus(t, "listRecords", st, page, 200, "")
			for _, r := range page["records"].([]any) {
				rec := r.(map[string]any)
				out[rec["uri"].(string)] = rec["cid"].(string)
			}
			next, _ := page["cursor"].(string)
			if next == "" {
				break
			}
			cursor = next
		}
	}
	return out
}

// migrate moves a from old to new with the reference's client flow and
// returns the account's session on new. plcToken issues old's
// plc_operation token (the mail or `pds account plc-token`).
func migrate(t *testing.T, old, nu *testServer, a migAccount, blobs map[string][]byte) migAccount {
	t.Helper()
	// 1. A service-auth token from the old server for createAccount on
	// the new one (any aud is allowed for this lxm).
	st, out := nu.call(t, "GET", "com.atproto.server.describeServer", "", "", nil)
	wantStatus(t, "describeServer", st, out, 200, "")
	newDID := out["did"].(string)
	st, out = old.call(t, "GET", "com.atproto.server.getServiceAuth", a.access, "aud="+newDID+"&lxm=com.atproto.server.createAccount", nil)
	wantStatus(t, "getServiceAuth", st, out, 200, "")
	svc := out["token"].(string)

	// 2. The account on the new server: deactivated, no event.
	seqBefore := nu.app.events.LastSeq()
	code, err := nu.app.accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	st, out = nu.call(t, "POST", "com.atproto.server.createAccount", svc, "", map[string]any{
		"did": a.did, "handle": a.handle, "password": a.password, "email": "alice@example.com", "inviteCode": code,
	})
	wantStatus(t, "createAccount with did", st, out, 200, "")
	if out["did"] != a.did {
		t.Fatalf("created %v, want %s", out["did"], a.did)
	}
	n := migAccount{did: a.did, handle: a.handle, password: a.password, access: out["accessJwt"].(string)}
	if got := nu.app.events.LastSeq(); got != seqBefore {
		t.Fatalf("createAccount with did sequenced events (%d → %d)", seqBefore, got)
	}
	st, out = nu.call(t, "GET", "com.atproto.server.checkAccountStatus", n.access, "", nil)
	wantStatus(t, "checkAccountStatus", st, out, 200, "")
	if out["activated"] != false || out["validDid"] != false || out["indexedRecords"] != 0.0 || out["repoCommit"] == "" || out["repoRev"] == "" {
		t.Fatalf("fresh migrating account: %v", out)
	}

	// 3. The repository, then the blobs it is missing, then preferences.
	car := fhGetCAR(t, old, "com.atproto.sync.getRepo", "did="+a.did)
	st, raw, hdr := nu.callRaw(t, "POST", "com.atproto.repo.importRepo", n.access, "", car, "application/vnd.ipld.car")
	if st != 200 {
		t.Fatalf("importRepo: %d %s", st, raw)
	}
	importRev := hdr.Get("Atproto-Repo-Rev")
	_, oldRev := migHead(t, old, a.did, a.access)
	if importRev <= oldRev {
		t.Fatalf("imported head rev %q is not after the old one %q", importRev, oldRev)
	}
	var missing []string
	cursor := ""
	for {
		q := "limit=7"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		st, out = nu.call(t, "GET", "com.atproto.repo.listMissingBlobs", n.access, q, nil)
		wantStatus(t, "listMissingBlobs", st, out, 200, "")
		for _, b := range out["blobs"].([]any) {
			missing = append(missing, b.(map[string]any)["cid"].(string))
		}
		next, _ := out["cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(missing) != len(blobs) {
		t.Fatalf("%d missing blobs, want %d", len(missing), len(blobs))
	}
	for _, c := range missing {
		st, body, h := old.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+a.did+"&cid="+c, nil, "")
		if st != 200 {
			t.Fatalf("getBlob %s: %d", c, st)
		}
		st, raw, _ := nu.callRaw(t, "POST", "com.atproto.repo.uploadBlob", n.access, "", body, h.Get("Content-Type"))
		if st != 200 {
			t.Fatalf("uploadBlob while deactivated: %d %s", st, raw)
		}
	}
	st, out = old.call(t, "GET", "app.bsky.actor.getPreferences", a.access, "", nil)
	wantStatus(t, "getPreferences", st, out, 200, "")
	st, out = nu.call(t, "POST", "app.bsky.actor.putPreferences", n.access, "", map[string]any{"preferences": out["preferences"]})
	wantStatus(t, "putPreferences while deactivated", st, out, 200, "")
	st, out = nu.call(t, "GET", "com.atproto.server.checkAccountStatus", n.access, "", nil)
	wantStatus(t, "checkAccountStatus", st, out, 200, "")
	if out["expectedBlobs"] != float64(len(blobs)) || out["importedBlobs"] != float64(len(blobs)) || out["repoRev"] != importRev || out["privateStateValues"] != 1.0 {
		t.Fatalf("after import: %v", out)
	}
	// Writes are refused while deactivated.
	st, out = nu.call(t, "POST", "com.atproto.repo.createRecord", n.access, "", map[string]any{"repo": n.did, "collection": "app.bsky.feed.post", "record": post("too early")})
	wantStatus(t, "createRecord while deactivated", st, out, 400, "AccountDeactivated")

	// 4. The DID: the old server signs, with a mailed token, the operation
	// the new one recommends; the new one submits it.
	st, creds := nu.call(t, "GET", "com.atproto.identity.getRecommendedDidCredentials", n.access, "", nil)
	wantStatus(t, "getRecommendedDidCredentials", st, creds, 200, "")
	// No mail here: the operator's CLI asks the running server, as the
	// admin, which is this route.
	creds["token"] = migAdminToken(t, old, "plc_operation")
	st, out = old.call(t, "POST", "com.atproto.identity.signPlcOperation", a.access, "", creds)
	wantStatus(t, "signPlcOperation", st, out, 200, "")
	op := out["operation"]
	st, out = nu.call(t, "POST", "com.atproto.identity.submitPlcOperation", n.access, "", map[string]any{"operation": op})
	wantStatus(t, "submitPlcOperation", st, out, 200, "")

	// 5. Activate the new account, deactivate the old.
	st, out = nu.call(t, "POST", "com.atproto.server.activateAccount", n.access, "", nil)
	wantStatus(t, "activateAccount", st, out, 200, "")
	st, out = old.call(t, "POST", "com.atproto.server.deactivateAccount", a.access, "", map[string]any{})
	wantStatus(t, "deactivateAccount", st, out, 200, "")
	return n
}

// migHead is the account's head (cid, rev) from getLatestCommit.
func migHead(t *testing.T, s *testServer, did, token string) (string, string) {
	t.Helper()
	st, out := s.call(t, "GET", "com.atproto.sync.getLatestCommit", token, "did="+did, nil)
	wantStatus(t, "getLatestCommit", st, out, 200, "")
	return out["cid"].(string), out["rev"].(string)
}

// migCheckMoved checks an account after a move from old to nu.
func migCheckMoved(t *testing.T, plc *testpds.MockPLC, old, nu *testServer, a migAccount, records map[string]string, blobs map[string][]byte, live *fhReader) {
	t.Helper()
	// The DID document names the new server and its key.
	ops := plc.Ops(a.did)
	last := ops[len(ops)-1]
	pub := fhSigningPub(t, nu.app)
	if last.Services["atproto_pds"].Endpoint != nu.app.cfg.PublicURL || last.VerificationMethods["atproto"] != pub.DIDKey() {
		t.Fatalf("PLC after the move: %+v (want %s, %s)", last, nu.app.cfg.PublicURL, pub.DIDKey())
	}
	// Records and blobs identical.
	got := migRecords(t, nu, a.did, "")
	if len(got) != len(records) {
		t.Fatalf("%d records on the new server, want %d", len(got), len(records))
	}
	for uri, c := range records {
		if got[uri] != c {
			t.Fatalf("%s: CID %q, want %q", uri, got[uri], c)
		}
	}
	for c, want := range blobs {
		st, body, _ := nu.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+a.did+"&cid="+c, nil, "")
		if st != 200 || !bytes.Equal(body, want) {
			t.Fatalf("blob %s: %d, %d bytes, want %d", c, st, len(body), len(want))
		}
	}
	st, out := nu.call(t, "GET", "com.atproto.server.checkAccountStatus", a.access, "", nil)
	wantStatus(t, "checkAccountStatus", st, out, 200, "")
	if out["activated"] != true || out["validDid"] != true || out["indexedRecords"] != float64(len(records)) || out["expectedBlobs"] != out["importedBlobs"] {
		t.Fatalf("after the move: %v", out)
	}
	// One rev everywhere: head, repo status, the #sync of activation,
	// whose commit verifies with the key the DID document names.
	headCID, headRev := migHead(t, nu, a.did, "")
	st, out = nu.call(t, "GET", "com.atproto.sync.getRepoStatus", "", "did="+a.did, nil)
	wantStatus(t, "getRepoStatus", st, out, 200, "")
	if out["active"] != true || out["rev"] != headRev {
		t.Fatalf("getRepoStatus %v, head rev %s", out, headRev)
	}
	fs := live.waitUntil(t, "#account, #identity, #sync", func(fs []fhFrame) bool {
		return slices.ContainsFunc(fs, func(f fhFrame) bool { return f.Sync != nil })
	})
	var kinds []string
	for _, f := range fs {
		kinds = append(kinds, f.T)
		switch {
		case f.Sync != nil:
			sc, root, err := irepo.LoadCommitFromCAR(context.Background(), bytes.NewReader(f.Sync.Blocks))
			if err != nil || root.String() != headCID || sc.Rev != headRev || f.Sync.Rev != headRev {
				t.Fatalf("#sync %s %v rev %s (commit %v), head %s %s", root, err, f.Sync.Rev, sc, headCID, headRev)
			}
			if err := sc.VerifySignature(pub); err != nil {
				t.Fatalf("#sync commit signature: %v", err)
			}
		case f.Identity != nil && len(kinds) > 1:
			// The one of activation (the first is submitPlcOperation's).
			if f.Identity.Handle == nil || *f.Identity.Handle != a.handle {
				t.Fatalf("#identity of activation without the handle: %+v", f.Identity)
			}
		case f.Account != nil:
			if !f.Account.Active {
				t.Fatalf("#account %+v", f.Account)
			}
		}
	}
	if !slices.Equal(kinds, []string{"#identity", "#account", "#identity", "#sync"}) {
		t.Fatalf("new server's firehose during the move: %v (want the submitPlcOperation #identity, then #account, #identity, #sync)", kinds)
	}
	// The old server announced the deactivation.
	oldFS := fhSubscribe(t, fhHost(old), "0").waitUntil(t, "#account deactivated", func(fs []fhFrame) bool {
		return len(fs) > 0 && fs[len(fs)-1].Account != nil
	})
	if ev := oldFS[len(oldFS)-1].Account; ev.Active || ev.Status == nil || *ev.Status != "deactivated" || ev.Did != a.did {
		t.Fatalf("old server's last event: %+v", ev)
	}
	// The old server reports the account deactivated, to others.
	st, out = old.call(t, "GET", "com.atproto.sync.getRepoStatus", "", "did="+a.did, nil)
	wantStatus(t, "old getRepoStatus", st, out, 200, "")
	if out["active"] != false || out["status"] != "deactivated" {
		t.Fatalf("old server's status: %v", out)
	}
	for _, m := range []struct{ nsid, q string }{
		{"com.atproto.sync.getRepo", "did=" + a.did},
		{"com.atproto.sync.getLatestCommit", "did=" + a.did},
		{"com.atproto.repo.listRecords", "repo=" + a.did + "&collection=app.bsky.feed.post"},
	} {
		st, raw, _ := old.callRaw(t, "GET", m.nsid, "", m.q, nil, "")
		if st != 400 || !bytes.Contains(raw, []byte(`"RepoDeactivated"`)) {
			t.Fatalf("old %s: %d %s", m.nsid, st, raw)
		}
	}
	// Login and a new post work on the new server.
	st, out = nu.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": a.handle, "password": a.password})
	wantStatus(t, "createSession", st, out, 200, "")
	if out["active"] != true {
		t.Fatalf("session: %v", out)
	}
	st, out = nu.call(t, "POST", "com.atproto.repo.createRecord", out["accessJwt"].(string), "", map[string]any{"repo": a.did, "collection": "app.bsky.feed.post", "record": post("hello from the new home")})
	wantStatus(t, "createRecord after the move", st, out, 200, "")
	if rev := out["commit"].(map[string]any)["rev"].(string); rev <= headRev {
		t.Fatalf("new commit rev %s not after %s", rev, headRev)
	}
}

// TestMigrationInAndOut moves an account from one of our servers (standing
// in for another PDS) to a second, and from there out to a third, each move
// with the reference's client flow; then deletes the account on the middle
// server and creates one there again.
func TestMigrationInAndOut(t *testing.T) {
	plc := testpds.NewMockPLC(t)
	a := startPeer(t, plc, "a", nil)
	b := startPeer(t, plc, "b", nil)
	c := startPeer(t, plc, "c", nil)

	did, access, _ := a.createAccount(t)
	acct := migAccount{did: did, handle: "alice.test", password: "hunter2-hunter2", access: access}
	blobs := migFill(t, a, acct, 150, 8)
	records := migRecords(t, a, did, "")
	if len(records) < 200 {
		t.Fatalf("only %d records", len(records))
	}

	liveB := fhSubscribe(t, fhHost(b), "")
	onB := migrate(t, a, b, acct, blobs)
	migCheckMoved(t, plc, a, b, onB, records, blobs, liveB)
	// The owner may still read the deactivated repository on the old
	// server (as the reference's assertRepoAvailability allows).
	if st, raw, _ := a.callRaw(t, "GET", "com.atproto.sync.getLatestCommit", acct.access, "did="+did, nil, ""); st != 200 {
		t.Fatalf("owner's read of the deactivated repo: %d %s", st, raw)
	}

	// And out again, to c. The post written on b moves too.
	records = migRecords(t, b, did, "")
	liveC := fhSubscribe(t, fhHost(c), "")
	onC := migrate(t, b, c, onB, blobs)
	migCheckMoved(t, plc, b, c, onC, records, blobs, liveC)

	// Deleting the (deactivated) account on b: password and token.
	tok, _, err := b.app.tokens.Issue(context.Background(), auth.PurposeDeleteAccount)
	if err != nil {
		t.Fatal(err)
	}
	st, out := b.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": "wrong-password", "token": tok})
	wantStatus(t, "deleteAccount with a wrong password", st, out, 401, "AuthRequired")
	seqBefore := b.app.events.LastSeq()
	st, out = b.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": acct.password, "token": tok})
	wantStatus(t, "deleteAccount", st, out, 200, "")
	st, out = b.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": acct.password, "token": tok})
	wantStatus(t, "deleteAccount again", st, out, 401, "AuthRequired")
	st, out = b.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
	wantStatus(t, "getLatestCommit after deletion", st, out, 400, "RepoNotFound")
	st, out = b.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": acct.handle, "password": acct.password})
	wantStatus(t, "login after deletion", st, out, 401, "")
	st, out = b.call(t, "GET", "com.atproto.server.getSession", onB.access, "", nil)
	if st == 200 {
		t.Fatalf("a session of the deleted account still works: %v", out)
	}
	if _, err := os.Stat(filepath.Join(b.app.cfg.DataDir, account.SigningKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("signing key left after deletion: %v", err)
	}
	for blob := range blobs {
		st, _, _ := b.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+blob, nil, "")
		if st == 200 {
			t.Fatalf("blob %s still served after deletion", blob)
		}
	}
	// The firehose keeps its numbering: one #account deleted after the rest.
	fs := fhSubscribe(t, fhHost(b), "0").waitUntil(t, "#account deleted", func(fs []fhFrame) bool {
		return slices.ContainsFunc(fs, func(f fhFrame) bool {
			return f.Account != nil && f.Account.Status != nil && *f.Account.Status == "deleted"
		})
	})
	if last := fs[len(fs)-1]; last.Seq != seqBefore+1 || last.Account == nil {
		t.Fatalf("last event %s seq %d, want #account at %d", last.T, last.Seq, seqBefore+1)
	}
	// b is ready for a new account, and it gets seqs above the old ones.
	_, access2, _ := b.createAccount(t)
	st, out = b.call(t, "POST", "com.atproto.repo.createRecord", access2, "", map[string]any{"repo": "alice.test", "collection": "app.bsky.feed.post", "record": post("fresh")})
	wantStatus(t, "createRecord on a fresh account", st, out, 200, "")
	if b.app.events.LastSeq() <= seqBefore+1 {
		t.Fatalf("seq went back: %d", b.app.events.LastSeq())
	}
}

// migSnapshot is what a refused migration call must leave unchanged.
type migSnapshot struct {
	exists   bool
	status   string
	seq      int64
	plcOps   int
	rejected int
}

func migSnap(t *testing.T, s *testServer, plc *testpds.MockPLC, did, token string) migSnapshot {
	t.Helper()
	snap := migSnapshot{exists: s.app.accounts.Exists(), seq: s.app.events.LastSeq(), plcOps: len(plc.Ops(did))}
	if snap.exists && token != "" {
		_, raw, _ := s.callRaw(t, "GET", "com.atproto.server.checkAccountStatus", token, "", nil, "")
		snap.status = string(raw)
	}
	return snap
}

// migRefused checks a refusal: a 4xx XRPC error with a message, and nothing
// changed.
func migRefused(t *testing.T, what string, st int, raw []byte, wantStatus int, wantName string, before, after migSnapshot) {
	t.Helper()
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	msg, _ := out["message"].(string)
	if st != wantStatus || out["error"] != wantName || msg == "" {
		t.Fatalf("%s: %d %s, want %d %s with a message", what, st, raw, wantStatus, wantName)
	}
	if before != after {
		t.Fatalf("%s changed state:\n%+v\n%+v", what, before, after)
	}
	t.Logf("%s: %d %s: %s", what, st, out["error"], msg)
}

// migForeignCAR builds a signed CAR for did with key, outside any server.
func migForeignCAR(t *testing.T, did string, key atcrypto.PrivateKey) []byte {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := repo.Open(db, syntax.DID(did), key, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(context.Background(), []repo.Write{{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", RKey: "3kaaaaaaaaaaa", Record: post("forged")}}, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.ExportCAR(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMigrationHostile sends the hostile inputs of a migration to the new
// server (and, for PLC tokens, to the old): each is a 4xx with a clear
// message and changes nothing.
func TestMigrationHostile(t *testing.T) {
	ctx := context.Background()
	plc := testpds.NewMockPLC(t)
	clock := newTestClock()
	a := startPeer(t, plc, "a", func(c *config) { c.Now = clock.Now })
	b := startPeer(t, plc, "b", func(c *config) { c.MaxImportBytes = 1 << 20 })
	other := startPeer(t, plc, "other", nil)
	did, access, _ := a.createAccount(t)
	acct := migAccount{did: did, handle: "alice.test", password: "hunter2-hunter2", access: access}
	migFill(t, a, acct, 20, 2)
	otherDID, _, _ := other.createAccount(t)
	const bDID = "did:web:b.example"
	const lxm = "com.atproto.server.createAccount"
	aKey, err := a.app.accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.app.accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	code, err := b.app.accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	input := map[string]any{"did": did, "handle": "alice.test", "password": acct.password, "inviteCode": code}
	jwt := func(key atcrypto.PrivateKey, iss, aud, lxm string, now time.Time) string {
		tok, err := auth.SignServiceJWT(key, syntax.DID(iss), aud, lxm, time.Minute, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()

	// createAccount with a did: bad service-auth tokens.
	for _, tc := range []struct {
		name, token string
		status      int
		errName     string
	}{
		{"no token", "", 401, "AuthMissing"},
		{"token for another aud", jwt(aKey, did, "did:web:elsewhere.example", lxm, now), 401, "AuthRequired"},
		{"expired token", jwt(aKey, did, bDID, lxm, now.Add(-time.Hour)), 401, "AuthRequired"},
		{"token for another method", jwt(aKey, did, bDID, "com.atproto.repo.uploadBlob", now), 401, "AuthRequired"},
		{"token of another DID", jwt(otherKey, otherDID, bDID, lxm, now), 401, "AuthRequired"},
		{"token signed by a key not the DID's", jwt(otherKey, did, bDID, lxm, now), 401, "AuthRequired"},
		{"session token", access, 401, "AuthRequired"},
	} {
		before := migSnap(t, b, plc, did, "")
		st, raw, _ := b.callRaw(t, "POST", "com.atproto.server.createAccount", tc.token, "", input, "")
		migRefused(t, "createAccount: "+tc.name, st, raw, tc.status, tc.errName, before, migSnap(t, b, plc, did, ""))
	}
	good := jwt(aKey, did, bDID, lxm, now)
	st, out := b.call(t, "POST", "com.atproto.server.createAccount", good, "", input)
	wantStatus(t, "createAccount", st, out, 200, "")
	bAccess := out["accessJwt"].(string)
	before := migSnap(t, b, plc, did, bAccess)
	st, raw, _ := b.callRaw(t, "POST", "com.atproto.server.createAccount", jwt(aKey, did, bDID, lxm, now), "", input, "")
	migRefused(t, "createAccount again", st, raw, 400, "InvalidRequest", before, migSnap(t, b, plc, did, bAccess))

	// importRepo: hostile CARs.
	goodCAR := fhGetCAR(t, a, "com.atproto.sync.getRepo", "did="+did)
	strangerKey, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ct string
		body     []byte
		status   int
		errName  string
	}{
		{"CAR of another DID", "application/vnd.ipld.car", fhGetCAR(t, other, "com.atproto.sync.getRepo", "did="+otherDID), 400, "InvalidRequest"},
		{"CAR signed by a key not the DID's", "application/vnd.ipld.car", migForeignCAR(t, did, strangerKey), 400, "InvalidRequest"},
		{"truncated CAR", "application/vnd.ipld.car", goodCAR[:len(goodCAR)/2], 400, "InvalidRequest"},
		{"CAR cut in its header", "application/vnd.ipld.car", goodCAR[:10], 400, "InvalidRequest"},
		{"oversized CAR", "application/vnd.ipld.car", append(bytes.Clone(goodCAR), make([]byte, 1<<20)...), 413, "PayloadTooLarge"},
		{"non-CAR body", "application/vnd.ipld.car", []byte(`{"hello": "not a CAR"}`), 400, "InvalidRequest"},
		{"JSON content type", "application/json", []byte(`{}`), 400, "InvalidRequest"},
		{"empty body", "application/vnd.ipld.car", []byte{}, 400, "InvalidRequest"},
	} {
		before := migSnap(t, b, plc, did, bAccess)
		st, raw, _ := b.callRaw(t, "POST", "com.atproto.repo.importRepo", bAccess, "", tc.body, tc.ct)
		migRefused(t, "importRepo: "+tc.name, st, raw, tc.status, tc.errName, before, migSnap(t, b, plc, did, bAccess))
	}
	// Activation before the DID document names b is refused.
	before = migSnap(t, b, plc, did, bAccess)
	st, raw, _ = b.callRaw(t, "POST", "com.atproto.server.activateAccount", bAccess, "", nil, "")
	migRefused(t, "activateAccount before the PLC update", st, raw, 400, "InvalidRequest", before, migSnap(t, b, plc, did, bAccess))
	st, raw, _ = b.callRaw(t, "POST", "com.atproto.repo.importRepo", bAccess, "", goodCAR, "application/vnd.ipld.car")
	if st != 200 {
		t.Fatalf("good import: %d %s", st, raw)
	}

	// PLC tokens on the old server: wrong, reused, expired.
	st, creds := b.call(t, "GET", "com.atproto.identity.getRecommendedDidCredentials", bAccess, "", nil)
	wantStatus(t, "getRecommendedDidCredentials", st, creds, 200, "")
	sign := func(token string) (int, []byte) {
		body := maps.Clone(creds)
		body["token"] = token
		st, raw, _ := a.callRaw(t, "POST", "com.atproto.identity.signPlcOperation", access, "", body, "")
		return st, raw
	}
	before = migSnap(t, a, plc, did, access)
	st, raw = sign("AAAAA-BBBBB")
	migRefused(t, "signPlcOperation: wrong token", st, raw, 400, "InvalidToken", before, migSnap(t, a, plc, did, access))
	tok, _, err := a.app.tokens.Issue(ctx, auth.PurposePLCOperation)
	if err != nil {
		t.Fatal(err)
	}
	st, raw = sign(tok)
	if st != 200 {
		t.Fatalf("signPlcOperation: %d %s", st, raw)
	}
	var signed struct {
		Operation didplc.RegularOp `json:"operation"`
	}
	if err := json.Unmarshal(raw, &signed); err != nil {
		t.Fatal(err)
	}
	before = migSnap(t, a, plc, did, access)
	st, raw = sign(tok)
	migRefused(t, "signPlcOperation: reused token", st, raw, 400, "InvalidToken", before, migSnap(t, a, plc, did, access))
	tok, _, err = a.app.tokens.Issue(ctx, auth.PurposePLCOperation)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(16 * time.Minute)
	st, raw = sign(tok)
	migRefused(t, "signPlcOperation: expired token", st, raw, 400, "ExpiredToken", before, migSnap(t, a, plc, did, access))
	delTok, _, err := a.app.tokens.Issue(ctx, auth.PurposeDeleteAccount)
	if err != nil {
		t.Fatal(err)
	}
	st, raw = sign(delTok)
	migRefused(t, "signPlcOperation: a token of another purpose", st, raw, 400, "InvalidToken", before, migSnap(t, a, plc, did, access))

	// submitPlcOperation on the new server: operations that drop it.
	rotKey := a.app.cfg.RotationKey
	resign := func(change func(op *didplc.RegularOp)) any {
		op := signed.Operation
		op.Services = maps.Clone(op.Services)
		op.VerificationMethods = maps.Clone(op.VerificationMethods)
		op.RotationKeys = slices.Clone(op.RotationKeys)
		change(&op)
		op.Sig = nil
		if err := op.Sign(rotKey); err != nil {
			t.Fatal(err)
		}
		return op
	}
	for _, tc := range []struct {
		name string
		op   any
	}{
		{"drops our service", resign(func(op *didplc.RegularOp) { delete(op.Services, "atproto_pds") })},
		{"names another endpoint", resign(func(op *didplc.RegularOp) {
			op.Services["atproto_pds"] = didplc.OpService{Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example"}
		})},
		{"drops our signing key", resign(func(op *didplc.RegularOp) { op.VerificationMethods["atproto"] = fhSigningPub(t, a.app).DIDKey() })},
		{"drops our rotation key", resign(func(op *didplc.RegularOp) { op.RotationKeys = []string{fhSigningPub(t, a.app).DIDKey()} })},
		{"another handle", resign(func(op *didplc.RegularOp) { op.AlsoKnownAs = []string{"at://mallory.test"} })},
		{"not an operation", "hello"},
		{"unsigned", func() any { op := signed.Operation; op.Sig = nil; return op }()},
	} {
		before := migSnap(t, b, plc, did, bAccess)
		st, raw, _ := b.callRaw(t, "POST", "com.atproto.identity.submitPlcOperation", bAccess, "", map[string]any{"operation": tc.op}, "")
		migRefused(t, "submitPlcOperation: "+tc.name, st, raw, 400, "InvalidRequest", before, migSnap(t, b, plc, did, bAccess))
	}
	// The signed operation itself goes through.
	st, out = b.call(t, "POST", "com.atproto.identity.submitPlcOperation", bAccess, "", map[string]any{"operation": signed.Operation})
	wantStatus(t, "submitPlcOperation", st, out, 200, "")
}

// TestAccountPLCTokenCommand: `pds account plc-token` prints, as its last
// line, a token that signPlcOperation accepts once.
func TestAccountPLCTokenCommand(t *testing.T) {
	s := startServer(t, nil)
	_, access, _ := s.createAccount(t)
	dir := s.app.cfg.DataDir
	s.stop()
	var out, errOut bytes.Buffer
	if code := accountCmd([]string{"plc-token", "--data", dir}, &out, &errOut); code != 0 {
		t.Fatalf("plc-token: exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	tok := lines[len(lines)-1]
	a, ok := openOffline(dir, &errOut, "")
	if !ok {
		t.Fatal(errOut.String())
	}
	defer a.Close()
	if err := a.tokens.Check(context.Background(), auth.PurposePLCOperation, tok); err != nil {
		t.Fatalf("printed token %q: %v", tok, err)
	}
	_ = access
}

// migAdminToken issues a token through the admin route the CLI uses while
// the server runs.
func migAdminToken(t *testing.T, s *testServer, purpose string) string {
	t.Helper()
	st, raw, _ := testpds.Request(t, "POST", s.URL+api.EmailTokensPath+"?purpose="+purpose, basicAuth("admin", "admin-secret"), nil, "")
	var out struct {
		Tokens []struct{ Purpose, Token string }
	}
	_ = json.Unmarshal(raw, &out)
	if st != 200 || len(out.Tokens) != 1 || out.Tokens[0].Purpose != purpose || out.Tokens[0].Token == "" {
		t.Fatalf("admin token: %d %s", st, raw)
	}
	return out.Tokens[0].Token
}
