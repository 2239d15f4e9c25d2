package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/internal/testpds"
)

// durHelperEnv makes the test binary run the server (TestServerHelperProcess).
const durHelperEnv = "PDS_TEST_SERVER_HELPER"

// TestServerHelperProcess is not a test on its own: TestDurabilityKill9
// re-executes the test binary to run the real server in a process it can
// kill -9. It reads the configuration from the environment, serves on
// 127.0.0.1:0 and prints "LISTEN <addr>"; it exits when its stdin closes,
// so it never outlives the parent.
func TestServerHelperProcess(t *testing.T) {
	if os.Getenv(durHelperEnv) != "1" {
		t.Skip("helper process of TestDurabilityKill9")
	}
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		os.Exit(2)
	}
	cfg, err := loadConfig(os.Getenv, "", "")
	if err != nil {
		fail(err)
	}
	a, err := openApp(context.Background(), cfg, newLogger(os.Stderr, cfg.LogLevel), 10*time.Second)
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second}
	fail(srv.Serve(ln))
}

// durHelper is a running server process.
type durHelper struct {
	cmd    *exec.Cmd
	host   string
	stdin  io.Closer
	stderr *durBuffer
	waited chan error
}

type durBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *durBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *durBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDurHelper(t *testing.T, dataDir, plcURL string) *durHelper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		durHelperEnv+"=1",
		"PDS_HOSTNAME=localhost",
		"PDS_PORT=2583",
		"PDS_DATA_DIRECTORY="+dataDir,
		"PDS_DID_PLC_URL="+plcURL,
		"PDS_SERVICE_HANDLE_DOMAINS=.test",
		"PDS_INVITE_REQUIRED=false",
		"PDS_ADMIN_PASSWORD=admin-secret",
		"PDS_CRAWLERS=",
		"LOG_LEVEL=error",
	)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &durHelper{cmd: cmd, stdin: stdin, stderr: &durBuffer{}, waited: make(chan error, 1)}
	cmd.Stderr = h.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.waited <- cmd.Wait() }()
	t.Cleanup(func() { h.kill(t) })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case h.host = <-addr:
	case err := <-h.waited:
		h.waited <- err
		t.Fatalf("helper exited: %v\n%s", err, h.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("helper did not start\n%s", h.stderr)
	}
	return h
}

// kill sends SIGKILL and waits for the process to be gone.
func (h *durHelper) kill(t *testing.T) {
	_ = h.cmd.Process.Kill() // an error only says it is already gone
	select {
	case err := <-h.waited:
		h.waited <- err
	case <-time.After(30 * time.Second):
		t.Errorf("helper %d did not die", h.cmd.Process.Pid)
	}
	h.stdin.Close()
}

// durPost is a non-fatal XRPC POST for writer goroutines.
func durPost(client *http.Client, host, nsid, token string, body any) (map[string]any, error) {
	j, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest("POST", "http://"+host+"/xrpc/"+nsid, bytes.NewReader(j))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: %d %q", nsid, resp.StatusCode, raw)
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %d %v", nsid, resp.StatusCode, out)
	}
	return out, nil
}

// durAck is an acknowledged write.
type durAck struct {
	writer   int
	cid, rev string
}

