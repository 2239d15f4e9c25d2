package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/did-method-plc/go-didplc"
	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/internal/testpds"
)

// devRun is a `pds dev` started by a test, with what it printed.
type devRun struct {
	pds, plc                      string
	handle, did, password, output string
}

// startDev runs `pds dev` in this process on ephemeral loopback ports and
// fails the test on any dial it makes to a non-loopback address.
func startDev(t *testing.T, dataDir string) *devRun {
	t.Helper()
	var mu sync.Mutex
	var outside []string
	record := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !isLoopbackAddr(addr) {
			mu.Lock()
			outside = append(outside, network+" "+addr)
			mu.Unlock()
		}
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, devOptions{
			DataDir: dataDir, Listen: "127.0.0.1:0", PLCListen: "127.0.0.1:0", Handle: "alice.test", LogLevel: "error",
			Dial:  record,
			Ready: func(p, l string) { ready <- [2]string{p, l} },
		}, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pds dev: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(outside) > 0 {
			t.Errorf("pds dev dialed outside the machine: %v", outside)
		}
	})
	r := &devRun{}
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "handle":
			r.handle = v
		case "DID":
			r.did = v
		case "password":
			r.password = v
		}
		if strings.HasPrefix(line, "Stop with") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	select {
	case u := <-ready:
		r.pds, r.plc = u[0], u[1]
	case err := <-done:
		t.Fatalf("pds dev stopped: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		t.Fatal("pds dev did not start")
	}
	r.output = out.String()
	if r.handle == "" || r.did == "" || r.password == "" {
		t.Fatalf("pds dev did not print handle, DID and password:\n%s", r.output)
	}
	return r
}

