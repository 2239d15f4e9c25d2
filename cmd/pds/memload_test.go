package main

// Memory under load (issue 15, "Memory on a small VPS"): a real `pds serve`
// process (built by the test), 10 firehose subscribers on real websockets
// reading every frame, and a burst of 10,000 createRecord calls over HTTP
// from a few concurrent clients, while the server's private memory
// (RssAnon in /proc/PID/status: heap, stacks, anonymous mappings; not the
// page cache of the mapped database file) is sampled every few ms.
//
//   go test ./cmd/pds -run '^$' -bench MemoryUnderLoad -benchtime 1x -v
//
// The same load runs under a 128 MB cgroup memory limit in
// TestMemoryLimit128M (memlimit_linux_test.go).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/internal/testpds"
)

// The load of the issue.
const (
	loadWrites      = 10_000
	loadSubscribers = 10
	loadClients     = 4
	loadCollection  = "app.bsky.feed.post"
	loadAdminPass   = "memload-admin-secret"
	loadPassword    = "memload-owner-password"
)

// buildServeBinary builds ./cmd/pds the way the Dockerfile does (static,
// no cgo) into a temporary directory.
func buildServeBinary(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "pds")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serveProcess is `pds serve` running as a child process.
type serveProcess struct {
	cmd    *exec.Cmd
	pid    int
	base   string // http://127.0.0.1:port
	stderr *lockedBuffer
	waited chan error
	exited atomic.Bool
}

var listenAddrRE = regexp.MustCompile(`msg="pds listening" addr=(127\.0\.0\.1:\d+)`)

// startServe starts bin serve on 127.0.0.1:0 with env (on top of a clean
// minimum, not this process's environment, so GOGC/GOMEMLIMIT are only
// what the caller sets). With cgroupProcs set, a shell first moves itself
// into that cgroup (writing its pid to the cgroup.procs file) and then
// execs the server, so every byte the server ever allocates is charged
// there.
func startServe(tb testing.TB, bin string, env []string, cgroupProcs string) *serveProcess {
	tb.Helper()
	args := []string{bin, "serve", "--listen", "127.0.0.1:0"}
	var cmd *exec.Cmd
	if cgroupProcs != "" {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, cgroupProcs}, args...)...)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_LEVEL=info"}, env...)
	s := &serveProcess{cmd: cmd, stderr: &lockedBuffer{}, waited: make(chan error, 1)}
	cmd.Stdout = io.Discard
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		s.exited.Store(true)
		s.waited <- err
		close(s.waited)
	}()
	tb.Cleanup(func() {
		if !s.exited.Load() {
			_ = cmd.Process.Kill()
		}
		<-s.waited
	})
	deadline := time.Now().Add(60 * time.Second)
	for s.base == "" {
		if m := listenAddrRE.FindStringSubmatch(s.stderr.String()); m != nil {
			s.base = "http://" + m[1]
			break
		}
		if s.exited.Load() || time.Now().After(deadline) {
			tb.Fatalf("pds serve did not start:\n%s", s.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *serveProcess) stop(tb testing.TB) {
	tb.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.waited:
		if err != nil {
			tb.Errorf("pds serve exited with %v\n%s", err, s.stderr)
		}
	case <-time.After(30 * time.Second):
		tb.Errorf("pds serve did not stop within 30 s")
	}
}

// loadEnv is the server configuration of the load runs: a mock PLC on
// 127.0.0.1, no crawlers, no outbound connections.
func loadEnv(tb testing.TB, dataDir string) []string {
	plc := testpds.NewMockPLC(tb)
	return []string{
		"PDS_HOSTNAME=localhost",
		"PDS_DATA_DIRECTORY=" + dataDir,
		"PDS_DID_PLC_URL=" + plc.URL,
		"PDS_SERVICE_HANDLE_DOMAINS=.test",
		"PDS_INVITE_REQUIRED=true",
		"PDS_ADMIN_PASSWORD=" + loadAdminPass,
		"PDS_CRAWLERS=",
	}
}

// memSampler polls a process's RssAnon (and, if set, a cgroup's memory
// use) every few ms, keeping the peaks.
type memSampler struct {
	pid    int
	cgroup *memCgroup
	stop   chan struct{}
	done   chan struct{}

	mu         sync.Mutex
	peakAnon   int64
	peakCgroup int64
	samples    int
}

func startSampler(pid int, cg *memCgroup, every time.Duration) *memSampler {
	m := &memSampler{pid: pid, cgroup: cg, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			a := readRssAnon(pid)
			var c int64
			if cg != nil {
				c = cg.current()
			}
			m.mu.Lock()
			m.peakAnon = max(m.peakAnon, a)
			m.peakCgroup = max(m.peakCgroup, c)
			m.samples++
			m.mu.Unlock()
		}
	}()
	return m
}

