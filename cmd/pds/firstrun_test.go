package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/testpds"
)

const serveHelperEnv = "PDS_TEST_SERVE_HELPER"

// TestServeHelperProcess is not a test on its own: TestFirstRunCommands
// runs `pds serve` in a process of its own through it, so that the
// server's os.Args[0] and its lock on the database are real.
func TestServeHelperProcess(t *testing.T) {
	if os.Getenv(serveHelperEnv) != "1" {
		t.Skip("helper process of TestFirstRunCommands")
	}
	os.Exit(run([]string{"serve", "--data", os.Getenv("PDS_TEST_DATA")}, os.Stdout, os.Stderr))
}

// freePort finds a port of this branch's range (3400-3499) that is free
// now: `pds account` finds a running server by its configured port.
func freePort(t *testing.T) int {
	t.Helper()
	for p := 3400; p < 3500; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free port in 3400-3499")
	return 0
}

// TestFirstRunCommands follows a first run: `pds serve` prints how to
// create the account with the command it was started as (and its --data),
// `pds account invite` prints the invite code while the server runs (it
// asks the server, as `account create` does), and `account create` works
// beside it too.
func TestFirstRunCommands(t *testing.T) {
	plc := testpds.NewMockPLC(t)
	data := t.TempDir()
	port := freePort(t)
	env := map[string]string{
		"PDS_HOSTNAME": "localhost", "PDS_PORT": fmt.Sprint(port), "PDS_DID_PLC_URL": plc.URL,
		"PDS_ADMIN_PASSWORD": "admin-secret", "PDS_CRAWLERS": "", "LOG_LEVEL": "error",
		"PDS_SERVICE_HANDLE_DOMAINS": ".test", "PDS_DATA_DIRECTORY": "",
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), serveHelperEnv+"=1", "PDS_TEST_DATA="+data)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	})

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var hint, code string
	for code == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the server stopped before printing the invite code\n%s", stderr.String())
			}
			if strings.HasPrefix(l, "  ") {
				hint = strings.TrimSpace(l)
			}
			if c, ok := strings.CutPrefix(l, "or from a client with invite code "); ok {
				code = c
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no startup hint\n%s", stderr.String())
		}
	}
	want := os.Args[0] + " account create --data " + shellQuote(data) + " --handle <name>.test (it asks for the password)"
	if hint != want {
		t.Errorf("startup hint %q\nwant %q", hint, want)
	}

	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	if rc := run([]string{"account", "invite", "--data", data}, &out, &errOut); rc != 0 || strings.TrimSpace(out.String()) != code {
		t.Fatalf("account invite while the server runs: exit %d, stdout %q, stderr %q; want the code %s", rc, out.String(), errOut.String(), code)
	}
	out.Reset()
	errOut.Reset()
	if rc := accountCreate([]string{"--data", data, "--handle", "alice.test"}, stdinFile(t, "a long password\n"), &out, &errOut); rc != 0 || !strings.Contains(out.String(), "with handle alice.test") {
		t.Fatalf("account create while the server runs: exit %d, stdout %q, stderr %q", rc, out.String(), errOut.String())
	}
	// With a wrong admin password the server refuses, and the command says so.
	t.Setenv("PDS_ADMIN_PASSWORD", "wrong")
	out.Reset()
	errOut.Reset()
	if rc := run([]string{"account", "invite", "--data", data}, &out, &errOut); rc != 1 || !strings.Contains(errOut.String(), "AuthenticationRequired") {
		t.Fatalf("account invite with a wrong admin password: exit %d, stdout %q, stderr %q", rc, out.String(), errOut.String())
	}
}

// TestSelfCommand: the hint names the command as the server was started.
func TestSelfCommand(t *testing.T) {
	for _, tc := range []struct{ arg0, want string }{
		{"/tmp/go-build1234567/b001/exe/pds", "go run ./cmd/pds"},
		{"./pds", "./pds"},
		{"/usr/local/bin/pds", "/usr/local/bin/pds"},
		{"bin/pds", "bin/pds"},
		{"pds-not-on-any-path-4f2a", "./pds-not-on-any-path-4f2a"},
	} {
		if got := selfCommand(tc.arg0); got != tc.want {
			t.Errorf("selfCommand(%q) = %q, want %q", tc.arg0, got, tc.want)
		}
	}
	for _, tc := range []struct{ data, want string }{
		{"", ""},
		{"/srv/pds", " --data /srv/pds"},
		{"my data", " --data 'my data'"},
		{"it's", ` --data 'it'\''s'`},
	} {
		if got := dataHint(tc.data); got != tc.want {
			t.Errorf("dataHint(%q) = %q, want %q", tc.data, got, tc.want)
		}
	}
}

// TestServeRefusesDIDWebOnLocalhost: `pds serve` with PDS_DID_METHOD=web
// and no public hostname exits 1 with a message saying why, before
// creating anything.
func TestServeRefusesDIDWebOnLocalhost(t *testing.T) {
	data := t.TempDir()
	t.Setenv("PDS_DATA_DIRECTORY", data)
	t.Setenv("PDS_DID_METHOD", "web")
	t.Setenv("PDS_HOSTNAME", "")
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"serve"}, &stdout, &stderr); rc != 1 || !strings.Contains(stderr.String(), "PDS_DID_METHOD=web needs a public hostname") ||
		!strings.Contains(stderr.String(), "PDS_DID_METHOD=plc") {
		t.Fatalf("exit %d, stderr %q", rc, stderr.String())
	}
	if _, err := os.Stat(data + "/pds.db"); !os.IsNotExist(err) {
		t.Fatalf("a database was created: %v", err)
	}
}
