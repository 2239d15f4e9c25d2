package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pdsbox/pds/internal/testpds"
)

// TestAccountCreatePasswordFromStdin: the password is read from stdin, and
// the command line has no way to carry it (it would show in
// /proc/*/cmdline).
func TestAccountCreatePasswordFromStdin(t *testing.T) {
	plc := testpds.NewMockPLC(t)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"PDS_HOSTNAME": "localhost", "PDS_DATA_DIRECTORY": dir, "PDS_DID_PLC_URL": plc.URL,
		"PDS_SERVICE_HANDLE_DOMAINS": ".test", "PDS_CRAWLERS": "", "PDS_ADMIN_PASSWORD": "admin-secret",
	} {
		t.Setenv(k, v)
	}
	stdin := func(s string) *os.File { return stdinFile(t, s) }
	var out, errb bytes.Buffer
	if code := accountCreate([]string{"--handle", "alice.test", "--password", "x"}, stdin("pw\n"), &out, &errb); code != 2 {
		t.Fatalf("--password accepted (exit %d)", code)
	}
	if code := accountCreate([]string{"--handle", "alice.test"}, stdin(""), &out, &errb); code != 2 || !strings.Contains(errb.String(), "no password") {
		t.Fatalf("empty stdin: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := accountCreate([]string{"--handle", "alice.test"}, stdin("correct horse battery\nignored\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	a, ok := openOffline(dir, &errb, "")
	if !ok {
		t.Fatal(errb.String())
	}
	defer a.Close()
	if _, err := a.auth.Login(t.Context(), "alice.test", "correct horse battery"); err != nil {
		t.Fatalf("login with the stdin password: %v", err)
	}
}

// stdinFile is a file holding s, opened for reading, to stand in for stdin.
func stdinFile(t *testing.T, s string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
