package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/mailpit"
)

const testAdminPassword = "admin-secret" // startServerWith's PDS_ADMIN_PASSWORD

// adminCall does an XRPC request with the given Authorization header.
func (s *testServer) adminCall(t *testing.T, authz, method, nsid, query string, body any) (int, map[string]any) {
	t.Helper()
	rq := rawReq{method: method, nsid: nsid, query: query, authz: authz}
	if body != nil {
		rq.body, rq.contentType = jsonBody(t, body), "application/json"
	}
	st, out, _ := s.send(t, rq)
	return st, out
}

// adminRoutes are every admin method with a valid input for the account.
func adminRoutes(did string) []struct {
	method, nsid, query string
	body                any
} {
	return []struct {
		method, nsid, query string
		body                any
	}{
		{"GET", "com.atproto.admin.getAccountInfo", "did=" + url.QueryEscape(did), nil},
		{"GET", "com.atproto.admin.getAccountInfos", "dids=" + url.QueryEscape(did), nil},
		{"POST", "com.atproto.admin.updateAccountPassword", "", map[string]any{"did": did, "password": "pw-from-admin"}},
		{"POST", "com.atproto.admin.updateAccountEmail", "", map[string]any{"account": did, "email": "ops@example.com"}},
		{"POST", "com.atproto.admin.updateAccountHandle", "", map[string]any{"did": did, "handle": "bob.test"}},
		{"POST", "com.atproto.admin.sendEmail", "", map[string]any{"recipientDid": did, "senderDid": did, "content": "hello"}},
		{"POST", "com.atproto.server.createInviteCode", "", map[string]any{"useCount": 1}},
		{"GET", "com.atproto.admin.getInviteCodes", "", nil},
		{"POST", "com.atproto.admin.disableInviteCodes", "", map[string]any{"codes": []string{"x"}}},
		{"POST", "com.atproto.admin.disableAccountInvites", "", map[string]any{"account": did}},
		{"POST", "com.atproto.admin.enableAccountInvites", "", map[string]any{"account": did}},
		{"POST", "com.atproto.admin.deleteAccount", "", map[string]any{"did": did}},
	}
}

