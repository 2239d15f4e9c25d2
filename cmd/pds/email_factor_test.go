package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/auth/oauth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/internal/mailpit"
	bolt "go.etcd.io/bbolt"
)

// The email second factor (emailAuthFactor) end to end: the real server
// mails the codes through a real Mailpit, the test reads them from there.

const factorAddr = "alice@example.com"

// confirmAddress confirms the account's address with the mailed code.
func confirmAddress(t *testing.T, ts *testServer, mp *mailpit.Server, access string) {
	t.Helper()
	st, out := ts.call(t, "POST", "com.atproto.server.requestEmailConfirmation", access, "", nil)
	wantStatus(t, "requestEmailConfirmation", st, out, 200, "")
	tok := tokenFrom(t, mp.WaitMessage(factorAddr, "Confirm your email address", 10*time.Second))
	st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": factorAddr, "token": tok})
	wantStatus(t, "confirmEmail", st, out, 200, "")
}

// refreshTokens counts the stored sessions (refresh tokens).
func refreshTokens(t *testing.T, ts *testServer) int {
	t.Helper()
	n := 0
	if err := ts.app.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte("auth_refresh_tokens")).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// factorOn reads getSession's emailAuthFactor and emailConfirmed.
func factorOn(t *testing.T, ts *testServer, access string) (factor, confirmed any) {
	t.Helper()
	st, out := ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil)
	wantStatus(t, "getSession", st, out, 200, "")
	return out["emailAuthFactor"], out["emailConfirmed"]
}

func TestEmailAuthFactorCreateSession(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	dataDir := t.TempDir()
	ts := startMailServer(t, mp, dataDir, nil)
	_, access, _ := ts.createAccount(t)
	login := func(password, code string) (int, map[string]any) {
		t.Helper()
		body := map[string]any{"identifier": "alice.test", "password": password}
		if code != "" {
			body["authFactorToken"] = code
		}
		return ts.call(t, "POST", "com.atproto.server.createSession", "", "", body)
	}

	// Not on an unconfirmed address: the codes could go where the owner
	// does not read.
	st, out := ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": factorAddr, "emailAuthFactor": true})
	wantStatus(t, "emailAuthFactor on an unconfirmed address", st, out, 400, "InvalidRequest")
	if f, _ := factorOn(t, ts, access); f != false {
		t.Fatalf("emailAuthFactor = %v after a refused update", f)
	}
	confirmAddress(t, ts, mp, access)
	// Nor for an address that is not the account's.
	st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "other@example.com", "emailAuthFactor": true})
	wantStatus(t, "emailAuthFactor with another address", st, out, 400, "InvalidRequest")

	// On: no code needed, the address stays confirmed.
	st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "Alice@Example.com", "emailAuthFactor": true})
	wantStatus(t, "turning emailAuthFactor on", st, out, 200, "")
	if f, c := factorOn(t, ts, access); f != true || c != true {
		t.Fatalf("after turning it on: emailAuthFactor %v emailConfirmed %v", f, c)
	}

	// The password alone: 401 AuthFactorTokenRequired, a code mailed, no session.
	mp.DeleteAll()
	before := refreshTokens(t, ts)
	st, out = login("hunter2-hunter2", "")
	wantStatus(t, "createSession without the code", st, out, 401, "AuthFactorTokenRequired")
	if out["accessJwt"] != nil || refreshTokens(t, ts) != before {
		t.Fatalf("a session was issued without the code: %v", out)
	}
	code := tokenFrom(t, mp.WaitMessage(factorAddr, "Your sign-in code", 10*time.Second))

	// A wrong password says nothing of the factor and mails nothing.
	st, out = login("wrong-password", "")
	wantStatus(t, "createSession with a wrong password", st, out, 401, "AuthenticationRequired")
	st, out = login("wrong-password", code)
	wantStatus(t, "createSession with a wrong password and the code", st, out, 401, "AuthenticationRequired")
	// A wrong code is refused, and the right one still works after it.
	st, out = login("hunter2-hunter2", "AAAAA-BBBBB")
	wantStatus(t, "createSession with a wrong code", st, out, 400, "InvalidToken")
	if refreshTokens(t, ts) != before {
		t.Fatal("a session was issued with a wrong code")
	}
	if n := len(mp.Messages()); n != 1 {
		t.Fatalf("%d mails, want the one sign-in code", n)
	}
	st, out = login("hunter2-hunter2", code)
	wantStatus(t, "createSession with the code", st, out, 200, "")
	if out["emailAuthFactor"] != true || out["accessJwt"] == nil || refreshTokens(t, ts) != before+1 {
		t.Fatalf("createSession with the code = %v", out)
	}
	access = out["accessJwt"].(string)
	// Single use.
	st, out = login("hunter2-hunter2", code)
	wantStatus(t, "createSession with a used code", st, out, 400, "InvalidToken")

	// App passwords are not asked for a code.
	st, out = ts.call(t, "POST", "com.atproto.server.createAppPassword", access, "", map[string]any{"name": "phone"})
	wantStatus(t, "createAppPassword", st, out, 200, "")
	mp.DeleteAll()
	st, out = login(out["password"].(string), "")
	wantStatus(t, "createSession with an app password", st, out, 200, "")
	if n := len(mp.Messages()); n != 0 {
		t.Fatalf("an app-password login mailed %d messages", n)
	}

	// The factor survives a restart.
	ts.stop()
	ts = startMailServer(t, mp, dataDir, nil)
	if f, _ := factorOn(t, ts, access); f != true {
		t.Fatalf("emailAuthFactor after a restart = %v", f)
	}
	st, out = login("hunter2-hunter2", "")
	wantStatus(t, "createSession after a restart", st, out, 401, "AuthFactorTokenRequired")

	// Off needs an update_email code: without one a code is mailed and
	// nothing changes.
	mp.DeleteAll()
	st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": factorAddr, "emailAuthFactor": false})
	wantStatus(t, "turning emailAuthFactor off without a code", st, out, 400, "TokenRequired")
	upd := tokenFrom(t, mp.WaitMessage(factorAddr, "Email update requested", 10*time.Second))
	if f, _ := factorOn(t, ts, access); f != true {
		t.Fatal("emailAuthFactor went off without a code")
	}
	st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": factorAddr, "emailAuthFactor": false, "token": upd})
	wantStatus(t, "turning emailAuthFactor off", st, out, 200, "")
	if f, c := factorOn(t, ts, access); f != false || c != true {
		t.Fatalf("after turning it off: emailAuthFactor %v emailConfirmed %v", f, c)
	}
	st, out = login("hunter2-hunter2", "")
	wantStatus(t, "createSession with the factor off", st, out, 200, "")
}

