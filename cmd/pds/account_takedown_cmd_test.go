package main

import (
	"strings"
	"testing"
)

// takedownState checks what a takedown changes: login and a sync read.
func takedownState(t *testing.T, ts *testServer, did string, takendown bool, what string) {
	t.Helper()
	st, out := ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	st2, out2 := ts.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
	if takendown {
		wantStatus(t, "createSession "+what, st, out, 401, "AccountTakedown")
		wantStatus(t, "getLatestCommit "+what, st2, out2, 400, "RepoTakendown")
	} else {
		wantStatus(t, "createSession "+what, st, out, 200, "")
		wantStatus(t, "getLatestCommit "+what, st2, out2, 200, "")
	}
}

// TestAccountTakedownCLI: `pds account takedown` and `untakedown`, against
// the running server (through the admin API) and against the stopped
// server's data directory.
func TestAccountTakedownCLI(t *testing.T) {
	dir := t.TempDir()
	ts := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, nil)
	did, _, _ := ts.createAccount(t)
	cliEnv(t, ts, dir)
	takedownState(t, ts, did, false, "before any takedown")

	// Running server.
	code, out, errOut := runCLI(t, "account", "takedown", "--ref", "TICKET-7")
	if code != 0 || !strings.Contains(out, "TICKET-7") {
		t.Fatalf("takedown (running): %d %q %q", code, out, errOut)
	}
	takedownState(t, ts, did, true, "after takedown (running)")
	st, res := ts.adminCall(t, basicAuth("admin", testAdminPassword), "GET", "com.atproto.admin.getSubjectStatus", "did="+did, nil)
	wantStatus(t, "getSubjectStatus", st, res, 200, "")
	if td, _ := res["takedown"].(map[string]any); td["applied"] != true || td["ref"] != "TICKET-7" {
		t.Fatalf("getSubjectStatus after the CLI takedown = %v", res)
	}
	code, out, errOut = runCLI(t, "account", "untakedown")
	if code != 0 {
		t.Fatalf("untakedown (running): %d %q %q", code, out, errOut)
	}
	takedownState(t, ts, did, false, "after untakedown (running)")

	// Stopped server: takedown, then the restarted server refuses.
	ts.stop()
	code, out, errOut = runCLI(t, "account", "takedown")
	if code != 0 || !strings.Contains(out, "taken down") {
		t.Fatalf("takedown (stopped): %d %q %q", code, out, errOut)
	}
	ts2 := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, nil)
	takedownState(t, ts2, did, true, "after takedown (stopped)")
	ts2.stop()
	code, out, errOut = runCLI(t, "account", "untakedown")
	if code != 0 {
		t.Fatalf("untakedown (stopped): %d %q %q", code, out, errOut)
	}
	ts3 := startServerWith(t, map[string]string{"PDS_DATA_DIRECTORY": dir}, nil)
	takedownState(t, ts3, did, false, "after untakedown (stopped)")

	// Bad flags are an error, not a takedown.
	ts3.stop()
	if code, _, _ := runCLI(t, "account", "takedown", "--nonsense"); code == 0 {
		t.Fatal("takedown --nonsense succeeded")
	}
}
