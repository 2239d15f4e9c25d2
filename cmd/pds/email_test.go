package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/mailpit"
)

// These tests run the email flows end to end: the real server (wired as
// `pds serve` wires it, outbox included) mails through a real Mailpit, and
// the test reads the code from the delivered message.

var mailToken = regexp.MustCompile(`\b[A-Z2-7]{5}-[A-Z2-7]{5}\b`)

// startMailServer starts the server on dataDir with SMTP pointing at mp and
// its outbox running, as serve runs it, with quick retries. clk may be nil.
func startMailServer(t *testing.T, mp *mailpit.Server, dataDir string, clk *testClock) *testServer {
	t.Helper()
	extra := map[string]string{
		"PDS_EMAIL_SMTP_URL":     "smtp://" + mp.SMTPAddr,
		"PDS_EMAIL_FROM_ADDRESS": "PDS <noreply@pds.example.com>",
	}
	if dataDir != "" {
		extra["PDS_DATA_DIRECTORY"] = dataDir
	}
	ts := startServerWith(t, extra, func(c *config) {
		c.Email.RetryMin, c.Email.RetryMax = 50*time.Millisecond, 300*time.Millisecond
		if clk != nil {
			c.Now = clk.Now
		}
	})
	if ts.app.outbox == nil {
		t.Fatal("no outbox although SMTP is configured")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ts.app.outbox.Run(ctx) })
	var once sync.Once
	stopOutbox := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stopOutbox) // runs before the server's own cleanup closes the database
	stop := ts.stop
	ts.stop = func() { stopOutbox(); stop() }
	return ts
}

// tokenFrom returns the one code in a delivered message, checking that
// both bodies carry it.
func tokenFrom(t *testing.T, m mailpit.Message) string {
	t.Helper()
	tok := mailToken.FindString(m.Text)
	if tok == "" {
		t.Fatalf("no code in the text body:\n%s", m.Text)
	}
	if !strings.Contains(m.HTML, tok) {
		t.Fatalf("the HTML body lacks the code %s:\n%s", tok, m.HTML)
	}
	return tok
}

func TestEmailFlowsEndToEnd(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	clk := newTestClock()
	ts := startMailServer(t, mp, "", clk)
	_, access, _ := ts.createAccount(t)
	const addr = "alice@example.com"

	session := func() map[string]any {
		t.Helper()
		st, out := ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil)
		wantStatus(t, "getSession", st, out, 200, "")
		return out
	}
	if out := session(); out["email"] != addr || out["emailConfirmed"] != false || out["emailAuthFactor"] != false {
		t.Fatalf("getSession before confirmation = %v", out)
	}

	t.Run("confirm email", func(t *testing.T) {
		st, out := ts.call(t, "POST", "com.atproto.server.requestEmailConfirmation", access, "", nil)
		wantStatus(t, "requestEmailConfirmation", st, out, 200, "")
		m := mp.WaitMessage(addr, "Confirm your email address", 10*time.Second)
		if m.From.Address != "noreply@pds.example.com" {
			t.Errorf("From = %+v", m.From)
		}
		tok := tokenFrom(t, m)
		st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": "other@example.com", "token": tok})
		wantStatus(t, "confirmEmail with another address", st, out, 400, "InvalidRequest")
		st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": addr, "token": "AAAAA-BBBBB"})
		wantStatus(t, "confirmEmail with a wrong code", st, out, 400, "InvalidToken")
		st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": strings.ToUpper(addr), "token": strings.ToLower(tok)})
		wantStatus(t, "confirmEmail", st, out, 200, "")
		if out := session(); out["emailConfirmed"] != true {
			t.Fatalf("getSession after confirmation = %v", out)
		}
		st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": addr, "token": tok})
		wantStatus(t, "confirmEmail a second time", st, out, 400, "InvalidToken")
	})

	t.Run("expired code", func(t *testing.T) {
		mp.DeleteAll()
		st, out := ts.call(t, "POST", "com.atproto.server.requestAccountDelete", access, "", nil)
		wantStatus(t, "requestAccountDelete", st, out, 200, "")
		tok := tokenFrom(t, mp.WaitMessage(addr, "Account deletion requested", 10*time.Second))
		if err := ts.app.tokens.Check(context.Background(), "delete_account", tok); err != nil {
			t.Fatalf("fresh delete_account code: %v", err)
		}
		st, out = ts.call(t, "POST", "com.atproto.server.requestEmailConfirmation", access, "", nil)
		wantStatus(t, "requestEmailConfirmation", st, out, 200, "")
		tok = tokenFrom(t, mp.WaitMessage(addr, "Confirm your email address", 10*time.Second))
		clk.Advance(15*time.Minute + time.Second)
		st, out = ts.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": addr, "token": tok})
		wantStatus(t, "confirmEmail after 15 minutes", st, out, 400, "ExpiredToken")
	})

	t.Run("plc operation code", func(t *testing.T) {
		mp.DeleteAll()
		st, out := ts.call(t, "POST", "com.atproto.identity.requestPlcOperationSignature", access, "", nil)
		wantStatus(t, "requestPlcOperationSignature", st, out, 200, "")
		tok := tokenFrom(t, mp.WaitMessage(addr, "PLC update operation requested", 10*time.Second))
		if err := ts.app.tokens.Consume(context.Background(), "plc_operation", tok); err != nil {
			t.Fatalf("plc_operation code: %v", err)
		}
	})

	t.Run("update email", func(t *testing.T) {
		mp.DeleteAll()
		st, out := ts.call(t, "POST", "com.atproto.server.requestEmailUpdate", access, "", nil)
		wantStatus(t, "requestEmailUpdate", st, out, 200, "")
		if out["tokenRequired"] != true {
			t.Fatalf("requestEmailUpdate of a confirmed address = %v, want tokenRequired", out)
		}
		tok := tokenFrom(t, mp.WaitMessage(addr, "Email update requested", 10*time.Second))
		st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "alice2@example.com"})
		wantStatus(t, "updateEmail without the code", st, out, 400, "TokenRequired")
		st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "not an address", "token": tok})
		wantStatus(t, "updateEmail to a bad address", st, out, 400, "InvalidRequest")
		st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "Alice2@Example.com", "token": tok})
		wantStatus(t, "updateEmail", st, out, 200, "")
		if out := session(); out["email"] != "alice2@example.com" || out["emailConfirmed"] != false {
			t.Fatalf("getSession after updateEmail = %v", out)
		}
		st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": "alice3@example.com", "token": tok})
		wantStatus(t, "updateEmail with a used code (address unconfirmed: no code needed)", st, out, 200, "")
		// Unconfirmed address: no code is needed, none is sent.
		st, out = ts.call(t, "POST", "com.atproto.server.requestEmailUpdate", access, "", nil)
		wantStatus(t, "requestEmailUpdate", st, out, 200, "")
		if out["tokenRequired"] != false {
			t.Fatalf("requestEmailUpdate of an unconfirmed address = %v", out)
		}
		st, out = ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": addr, "emailAuthFactor": true})
		wantStatus(t, "updateEmail with emailAuthFactor", st, out, 400, "InvalidRequest")
	})

	t.Run("rate limit", func(t *testing.T) {
		// updateEmail: 5 per hour, all used above.
		st, out := ts.call(t, "POST", "com.atproto.server.updateEmail", access, "", map[string]any{"email": addr})
		wantStatus(t, "updateEmail #6", st, out, 429, "RateLimitExceeded")
		// requestAccountDelete: 5 per hour (one used above).
		for i := range 4 {
			st, out := ts.call(t, "POST", "com.atproto.server.requestAccountDelete", access, "", nil)
			wantStatus(t, fmt.Sprintf("requestAccountDelete #%d", i+2), st, out, 200, "")
		}
		st, out = ts.call(t, "POST", "com.atproto.server.requestAccountDelete", access, "", nil)
		wantStatus(t, "requestAccountDelete #6", st, out, 429, "RateLimitExceeded")
	})
}

