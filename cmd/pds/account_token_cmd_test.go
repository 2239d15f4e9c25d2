package main

import (
	"context"
	"strings"
	"testing"

	"github.com/pdsbox/pds/auth"
)

// TestAccountTokenCommandsWhileServing: `pds account plc-token` and
// `delete-token` while the server holds the database go through the one
// admin token route and print, as their last line, a code the server
// accepts; without an account they fail with the server's reason.
func TestAccountTokenCommandsWhileServing(t *testing.T) {
	dir := t.TempDir()
	ts := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir, "PDS_ADMIN_PASSWORD": testAdminPassword}, nil)
	cliEnv(t, ts, dir)
	if code, _, errOut := runCLI(t, "account", "plc-token"); code != 1 || !strings.Contains(errOut, "AccountNotFound") {
		t.Fatalf("plc-token without an account: exit %d: %s", code, errOut)
	}
	ts.createAccount(t)
	for cmd, purpose := range map[string]auth.EmailTokenPurpose{"plc-token": auth.PurposePLCOperation, "delete-token": auth.PurposeDeleteAccount} {
		code, out, errOut := runCLI(t, "account", cmd)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", cmd, code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], string(purpose)+" token, valid until ") {
			t.Errorf("%s: first line %q", cmd, lines[0])
		}
		if err := ts.app.tokens.Check(context.Background(), purpose, lines[len(lines)-1]); err != nil {
			t.Errorf("%s: printed code %q: %v", cmd, lines[len(lines)-1], err)
		}
	}
}
