package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// legacyFixture describes testdata/legacy-datadir: a data directory
// written by main at 6ae9289, when the account record (DID, handle, email,
// times) and its password hash shared auth's bucket auth_account. It holds
// one post, an app password "old-phone" and a confirmed email; the tokens
// were issued at Clock.
type legacyFixture struct {
	DID         string    `json:"did"`
	Handle      string    `json:"handle"`
	Email       string    `json:"email"`
	Password    string    `json:"password"`
	AppPassword string    `json:"appPassword"`
	AccessJWT   string    `json:"accessJwt"`
	RefreshJWT  string    `json:"refreshJwt"`
	Clock       time.Time `json:"clock"`
}

// TestLegacyDataDir: a data directory of the old layout opens, is moved to
// the new one (record in account's bucket, password in auth's) in one
// transaction, and everything the owner had keeps working: the password,
// the app password, the sessions, the confirmed email and the records.
// Opening it a second time changes nothing more.
func TestLegacyDataDir(t *testing.T) {
	src := filepath.Join("testdata", "legacy-datadir")
	raw, err := os.ReadFile(filepath.Join(src, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx legacyFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"pds.db", "jwt-secret", "plc-rotation-key.hex", "repo-signing-key.hex"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	buckets := func(s *testServer) map[string]bool {
		seen := map[string]bool{}
		_ = s.app.db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				seen[string(name)] = b.Stats().KeyN > 0
				return nil
			})
		})
		return seen
	}

	clk := &testClock{t: fx.Clock.Add(time.Minute)}
	for round := range 2 {
		s := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, func(c *config) { c.Now = clk.Now })
		b := buckets(s)
		if _, ok := b["auth_account"]; ok {
			t.Fatalf("round %d: the old bucket auth_account is still there", round)
		}
		if !b["account"] || !b["auth_credentials"] {
			t.Fatalf("round %d: buckets after opening: %v", round, b)
		}

		// The session issued before the move still verifies and reads the
		// moved record.
		st, out := s.call(t, "GET", "com.atproto.server.getSession", fx.AccessJWT, "", nil)
		wantStatus(t, "getSession with the old access token", st, out, 200, "")
		if out["did"] != fx.DID || out["handle"] != fx.Handle || out["email"] != fx.Email || out["emailConfirmed"] != true {
			t.Fatalf("round %d: getSession = %v", round, out)
		}
		st, out = s.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+fx.DID+"&collection=app.bsky.feed.post&rkey=3legacypost22", nil)
		wantStatus(t, "getRecord", st, out, 200, "")

		// The password and the app password log in; a wrong one does not.
		for _, pw := range []string{fx.Password, fx.AppPassword} {
			st, out = s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": fx.Email, "password": pw})
			wantStatus(t, "createSession", st, out, 200, "")
			if out["did"] != fx.DID {
				t.Fatalf("round %d: createSession = %v", round, out)
			}
		}
		st, out = s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": fx.Handle, "password": "not-the-password"})
		wantStatus(t, "createSession with a wrong password", st, out, 401, "AuthenticationRequired")
		s.stop()
	}

	// The old refresh token rotates (once: it is then spent).
	s := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, func(c *config) { c.Now = clk.Now })
	st, out := s.call(t, "POST", "com.atproto.server.refreshSession", fx.RefreshJWT, "", nil)
	wantStatus(t, "refreshSession with the old refresh token", st, out, 200, "")
	if out["handle"] != fx.Handle {
		t.Fatalf("refreshSession = %v", out)
	}
}