func TestPasswordResetEndToEnd(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	clk := newTestClock()
	ts := startMailServer(t, mp, "", clk)
	_, access, refresh := ts.createAccount(t)
	const addr = "alice@example.com"
	st, login := ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	wantStatus(t, "createSession", st, login, 200, "")

	// Another address: the same answer, no mail.
	st, out := ts.call(t, "POST", "com.atproto.server.requestPasswordReset", "", "", map[string]any{"email": "mallory@example.com"})
	wantStatus(t, "requestPasswordReset of another address", st, out, 200, "")
	st, out = ts.call(t, "POST", "com.atproto.server.requestPasswordReset", "", "", map[string]any{"email": "ALICE@example.com"})
	wantStatus(t, "requestPasswordReset", st, out, 200, "")
	tok := tokenFrom(t, mp.WaitMessage(addr, "Password reset requested", 10*time.Second))
	if n := len(mp.Messages()); n != 1 {
		t.Fatalf("%d mails, want only the one to the account", n)
	}

	// Access tokens carry whole seconds: move on so the old ones predate
	// the reset.
	clk.Advance(2 * time.Second)
	st, out = ts.call(t, "POST", "com.atproto.server.resetPassword", "", "", map[string]any{"token": "AAAAA-BBBBB", "password": "new-password-1"})
	wantStatus(t, "resetPassword with a wrong code", st, out, 400, "InvalidToken")
	st, out = ts.call(t, "POST", "com.atproto.server.resetPassword", "", "", map[string]any{"token": tok, "password": "new-password-1"})
	wantStatus(t, "resetPassword", st, out, 200, "")
	st, out = ts.call(t, "POST", "com.atproto.server.resetPassword", "", "", map[string]any{"token": tok, "password": "new-password-2"})
	wantStatus(t, "resetPassword with a used code", st, out, 400, "InvalidToken")

	for _, tok := range []string{access, login["accessJwt"].(string)} {
		st, out = ts.call(t, "GET", "com.atproto.server.getSession", tok, "", nil)
		if st == 200 {
			t.Fatalf("an access token from before the reset still works: %v", out)
		}
	}
	for _, tok := range []string{refresh, login["refreshJwt"].(string)} {
		st, out = ts.call(t, "POST", "com.atproto.server.refreshSession", tok, "", nil)
		wantStatus(t, "refreshSession with a refresh token from before the reset", st, out, 400, "ExpiredToken")
	}
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": addr, "password": "hunter2-hunter2"})
	wantStatus(t, "createSession with the old password", st, out, 401, "AuthenticationRequired")
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": addr, "password": "new-password-1"})
	wantStatus(t, "createSession with the new password", st, out, 200, "")
	st, out = ts.call(t, "GET", "com.atproto.server.getSession", out["accessJwt"].(string), "", nil)
	wantStatus(t, "getSession with the new session", st, out, 200, "")
}