func xrpcJSON(t *testing.T, base, method, nsid, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+"/xrpc/"+nsid, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestDevEndToEnd: `pds dev` prints credentials; a client logs in with
// them (via the localhost URL, as the app would), posts, and a firehose
// subscriber sees the post; the DID lives in the embedded directory, which
// go-didplc's client reads and verifies; nothing dials outside.
func TestDevEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	d := startDev(t, dataDir)
	if !strings.HasPrefix(d.pds, "http://localhost:") || d.handle != "alice.test" || !strings.HasPrefix(d.did, "did:plc:") {
		t.Fatalf("printed: %+v", d)
	}

	u, _ := url.Parse(d.pds)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	st, sess := xrpcJSON(t, d.pds, "POST", "com.atproto.server.createSession", "", map[string]any{"identifier": d.handle, "password": d.password})
	if st != 200 || sess["did"] != d.did {
		t.Fatalf("login with the printed credentials: %d %v", st, sess)
	}
	access := sess["accessJwt"].(string)
	st, rec := xrpcJSON(t, d.pds, "POST", "com.atproto.repo.createRecord", access, map[string]any{"repo": d.did, "collection": "app.bsky.feed.post", "record": post("hello from pds dev")})
	if st != 200 {
		t.Fatalf("post: %d %v", st, rec)
	}
	for {
		h, body := testpds.ReadFrame(t, conn)
		if h.T != "#commit" {
			continue
		}
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		if ev.Repo != d.did || len(ev.Ops) != 1 || "at://"+d.did+"/"+ev.Ops[0].Path != rec["uri"] {
			t.Fatalf("commit on the firehose: %+v, want %v", ev, rec["uri"])
		}
		if _, err := irepo.VerifyCommitMessage(context.Background(), &ev); err != nil {
			t.Fatalf("commit does not verify: %v", err)
		}
		break
	}

	// The identity is served by the embedded directory and resolves back.
	c := &didplc.Client{DirectoryURL: d.plc}
	doc, err := c.Resolve(context.Background(), d.did)
	if err != nil || doc.AlsoKnownAs[0] != "at://alice.test" || doc.Service[0].ServiceEndpoint != d.pds {
		t.Fatalf("DID document: %+v %v", doc, err)
	}
	audit, err := c.AuditLog(context.Background(), d.did)
	if err != nil || didplc.VerifyOpLog(audit) != nil {
		t.Fatalf("audit log: %v", err)
	}
	st, res := xrpcJSON(t, d.pds, "GET", "com.atproto.identity.resolveHandle?handle=alice.test", "", nil)
	if st != 200 || res["did"] != d.did {
		t.Fatalf("resolveHandle: %d %v", st, res)
	}
	// A handle elsewhere would need DNS: refused inside, not dialed.
	if st, _ := xrpcJSON(t, d.pds, "GET", "com.atproto.identity.resolveHandle?handle=bsky.app", "", nil); st == 200 {
		t.Fatal("resolved a public handle without the network")
	}
	if fi, err := os.Stat(filepath.Join(dataDir, devPasswordFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
}

// TestDevRestartKeepsAccount: a second run on the same data directory
// prints the same account and password.
func TestDevRestartKeepsAccount(t *testing.T) {
	dataDir := t.TempDir()
	var first *devRun
	t.Run("first", func(t *testing.T) { first = startDev(t, dataDir) })
	second := startDev(t, dataDir)
	if second.did != first.did || second.password != first.password {
		t.Fatalf("second run: %s %s, first: %s %s", second.did, second.password, first.did, first.password)
	}
	if st, _ := xrpcJSON(t, second.pds, "POST", "com.atproto.server.createSession", "", map[string]any{"identifier": second.handle, "password": second.password}); st != 200 {
		t.Fatalf("login after restart: %d", st)
	}
}

func TestPublicPLCRefusedForPrivateHost(t *testing.T) {
	for _, tc := range []struct {
		host, plc string
		refused   bool
	}{
		{"localhost", "https://plc.directory", true},
		{"pds.test", "https://plc.directory", true},
		{"box.local", "https://plc.directory/", true},
		{"pds.example.com", "https://plc.directory", false},
		{"localhost", "http://127.0.0.1:2582", false},
	} {
		vars := map[string]string{"PDS_HOSTNAME": tc.host, "PDS_DID_PLC_URL": tc.plc, "PDS_DATA_DIRECTORY": t.TempDir()}
		cfg, err := loadConfig(func(k string) string { return vars[k] }, "", "")
		if err != nil {
			t.Fatal(err)
		}
		err = plcRefusal(cfg)
		if (err != nil) != tc.refused {
			t.Errorf("%s with %s: %v, refused want %v", tc.host, tc.plc, err, tc.refused)
		}
		if err != nil && !strings.Contains(err.Error(), "pds dev") {
			t.Errorf("the refusal does not point to pds dev: %v", err)
		}
	}
	// The CLI refuses before anything is created.
	dir := t.TempDir()
	t.Setenv("PDS_HOSTNAME", "localhost")
	t.Setenv("PDS_DID_PLC_URL", "https://plc.directory")
	var stderr bytes.Buffer
	if code := accountCreate([]string{"--data", dir, "--handle", "alice.test"}, stdinFile(t, "hunter2-hunter2\n"), io.Discard, &stderr); code == 0 || !strings.Contains(stderr.String(), "pds dev") {
		t.Fatalf("account create: exit %d, %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, dbFile)); err == nil {
		t.Fatal("the refused creation opened the database")
	}
}

// TestPublicPLCRefusedFromClient: createAccount from a client on a
// localhost server configured with the public directory is refused too,
// without any request to it.
func TestPublicPLCRefusedFromClient(t *testing.T) {
	s := startServer(t, map[string]string{"PDS_DID_PLC_URL": "https://plc.directory"})
	code, err := s.app.accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	st, out := s.call(t, "POST", "com.atproto.server.createAccount", "", "", map[string]any{
		"handle": "alice.test", "password": "hunter2-hunter2", "inviteCode": code,
	})
	if msg, _ := out["message"].(string); st == 200 || !strings.Contains(msg, "pds dev") {
		t.Fatalf("createAccount with the public PLC on localhost: %d %v", st, out)
	}
	if s.app.accounts.Exists() {
		t.Fatal("the account was created")
	}
	t.Logf("refused: %d %v", st, out)
}
