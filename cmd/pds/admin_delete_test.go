package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

// TestAdminDeleteAccount: com.atproto.admin.deleteAccount with the admin
// password deletes the account as the user's deleteAccount does; any other
// credential is refused and changes nothing.
func TestAdminDeleteAccount(t *testing.T) {
	ts := startServer(t, nil)
	did, access, _ := ts.createAccount(t)
	st, rec := ts.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("to be deleted")})
	wantStatus(t, "createRecord", st, rec, 200, "")
	uri := rec["uri"].(string)
	rkey := uri[strings.LastIndexByte(uri, '/')+1:]
	body := map[string]any{"did": did}

	// Refused: nothing changes.
	seq0 := ts.app.events.LastSeq()
	for _, c := range []struct{ name, authz string }{
		{"none", ""},
		{"wrong password", basicAuth("admin", "admin-secreT")},
		{"other user", basicAuth("root", testAdminPassword)},
		{"user access token", bearerAuth(access)},
		{"admin password as bearer", bearerAuth(testAdminPassword)},
	} {
		st, out := ts.adminCall(t, c.authz, "POST", "com.atproto.admin.deleteAccount", "", body)
		if (st != 400 && st != 401 && st != 403) || out["error"] == nil {
			t.Fatalf("deleteAccount with %s: %d %v, want a refusal", c.name, st, out)
		}
	}
	if !ts.app.accounts.Exists() || ts.app.events.LastSeq() != seq0 {
		t.Fatalf("a refused deleteAccount changed state (exists %v, seq %d→%d)", ts.app.accounts.Exists(), seq0, ts.app.events.LastSeq())
	}
	st, out := ts.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+did+"&collection=app.bsky.feed.post&rkey="+rkey, nil)
	wantStatus(t, "getRecord after refusals", st, out, 200, "")

	admin := basicAuth("admin", testAdminPassword)
	// Another DID, or none: AccountNotFound-like 400, never 500.
	st, out = ts.adminCall(t, admin, "POST", "com.atproto.admin.deleteAccount", "", map[string]any{"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"})
	wantStatus(t, "deleteAccount of another DID", st, out, 400, "NotFound")
	st, out = ts.adminCall(t, admin, "POST", "com.atproto.admin.deleteAccount", "", map[string]any{})
	wantStatus(t, "deleteAccount without a did", st, out, 400, "InvalidRequest")
	if !ts.app.accounts.Exists() || ts.app.events.LastSeq() != seq0 {
		t.Fatal("deleteAccount of another DID changed state")
	}

	seqBefore := ts.app.events.LastSeq()
	st, out = ts.adminCall(t, admin, "POST", "com.atproto.admin.deleteAccount", "", body)
	wantStatus(t, "admin deleteAccount", st, out, 200, "")
	st, out = ts.adminCall(t, admin, "POST", "com.atproto.admin.deleteAccount", "", body)
	wantStatus(t, "admin deleteAccount again", st, out, 400, "NotFound")

	st, out = ts.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+did+"&collection=app.bsky.feed.post&rkey="+rkey, nil)
	if st == 200 {
		t.Fatalf("a record of the deleted account is still served: %v", out)
	}
	st, out = ts.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
	wantStatus(t, "getLatestCommit after deletion", st, out, 400, "RepoNotFound")
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	wantStatus(t, "login after deletion", st, out, 401, "")
	st, out = ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil)
	if st == 200 {
		t.Fatalf("a session of the deleted account still works: %v", out)
	}
	if _, err := os.Stat(filepath.Join(ts.app.cfg.DataDir, account.SigningKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("signing key left after deletion: %v", err)
	}

	// The firehose keeps its numbering: one #account deleted after the rest.
	fs := fhSubscribe(t, fhHost(ts), "0").waitUntil(t, "#account deleted", func(fs []fhFrame) bool {
		return slices.ContainsFunc(fs, func(f fhFrame) bool {
			return f.Account != nil && f.Account.Status != nil && *f.Account.Status == "deleted" && f.Account.Did == did
		})
	})
	if last := fs[len(fs)-1]; last.Seq != seqBefore+1 || last.Account == nil || last.Account.Active {
		t.Fatalf("last event %s seq %d, want #account (inactive) at %d", last.T, last.Seq, seqBefore+1)
	}

	// Ready for a new account, whose seqs are above the old ones.
	_, access2, _ := ts.createAccount(t)
	st, out = ts.call(t, "POST", "com.atproto.repo.createRecord", access2, "", map[string]any{"repo": "alice.test", "collection": "app.bsky.feed.post", "record": post("fresh")})
	wantStatus(t, "createRecord on a fresh account", st, out, 200, "")
	if ts.app.events.LastSeq() <= seqBefore+1 {
		t.Fatalf("seq went back: %d", ts.app.events.LastSeq())
	}
}

// TestUserDeleteAccountSharesDeletion: com.atproto.server.deleteAccount
// (password and delete_account token) still deletes through the deletion
// it shares with the admin method; a wrong password or a reused token is
// refused.
func TestUserDeleteAccountSharesDeletion(t *testing.T) {
	ts := startServer(t, nil)
	did, access, _ := ts.createAccount(t)
	tok, _, err := ts.app.tokens.Issue(context.Background(), auth.PurposeDeleteAccount)
	if err != nil {
		t.Fatal(err)
	}
	st, out := ts.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": "wrong-password", "token": tok})
	wantStatus(t, "deleteAccount with a wrong password", st, out, 401, "AuthRequired")
	seqBefore := ts.app.events.LastSeq()
	st, out = ts.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": "hunter2-hunter2", "token": tok})
	wantStatus(t, "deleteAccount", st, out, 200, "")
	st, out = ts.call(t, "POST", "com.atproto.server.deleteAccount", "", "", map[string]any{"did": did, "password": "hunter2-hunter2", "token": tok})
	wantStatus(t, "deleteAccount again", st, out, 401, "AuthRequired")
	st, out = ts.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
	wantStatus(t, "getLatestCommit after deletion", st, out, 400, "RepoNotFound")
	if st, out := ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil); st == 200 {
		t.Fatalf("a session of the deleted account still works: %v", out)
	}
	fs := fhSubscribe(t, fhHost(ts), "0").waitUntil(t, "#account deleted", func(fs []fhFrame) bool {
		return slices.ContainsFunc(fs, func(f fhFrame) bool {
			return f.Account != nil && f.Account.Status != nil && *f.Account.Status == "deleted"
		})
	})
	if last := fs[len(fs)-1]; last.Seq != seqBefore+1 || last.Account == nil {
		t.Fatalf("last event %s seq %d, want #account at %d", last.T, last.Seq, seqBefore+1)
	}
}