// finish stops sampling and returns the peaks (bytes) and sample count.
func (m *memSampler) finish() (anon, cgroup int64, samples int) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakAnon, m.peakCgroup, m.samples
}

// loadResult is what one load run measured.
type loadResult struct {
	startAnon                     int64 // RssAnon idle after start, no account yet
	accountAnon                   int64 // right after createAccount (one scrypt hash)
	idleAnon, peakAnon, afterAnon int64 // RssAnon: idle with the account and subscribers, peak in the burst, idle after
	peakCgroup                    int64 // peak cgroup memory in the burst (0 without a cgroup)
	samples                       int
	burst                         time.Duration
	p50, p99, max                 time.Duration // createRecord latency
	did                           string
	acked                         []string // rkeys the server acknowledged
	frameBytes                    int64    // firehose bytes all subscribers received
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// xrpcJSON posts body to nsid and decodes the JSON answer into out.
func loadCall(c *http.Client, base, nsid, authz string, body, out any) (int, error) {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, base+"/xrpc/"+nsid, bytes.NewReader(raw))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s: %d %s", nsid, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// firehoseReader is one subscriber: it reads every frame from cursor 0
// and counts the #commit events that created records of loadCollection.
type firehoseReader struct {
	conn    *websocket.Conn
	creates atomic.Int64
	bytes   atomic.Int64
	err     atomic.Value
	done    chan struct{}
}

func dialFirehose(tb testing.TB, base string) *firehoseReader {
	tb.Helper()
	u, _ := url.Parse(base)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		tb.Fatalf("subscribeRepos: %v", err)
	}
	f := &firehoseReader{conn: conn, done: make(chan struct{})}
	tb.Cleanup(func() { conn.Close(); <-f.done })
	go func() {
		defer close(f.done)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				f.err.Store(err)
				return
			}
			f.bytes.Add(int64(len(msg)))
			h, body, err := testpds.SplitFrame(msg)
			if err != nil {
				f.err.Store(err)
				return
			}
			if h.Op != 1 {
				f.err.Store(fmt.Errorf("error frame %q", h.T))
				return
			}
			if h.T != "#commit" {
				continue
			}
			var ev comatproto.SyncSubscribeRepos_Commit
			if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
				f.err.Store(err)
				return
			}
			for _, op := range ev.Ops {
				if op.Action == "create" && strings.HasPrefix(op.Path, loadCollection+"/") {
					f.creates.Add(1)
				}
			}
		}
	}()
	return f
}