// TestDurabilityKill9 kills the server with SIGKILL in the middle of writes
// with firehose consumers attached, restarts it on the same data, and
// checks that the restarted server replays from cursor 0 every event that
// was sent live, byte for byte at the same seq, every acknowledged commit's
// #commit in order, and a stream that passes the firehose oracle. Three
// rounds, each on the state the previous one left.
func TestDurabilityKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	plc := testpds.NewMockPLC(t)
	dataDir := t.TempDir()
	h := startDurHelper(t, dataDir, plc.URL)
	hs := &testServer{URL: "http://" + h.host}
	st, out := hs.call(t, "POST", "com.atproto.server.createAccount", "", "", map[string]any{
		"handle": "alice.test", "email": "alice@example.com", "password": "hunter2-hunter2",
	})
	wantStatus(t, "createAccount", st, out, 200, "")
	did, access := out["did"].(string), out["accessJwt"].(string)
	keyHex, err := os.ReadFile(filepath.Join(dataDir, account.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(keyHex)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := atcrypto.ParsePrivateBytesK256(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	var acked []durAck // over all rounds
	headSeq := int64(0)
	const rounds, writers = 3, 2
	for round := range rounds {
		killAfter := 40 + 25*round
		// Consumers: from the start, from the last verified head, live.
		subs := []*fhReader{
			fhSubscribe(t, h.host, "0"),
			fhSubscribe(t, h.host, fmt.Sprint(headSeq)),
			fhSubscribe(t, h.host, ""),
		}
		var (
			mu      sync.Mutex
			nAcked  atomic.Int64
			wg      sync.WaitGroup
			stopped = make(chan struct{})
		)
		client := &http.Client{Timeout: 20 * time.Second}
		for wi := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stopped:
						return
					default:
					}
					var out map[string]any
					var err error
					if i%5 == 4 {
						var ws []map[string]any
						for j := range 1 + i%7 {
							ws = append(ws, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.fh.item",
								"rkey": fmt.Sprintf("r%dw%di%dj%d", round, wi, i, j), "value": map[string]any{"$type": "com.example.fh.item", "i": i}})
						}
						out, err = durPost(client, h.host, "com.atproto.repo.applyWrites", access, map[string]any{"repo": did, "writes": ws})
					} else {
						out, err = durPost(client, h.host, "com.atproto.repo.createRecord", access, map[string]any{"repo": did, "collection": "app.bsky.feed.post",
							"rkey": testTID(round*1_000_000 + wi*10_000 + i), "record": post(fmt.Sprintf("round %d writer %d #%d", round, wi, i))})
					}
					if err != nil {
						return // the server is gone (or the test fails below for want of acks)
					}
					cm := out["commit"].(map[string]any)
					mu.Lock()
					acked = append(acked, durAck{writer: wi, cid: cm["cid"].(string), rev: cm["rev"].(string)})
					mu.Unlock()
					nAcked.Add(1)
				}
			}()
		}
		deadline := time.Now().Add(60 * time.Second)
		for nAcked.Load() < int64(killAfter) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: only %d acks\n%s", round, nAcked.Load(), h.stderr)
			}
			time.Sleep(time.Millisecond)
		}
		h.kill(t) // SIGKILL, writes in flight
		close(stopped)
		wg.Wait()
		for _, s := range subs {
			s.close()
		}

		// Restart on the same data and replay everything.
		h = startDurHelper(t, dataDir, plc.URL)
		hs = &testServer{URL: "http://" + h.host}
		st, head := hs.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
		wantStatus(t, "getLatestCommit", st, head, 200, "")
		replay := fhSubscribe(t, h.host, "0")
		frames := replay.waitUntil(t, "the head commit", fhHasRev(head["rev"].(string)))
		replay.close()

		c := newFHChecker(did, "alice.test", pub)
		bySeq := map[int64][]byte{}
		for _, f := range frames {
			if err := c.check(f); err != nil {
				t.Fatalf("round %d: replay after restart: %v", round, err)
			}
			bySeq[f.Seq] = f.Raw
		}
		if c.commits[len(c.commits)-1].CID != head["cid"] {
			t.Fatalf("round %d: last #commit %+v, head %v", round, c.commits[len(c.commits)-1], head)
		}
		// What was sent live is what is served now.
		for i, s := range subs {
			live, _ := s.frames()
			for _, f := range live {
				if !bytes.Equal(bySeq[f.Seq], f.Raw) {
					t.Fatalf("round %d consumer %d: frame %d sent live differs after the restart", round, i, f.Seq)
				}
			}
			if i == 0 && len(live) == 0 {
				t.Fatalf("round %d: the consumer from cursor 0 got nothing before the kill", round)
			}
		}
		// Every acknowledged commit has its event, in each writer's order.
		seqOf := map[string]fhCommit{}
		for _, cm := range c.commits {
			seqOf[cm.CID] = cm
		}
		lastSeq := map[int]int64{}
		for _, a := range acked {
			cm, ok := seqOf[a.cid]
			if !ok || cm.Rev != a.rev {
				t.Fatalf("round %d: acked commit %s (rev %s) has no #commit after the restart", round, a.cid, a.rev)
			}
			if cm.Seq <= lastSeq[a.writer] {
				t.Fatalf("round %d: writer %d's commits out of order", round, a.writer)
			}
			lastSeq[a.writer] = cm.Seq
		}
		t.Logf("round %d: killed after %d acks; %d events replayed, %d acked commits in all", round, nAcked.Load(), c.lastSeq, len(acked))
		headSeq = c.lastSeq
	}
}