// TestAdminRefusesOtherCredentials: no admin method works without the
// admin password, and the admin password works nowhere else.
func TestAdminRefusesOtherCredentials(t *testing.T) {
	ts := startServer(t, nil)
	did, access, _ := ts.createAccount(t)
	creds := []struct{ name, authz string }{
		{"none", ""},
		{"wrong password", basicAuth("admin", "admin-secreT")},
		{"empty password", basicAuth("admin", "")},
		{"other user", basicAuth("root", testAdminPassword)},
		{"password as user", basicAuth(testAdminPassword, "")},
		{"user access token", bearerAuth(access)},
		{"admin password as bearer", bearerAuth(testAdminPassword)},
		{"malformed basic", "Basic !!!"},
	}
	for _, rt := range adminRoutes(did) {
		for _, c := range creds {
			st, out := ts.adminCall(t, c.authz, rt.method, rt.nsid, rt.query, rt.body)
			if st != 401 && st != 400 && st != 403 {
				t.Errorf("%s with %s: status %d %v, want a refusal", rt.nsid, c.name, st, out)
			}
			if out["error"] == nil {
				t.Errorf("%s with %s: no XRPC error: %v", rt.nsid, c.name, out)
			}
		}
	}
	// Nothing changed.
	st, out := ts.adminCall(t, basicAuth("admin", testAdminPassword), "GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
	wantStatus(t, "getAccountInfo", st, out, 200, "")
	if out["handle"] != "alice.test" || out["email"] != "alice@example.com" {
		t.Fatalf("the account changed: %v", out)
	}
	// The admin password is not a user credential.
	for _, nsid := range []string{"com.atproto.server.getSession", "app.bsky.actor.getPreferences"} {
		st, out := ts.adminCall(t, basicAuth("admin", testAdminPassword), "GET", nsid, "", nil)
		if st == 200 {
			t.Errorf("%s answered the admin password: %v", nsid, out)
		}
	}
	st, out = ts.adminCall(t, basicAuth("admin", testAdminPassword), "POST", "com.atproto.repo.createRecord", "", map[string]any{
		"repo": did, "collection": "app.bsky.feed.post", "record": post("as admin"),
	})
	if st == 200 {
		t.Fatalf("createRecord answered the admin password: %v", out)
	}
}

// TestAdminMethods: each admin method with the admin password does its job.
func TestAdminMethods(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	ts := startMailServer(t, mp, "", nil)
	did, access, refresh := ts.createAccount(t)
	admin := basicAuth("admin", testAdminPassword)
	call := func(method, nsid, query string, body any) (int, map[string]any) {
		t.Helper()
		return ts.adminCall(t, admin, method, nsid, query, body)
	}
	host := strings.TrimPrefix(ts.URL, "http://")
	fh := fhSubscribe(t, host, "0")

	st, out := call("GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
	wantStatus(t, "getAccountInfo", st, out, 200, "")
	if out["did"] != did || out["handle"] != "alice.test" || out["email"] != "alice@example.com" || out["indexedAt"] == nil {
		t.Fatalf("getAccountInfo = %v", out)
	}
	st, out = call("GET", "com.atproto.admin.getAccountInfo", "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", nil)
	wantStatus(t, "getAccountInfo of another DID", st, out, 400, "NotFound")
	st, out = call("GET", "com.atproto.admin.getAccountInfos", "dids="+did+"&dids=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", nil)
	wantStatus(t, "getAccountInfos", st, out, 200, "")
	if infos, _ := out["infos"].([]any); len(infos) != 1 {
		t.Fatalf("getAccountInfos = %v", out)
	}

	// Password: every session ends, the new password logs in.
	time.Sleep(1100 * time.Millisecond) // tokens carry whole seconds
	st, out = call("POST", "com.atproto.admin.updateAccountPassword", "", map[string]any{"did": did, "password": "pw-from-admin"})
	wantStatus(t, "updateAccountPassword", st, out, 200, "")
	if st, out := ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil); st == 200 {
		t.Fatalf("an access token survived the password change: %v", out)
	}
	st, out = ts.call(t, "POST", "com.atproto.server.refreshSession", refresh, "", nil)
	wantStatus(t, "refreshSession after the password change", st, out, 400, "ExpiredToken")
	st, login := ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "pw-from-admin"})
	wantStatus(t, "createSession with the admin's password", st, login, 200, "")
	access = login["accessJwt"].(string)

	// Email: set, unconfirmed; sendEmail reaches it.
	st, out = call("POST", "com.atproto.admin.updateAccountEmail", "", map[string]any{"account": "alice.test", "email": "Ops@Example.com"})
	wantStatus(t, "updateAccountEmail", st, out, 200, "")
	st, out = ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil)
	wantStatus(t, "getSession", st, out, 200, "")
	if out["email"] != "ops@example.com" || out["emailConfirmed"] != false {
		t.Fatalf("getSession after updateAccountEmail = %v", out)
	}
	st, out = call("POST", "com.atproto.admin.updateAccountEmail", "", map[string]any{"account": did, "email": "bad\r\nBcc: x@example.com"})
	wantStatus(t, "updateAccountEmail with a bad address", st, out, 400, "InvalidRequest")
	st, out = call("POST", "com.atproto.admin.sendEmail", "", map[string]any{"recipientDid": did, "senderDid": did, "subject": "Hello from the operator", "content": "Line one\n<b>not bold</b>"})
	wantStatus(t, "sendEmail", st, out, 200, "")
	if out["sent"] != true {
		t.Fatalf("sendEmail = %v", out)
	}
	m := mp.WaitMessage("ops@example.com", "Hello from the operator", 10*time.Second)
	if !strings.Contains(m.Text, "<b>not bold</b>") || strings.Contains(m.HTML, "<b>not bold</b>") {
		t.Fatalf("sendEmail bodies: text %q html %q", m.Text, m.HTML)
	}

	// Handle: changed, announced by one #identity with the new handle.
	st, out = call("POST", "com.atproto.admin.updateAccountHandle", "", map[string]any{"did": did, "handle": "bob.test"})
	wantStatus(t, "updateAccountHandle", st, out, 200, "")
	fh.waitUntil(t, "#identity bob.test", func(fs []fhFrame) bool {
		for _, f := range fs {
			if f.Identity != nil && f.Identity.Handle != nil && *f.Identity.Handle == "bob.test" && f.Identity.Did == did {
				return true
			}
		}
		return false
	})
	st, out = call("GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
	wantStatus(t, "getAccountInfo", st, out, 200, "")
	if out["handle"] != "bob.test" {
		t.Fatalf("handle after updateAccountHandle = %v", out["handle"])
	}
	st, out = call("POST", "com.atproto.admin.updateAccountHandle", "", map[string]any{"did": did, "handle": "not a handle"})
	wantStatus(t, "updateAccountHandle with a bad handle", st, out, 400, "InvalidHandle")

	// Invites: one code; disabling it retires it; account invites flag.
	st, out = call("POST", "com.atproto.server.createInviteCode", "", map[string]any{"useCount": 1})
	wantStatus(t, "createInviteCode", st, out, 200, "")
	code, _ := out["code"].(string)
	if !strings.HasPrefix(code, "localhost-") {
		t.Fatalf("createInviteCode = %v", out)
	}
	st, out = call("GET", "com.atproto.admin.getInviteCodes", "", nil)
	wantStatus(t, "getInviteCodes", st, out, 200, "")
	codes, _ := out["codes"].([]any)
	if len(codes) != 1 || codes[0].(map[string]any)["code"] != code || codes[0].(map[string]any)["available"] != float64(0) {
		t.Fatalf("getInviteCodes = %v", out)
	}
	st, out = call("POST", "com.atproto.admin.disableInviteCodes", "", map[string]any{"codes": []string{code}})
	wantStatus(t, "disableInviteCodes", st, out, 200, "")
	if err := ts.app.accounts.CheckInviteCode(code); err == nil {
		t.Fatal("a disabled code still checks")
	}
	st, out = call("POST", "com.atproto.admin.disableInviteCodes", "", map[string]any{"accounts": []string{"admin"}})
	wantStatus(t, "disableInviteCodes of admin", st, out, 400, "InvalidRequest")
	st, out = call("POST", "com.atproto.admin.disableAccountInvites", "", map[string]any{"account": did, "note": "spam"})
	wantStatus(t, "disableAccountInvites", st, out, 200, "")
	st, out = call("GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
	if out["invitesDisabled"] != true || out["inviteNote"] != "spam" {
		t.Fatalf("getAccountInfo after disableAccountInvites = %v", out)
	}
	// A second account still cannot be made.
	st, out = ts.call(t, "POST", "com.atproto.server.createAccount", "", "", map[string]any{"handle": "carol.test", "password": "x-password", "email": "c@example.com", "inviteCode": code})
	if st == 200 {
		t.Fatalf("a second account was created: %v", out)
	}
}

// TestAdminRateLimited: guessing the admin password is bounded per client:
// after 300 calls in 5 minutes even the right password waits.
func TestAdminRateLimited(t *testing.T) {
	ts := startServer(t, nil)
	did, _, _ := ts.createAccount(t)
	for i := range 300 {
		st, out := ts.adminCall(t, basicAuth("admin", fmt.Sprintf("guess-%d", i)), "GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
		if st != 401 {
			t.Fatalf("guess %d: %d %v", i, st, out)
		}
	}
	st, out := ts.adminCall(t, basicAuth("admin", testAdminPassword), "GET", "com.atproto.admin.getAccountInfo", "did="+did, nil)
	wantStatus(t, "the right password after 300 guesses", st, out, 429, "RateLimitExceeded")
}