// TestEmailDeliveredAfterSMTPOutageAndRestart: a code requested while SMTP
// is down arrives once it is back, also when the server restarted between.
func TestEmailDeliveredAfterSMTPOutageAndRestart(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	dir := t.TempDir()
	ts := startMailServer(t, mp, dir, nil)
	ts.createAccount(t)
	const addr = "alice@example.com"

	// Outage without restart.
	mp.Stop()
	st, out := ts.call(t, "POST", "com.atproto.server.requestPasswordReset", "", "", map[string]any{"email": addr})
	wantStatus(t, "requestPasswordReset with SMTP down", st, out, 200, "")
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	mp.Start()
	tok := tokenFrom(t, mp.WaitMessage(addr, "Password reset requested", 10*time.Second))
	if err := ts.app.tokens.Check(context.Background(), "reset_password", tok); err != nil {
		t.Fatalf("the delivered code: %v", err)
	}

	// Outage across a restart.
	mp.DeleteAll()
	mp.Stop()
	st, out = ts.call(t, "POST", "com.atproto.server.requestPasswordReset", "", "", map[string]any{"email": addr})
	wantStatus(t, "requestPasswordReset with SMTP down", st, out, 200, "")
	time.Sleep(200 * time.Millisecond)
	ts.stop()
	mp.Start()
	ts2 := startMailServer(t, mp, dir, nil)
	tok2 := tokenFrom(t, mp.WaitMessage(addr, "Password reset requested", 10*time.Second))
	if tok2 == tok {
		t.Fatal("the same code twice")
	}
	st, out = ts2.call(t, "POST", "com.atproto.server.resetPassword", "", "", map[string]any{"token": tok2, "password": "after-restart"})
	wantStatus(t, "resetPassword with the code mailed after the restart", st, out, 200, "")
	if n := len(mp.Messages()); n != 1 {
		t.Fatalf("%d mails after the restart, want 1", n)
	}
}

// TestEmailCallsAsTheAppMakesThem replays the email calls of the Bluesky
// app as @atproto/api sends them: procedures without input go with no body
// and no Content-Type; those with input as JSON with the headers the
// client adds.
func TestEmailCallsAsTheAppMakesThem(t *testing.T) {
	mp := mailpit.Start(t, mailpit.Options{})
	ts := startMailServer(t, mp, "", nil)
	_, access, _ := ts.createAccount(t)
	const addr = "alice@example.com"
	appReq := func(nsid, body string) (int, map[string]any) {
		t.Helper()
		rq := rawReq{method: "POST", nsid: nsid, authz: bearerAuth(access)}
		if body != "" {
			rq.body, rq.contentType = []byte(body), "application/json"
		}
		st, out, _ := ts.send(t, rq)
		return st, out
	}
	st, out := appReq("com.atproto.server.requestEmailConfirmation", "")
	wantStatus(t, "requestEmailConfirmation", st, out, 200, "")
	tok := tokenFrom(t, mp.WaitMessage(addr, "Confirm your email address", 10*time.Second))
	// The app trims what the user typed and sends it as is.
	st, out = appReq("com.atproto.server.confirmEmail", `{"email":"alice@example.com","token":"`+tok+`"}`)
	wantStatus(t, "confirmEmail", st, out, 200, "")
	st, out = appReq("com.atproto.server.requestEmailUpdate", "")
	wantStatus(t, "requestEmailUpdate", st, out, 200, "")
	if out["tokenRequired"] != true {
		t.Fatalf("requestEmailUpdate = %v", out)
	}
	tok = tokenFrom(t, mp.WaitMessage(addr, "Email update requested", 10*time.Second))
	st, out = appReq("com.atproto.server.updateEmail", `{"email":"alice@example.org","token":"`+tok+`"}`)
	wantStatus(t, "updateEmail", st, out, 200, "")
	st, out = appReq("com.atproto.server.requestPasswordReset", `{"email":"alice@example.org"}`)
	wantStatus(t, "requestPasswordReset", st, out, 200, "")
	tok = tokenFrom(t, mp.WaitMessage("alice@example.org", "Password reset requested", 10*time.Second))
	st, out = appReq("com.atproto.server.resetPassword", `{"token":"`+tok+`","password":"a-new-password"}`)
	wantStatus(t, "resetPassword", st, out, 200, "")
}