// TestEmailAuthFactorAddressChange: changing the address turns the factor
// off (the new address is unconfirmed).
func TestEmailAuthFactorAddressChange(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	ts := startMailServer(t, mp, "", nil)
	_, access, _ := ts.createAccount(t)
	confirmAddress(t, ts, mp, access)
	st, out := ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": factorAddr, "emailAuthFactor": true})
	wantStatus(t, "turning emailAuthFactor on", st, out, 200, "")

	mp.DeleteAll()
	st, out = ts.call(t, "POST", "com.atproto.server.requestEmailUpdate", access, "", nil)
	wantStatus(t, "requestEmailUpdate", st, out, 200, "")
	upd := tokenFrom(t, mp.WaitMessage(factorAddr, "Email update requested", 10*time.Second))
	st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "alice2@example.com", "token": upd})
	wantStatus(t, "updateEmail", st, out, 200, "")
	if f, c := factorOn(t, ts, access); f != false || c != false {
		t.Fatalf("after an address change: emailAuthFactor %v emailConfirmed %v", f, c)
	}
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	wantStatus(t, "createSession after the address change", st, out, 200, "")
}

// TestEmailAuthFactorOAuthPage: the OAuth sign-in page asks for the mailed
// code after the password, refuses a wrong one, and signs in with the right
// one; indigo's OAuth client (a loopback development client) is the app.
func TestEmailAuthFactorOAuthPage(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	ts := startMailServer(t, mp, "", nil)
	did, access, _ := ts.createAccount(t)
	confirmAddress(t, ts, mp, access)
	st, out := ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": factorAddr, "emailAuthFactor": true})
	wantStatus(t, "turning emailAuthFactor on", st, out, 200, "")
	mp.DeleteAll()

	scopes := []string{"atproto", "transition:generic"}
	cfg := oauth.NewLocalhostConfig("http://127.0.0.1/callback", scopes)
	a := &oauthApp{t: t, s: ts, did: syntax.DID(did), scopes: scopes, app: oauth.NewClientApp(&cfg, oauth.NewMemStore())}
	a.app.Client = http.DefaultClient
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{DID: a.did, Handle: "alice.test",
		Services: map[string]identity.ServiceEndpoint{"atproto_pds": {Type: "AtprotoPersonalDataServer", URL: ts.app.cfg.PublicURL}}})
	a.app.Dir = dir
	a.code = func() string { return tokenFrom(t, mp.WaitMessage(factorAddr, "Your sign-in code", 10*time.Second)) }

	sess := a.signIn("hunter2-hunter2")
	if st, out := oauthCall(t, sess, "GET", "com.atproto.server.getSession", "", nil); st != 200 || out["did"] != did || out["emailAuthFactor"] != true {
		t.Fatalf("getSession with the OAuth session: %d %v", st, out)
	}
	if n := len(mp.Messages()); n != 1 {
		t.Fatalf("%d mails, want the one sign-in code", n)
	}
}