// runLoad creates the account, opens the subscribers, waits idle, makes
// the burst, waits for every subscriber to have every event, and waits
// idle again, sampling memory throughout.
func runLoad(tb testing.TB, s *serveProcess, cg *memCgroup, writes int, idleWait time.Duration) loadResult {
	tb.Helper()
	var res loadResult
	time.Sleep(idleWait)
	res.startAnon = readRssAnon(s.pid)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadClients}}
	var acct struct{ DID, AccessJwt string }
	admin := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+loadAdminPass))
	if _, err := loadCall(c, s.base, "com.atproto.server.createAccount", admin,
		map[string]any{"handle": "load.test", "password": loadPassword, "email": "load@example.com"}, &acct); err != nil {
		tb.Fatal(err)
	}
	res.accountAnon = readRssAnon(s.pid)
	subs := make([]*firehoseReader, loadSubscribers)
	for i := range subs {
		subs[i] = dialFirehose(tb, s.base)
	}
	time.Sleep(idleWait)
	res.idleAnon = readRssAnon(s.pid)

	sampler := startSampler(s.pid, cg, 5*time.Millisecond)
	bearer := "Bearer " + acct.AccessJwt
	var (
		mu    sync.Mutex
		lats  []time.Duration
		acked []string
		next  atomic.Int64
		fail  atomic.Value
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range loadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(writes) || fail.Load() != nil {
					return
				}
				var out struct{ URI string }
				t0 := time.Now()
				_, err := loadCall(c, s.base, "com.atproto.repo.createRecord", bearer, map[string]any{
					"repo": acct.DID, "collection": loadCollection,
					"record": map[string]any{"$type": loadCollection, "text": fmt.Sprintf("post %d of the memory load: %s", i, strings.Repeat("lorem ipsum ", 6)),
						"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z")},
				}, &out)
				d := time.Since(t0)
				if err != nil {
					fail.Store(err)
					return
				}
				mu.Lock()
				lats = append(lats, d)
				acked = append(acked, out.URI[strings.LastIndexByte(out.URI, '/')+1:])
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.burst = time.Since(start)
	if err := fail.Load(); err != nil {
		_, _, _ = sampler.finish()
		tb.Fatalf("write %d: %v\nserver:\n%s", len(acked)+1, err, tail(s.stderr.String(), 2000))
	}
	// Every subscriber gets every create.
	deadline := time.Now().Add(60 * time.Second)
	for _, f := range subs {
		for f.creates.Load() < int64(writes) {
			if e := f.err.Load(); e != nil {
				tb.Fatalf("subscriber: %v after %d creates", e, f.creates.Load())
			}
			if time.Now().After(deadline) {
				tb.Fatalf("subscriber got %d of %d creates", f.creates.Load(), writes)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	res.peakAnon, res.peakCgroup, res.samples = sampler.finish()
	for _, f := range subs {
		if n := f.creates.Load(); n != int64(writes) {
			tb.Errorf("a subscriber got %d creates, want %d", n, writes)
		}
		res.frameBytes += f.bytes.Load()
	}
	slices.Sort(lats)
	res.p50, res.p99, res.max = lats[len(lats)/2], lats[len(lats)*99/100], lats[len(lats)-1]
	res.acked, res.did = acked, acct.DID
	time.Sleep(idleWait)
	res.afterAnon = readRssAnon(s.pid)
	return res
}

// listRKeys pages through listRecords of loadCollection.
func listRKeys(tb testing.TB, base, did string) []string {
	tb.Helper()
	var keys []string
	cursor := ""
	for {
		u := base + "/xrpc/com.atproto.repo.listRecords?limit=100&repo=" + url.QueryEscape(did) + "&collection=" + loadCollection
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		resp, err := http.Get(u)
		if err != nil {
			tb.Fatal(err)
		}
		var out struct {
			Records []struct{ URI string }
			Cursor  string
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			tb.Fatalf("listRecords: %d %v", resp.StatusCode, err)
		}
		for _, r := range out.Records {
			keys = append(keys, r.URI[strings.LastIndexByte(r.URI, '/')+1:])
		}
		if out.Cursor == "" || len(out.Records) == 0 {
			return keys
		}
		cursor = out.Cursor
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// BenchmarkMemoryUnderLoad reports the server's RssAnon idle after start,
// at its peak during 10k writes with 10 subscribers, and idle after, with
// the binary's own defaults (no GOGC/GOMEMLIMIT in the environment).
// Goals (issue 15): idle < 40 MiB, peak < 64 MiB.
func BenchmarkMemoryUnderLoad(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc (Linux)")
	}
	bin := buildServeBinary(b)
	extra := strings.Fields(os.Getenv("PDS_BENCH_SERVER_ENV")) // e.g. GOGC=50, to compare
	for i := 0; i < b.N; i++ {
		s := startServe(b, bin, append(loadEnv(b, b.TempDir()), extra...), "")
		idle := 5 * time.Second
		if v, err := time.ParseDuration(os.Getenv("PDS_BENCH_IDLE")); err == nil {
			idle = v
		}
		r := runLoad(b, s, nil, loadWrites, idle)
		s.stop(b)
		if f := os.Getenv("PDS_BENCH_SERVER_LOG"); f != "" {
			_ = os.WriteFile(f, []byte(s.stderr.String()), 0o600)
		}
		b.Logf("RssAnon at start %.1f MiB, after createAccount %.1f MiB", mib(r.startAnon), mib(r.accountAnon))
		b.Logf("RssAnon idle %.1f MiB, peak %.1f MiB (%d samples), after %.1f MiB; %d writes in %v (p50 %v, p99 %v, max %v); %.1f MB to %d subscribers",
			mib(r.idleAnon), mib(r.peakAnon), r.samples, mib(r.afterAnon), len(r.acked), r.burst.Round(time.Millisecond),
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.max.Round(time.Millisecond), float64(r.frameBytes)/1e6, loadSubscribers)
		b.ReportMetric(mib(r.idleAnon), "idle-RssAnon-MiB")
		b.ReportMetric(mib(r.peakAnon), "peak-RssAnon-MiB")
		b.ReportMetric(mib(r.afterAnon), "after-RssAnon-MiB")
		b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
	}
}
