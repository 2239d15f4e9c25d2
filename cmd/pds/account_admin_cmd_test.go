package main

import (
	"bytes"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// runCLI runs `pds args...` in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// cliEnv points the CLI at the server's data directory and port.
func cliEnv(t *testing.T, ts *testServer, dir string) {
	t.Helper()
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"PDS_HOSTNAME":               "localhost",
		"PDS_PORT":                   u.Port(),
		"PDS_DATA_DIRECTORY":         dir,
		"PDS_DID_PLC_URL":            ts.plc.URL,
		"PDS_SERVICE_HANDLE_DOMAINS": ".test",
		"PDS_ADMIN_PASSWORD":         testAdminPassword,
		"PDS_EMAIL_SMTP_URL":         "",
		"PDS_EMAIL_FROM_ADDRESS":     "",
	} {
		t.Setenv(k, v)
	}
}

var cliCode = regexp.MustCompile(`(?m)^(\w+)\t([A-Z2-7]{5}-[A-Z2-7]{5})\t`)

// TestAccountCLI runs the operator's commands against a running server
// (through its admin API) and against the stopped server's data directory.
func TestAccountCLI(t *testing.T) {
	dir := t.TempDir()
	ts := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, nil)
	did, _, _ := ts.createAccount(t)
	cliEnv(t, ts, dir)

	// Running server, no SMTP: the code of a reset request comes from the CLI.
	code, out, errOut := runCLI(t, "account", "tokens")
	if code != 0 || !strings.Contains(out, "no code has been requested") {
		t.Fatalf("tokens with none requested: %d %q %q", code, out, errOut)
	}
	st, res := ts.call(t, "POST", "com.atproto.server.requestPasswordReset", "", "", map[string]any{"email": "alice@example.com"})
	wantStatus(t, "requestPasswordReset", st, res, 200, "")
	code, out, errOut = runCLI(t, "account", "tokens")
	m := cliCode.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != "reset_password" {
		t.Fatalf("tokens: %d %q %q", code, out, errOut)
	}
	st, res = ts.call(t, "POST", "com.atproto.server.resetPassword", "", "", map[string]any{"token": m[2], "password": "from-the-cli-code"})
	wantStatus(t, "resetPassword with the CLI's code", st, res, 200, "")
	st, res = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "from-the-cli-code"})
	wantStatus(t, "createSession", st, res, 200, "")

	code, out, errOut = runCLI(t, "account", "info")
	if code != 0 || !strings.Contains(out, did) || !strings.Contains(out, "alice.test") || !strings.Contains(out, "alice@example.com") {
		t.Fatalf("info (running): %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "account", "reset-password", "--password", "set-by-cli-online")
	if code != 0 {
		t.Fatalf("reset-password (running): %d %q %q", code, out, errOut)
	}
	st, res = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "set-by-cli-online"})
	wantStatus(t, "createSession after reset-password", st, res, 200, "")
	code, _, errOut = runCLI(t, "account", "tokens", "--purpose", "nonsense")
	if code == 0 {
		t.Fatalf("tokens --purpose nonsense succeeded: %q", errOut)
	}

	// Stopped server: the data directory directly.
	ts.stop()
	code, out, errOut = runCLI(t, "account", "tokens", "--purpose", "confirm_email")
	m = cliCode.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != "confirm_email" {
		t.Fatalf("tokens (stopped): %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "account", "reset-password")
	pw, ok := strings.CutPrefix(strings.TrimSpace(out), "new password: ")
	if code != 0 || !ok || len(pw) < 16 {
		t.Fatalf("reset-password (stopped): %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "account", "info")
	if code != 0 || !strings.Contains(out, did) {
		t.Fatalf("info (stopped): %d %q %q", code, out, errOut)
	}

	ts2 := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, nil)
	st, res = ts2.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": pw})
	wantStatus(t, "createSession with the printed password", st, res, 200, "")
	access := res["accessJwt"].(string)
	st, res = ts2.call(t, "POST", "com.atproto.server.confirmEmail", access, "", map[string]any{"email": "alice@example.com", "token": m[2]})
	wantStatus(t, "confirmEmail with the offline code", st, res, 200, "")
}
