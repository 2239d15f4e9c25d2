package main

// Firehose and sync benchmarks over the real server (issue 4, acceptance 6):
// HTTP and websockets on 127.0.0.1, the client in the same process. The
// sequencer-level figures are in events/bench_test.go; e2e/firehose-bench
// runs one node client against our server and the reference PDS.
//
//   go test ./cmd/pds -run '^$' -bench LiveDelivery100 -benchtime 300x
//   go test ./cmd/pds -run '^$' -bench 'Replay100kWS|GetRepo100k' -benchtime 3x
//
// Replay100kWS and GetRepo100k share one fixture: a data directory whose
// account made 100,000 single-record commits (100,000 records, 100,004
// events with the account's creation), built once (~2-4 min, writes without
// fsync through the same repository and sequencer hooks as createRecord) and
// cached under $TMPDIR/pds-bench-fixtures; each benchmark serves a fresh
// copy. Delete the directory, or bump syncFixtureVersion, to rebuild it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/repo"
)

const (
	syncFixtureVersion = 1
	syncFixtureRecords = 100_000
	syncBenchSubs      = 100
)

// syncBenchServer is the real server, wired as `pds serve` wires it, over
// dataDir (which may already hold an account), with a mock PLC directory.
type syncBenchServer struct {
	URL, Host string
	app       *app
	stop      func()
}

func startSyncBenchServer(tb testing.TB, dataDir string) *syncBenchServer {
	tb.Helper()
	s := startServerWith(tb, map[string]string{"PDS_DATA_DIRECTORY": dataDir, "PDS_INVITE_REQUIRED": "false"}, nil)
	return &syncBenchServer{URL: s.URL, Host: strings.TrimPrefix(s.URL, "http://"), app: s.app, stop: s.stop}
}

var syncBenchHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 60 * time.Second}

// xrpc does one JSON XRPC call and decodes the JSON answer.
func (s *syncBenchServer) xrpc(tb testing.TB, method, nsid, token string, body any) map[string]any {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+"/xrpc/"+nsid, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := syncBenchHTTP.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != 200 {
		tb.Fatalf("%s: %d %s", nsid, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("%s: %v", nsid, err)
	}
	return out
}

func (s *syncBenchServer) newAccount(tb testing.TB) (did, access string) {
	tb.Helper()
	out := s.xrpc(tb, "POST", "com.atproto.server.createAccount", "", map[string]any{
		"handle": "bench.test", "email": "bench@example.com", "password": "bench-Passw0rd",
	})
	return out["did"].(string), out["accessJwt"].(string)
}

// syncRecordGen makes realistic creates (~70% posts of 60-280 characters,
// ~20% likes, ~10% follows), keyed by TIDs increasing with createdAt.
type syncRecordGen struct {
	rnd *rand.Rand
	t   time.Time
}

func (g *syncRecordGen) str(n int) string {
	const b32 = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, n)
	for i := range b {
		b[i] = b32[g.rnd.IntN(len(b32))]
	}
	return string(b)
}

var syncBenchText = strings.Fields(`the a of to and in is it you that was for on are with as his they be at one
have this from or had by hot word but what some we can out other were all there when up use your how said
which do their time if will way about many then them write would like so these her long make thing see him
atproto bluesky federation relay appview firehose feed post repo`)

func (g *syncRecordGen) text(n int) string {
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(syncBenchText[g.rnd.IntN(len(syncBenchText))])
		sb.WriteByte(' ')
	}
	return sb.String()[:n]
}

func (g *syncRecordGen) next() repo.Write {
	g.t = g.t.Add(time.Duration(1+g.rnd.IntN(120)) * time.Second)
	w := repo.Write{Action: repo.ActionCreate, RKey: syntax.RecordKey(syntax.NewTIDFromTime(g.t, 0).String())}
	created := g.t.Format("2006-01-02T15:04:05.000Z")
	switch k := g.rnd.IntN(10); {
	case k < 7:
		w.Collection = "app.bsky.feed.post"
		w.Record = map[string]any{"$type": "app.bsky.feed.post", "text": g.text(60 + g.rnd.IntN(221)), "langs": []any{"en"}, "createdAt": created}
	case k < 9:
		w.Collection = "app.bsky.feed.like"
		w.Record = map[string]any{"$type": "app.bsky.feed.like", "createdAt": created, "subject": map[string]any{
			"uri": "at://did:plc:" + g.str(24) + "/app.bsky.feed.post/" + syntax.NewTIDFromTime(g.t.Add(-time.Hour), 3).String(),
			"cid": "bafyrei" + g.str(52),
		}}
	default:
		w.Collection = "app.bsky.graph.follow"
		w.Record = map[string]any{"$type": "app.bsky.graph.follow", "subject": "did:plc:" + g.str(24), "createdAt": created}
	}
	return w
}

// syncFixture returns a fresh copy of the cached data directory of an
// account with syncFixtureRecords single-record commits, and its DID.
func syncFixture(b *testing.B) (dir, did string) {
	b.Helper()
	cache := filepath.Join(os.TempDir(), "pds-bench-fixtures", fmt.Sprintf("server-v%d-%d", syncFixtureVersion, syncFixtureRecords))
	if _, err := os.Stat(filepath.Join(cache, "bench-did")); err != nil {
		buildSyncFixture(b, cache)
	}
	raw, err := os.ReadFile(filepath.Join(cache, "bench-did"))
	if err != nil {
		b.Fatal(err)
	}
	dir = filepath.Join(b.TempDir(), "data")
	if err := os.CopyFS(dir, os.DirFS(cache)); err != nil {
		b.Fatal(err)
	}
	return dir, strings.TrimSpace(string(raw))
}

func buildSyncFixture(b *testing.B, cache string) {
	b.Logf("building %s (%d single-record commits; cached for later runs)", cache, syncFixtureRecords)
	start := time.Now()
	tmp := fmt.Sprintf("%s.building-%d", cache, os.Getpid())
	_ = os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		b.Fatal(err)
	}
	s := startSyncBenchServer(b, tmp)
	did, _ := s.newAccount(b)
	rp, err := s.app.accounts.Repo()
	if err != nil {
		b.Fatal(err)
	}
	// The account's writes, minus HTTP, without fsync: each Apply runs the
	// account's BeforeCommit hook, which appends the #commit event.
	s.app.db.NoSync = true
	gen := &syncRecordGen{rnd: rand.New(rand.NewPCG(syncFixtureRecords, 2)), t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	last := time.Now()
	for i := range syncFixtureRecords {
		if _, err := rp.Apply(ctx, []repo.Write{gen.next()}, nil); err != nil {
			b.Fatalf("record %d: %v", i, err)
		}
		if time.Since(last) > 20*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "  server fixture: %d records\n", i+1)
		}
	}
	s.app.db.NoSync = false
	if err := s.app.db.Sync(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events", s.app.events.LastSeq())
	s.stop()
	if err := os.WriteFile(filepath.Join(tmp, "bench-did"), []byte(did+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, cache); err != nil {
		b.Fatal(err)
	}
	b.Logf("built in %s", time.Since(start).Round(time.Second))
}

type syncByteCounter struct{ n int64 }

func (c *syncByteCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// BenchmarkReplay100kWS: a gorilla websocket client subscribes from cursor=0
// to a server holding 100,004 events and reads 100,000 frames (counting
// their bytes, not decoding them; the last one is decoded to check its seq).
// One op is the whole replay; MB/s is frame bytes per second.
func BenchmarkReplay100kWS(b *testing.B) {
	dir, _ := syncFixture(b)
	s := startSyncBenchServer(b, dir)
	const want = syncFixtureRecords
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10}
	replay := func() int64 {
		conn, resp, err := d.Dial("ws://"+s.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		defer conn.Close()
		var c syncByteCounter
		buf := make([]byte, 64<<10) // io.Copy would allocate 32 KiB per frame
		for n := 1; n <= want; n++ {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if n == want {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					b.Fatalf("frame %d: %v", n, err)
				}
				c.n += int64(len(msg))
				if f, err := fhParse(msg); err != nil || f.Seq != want {
					b.Fatalf("frame %d: seq %d, %v", n, f.Seq, err)
				}
				break
			}
			_, r, err := conn.NextReader()
			if err != nil {
				b.Fatalf("frame %d: %v", n, err)
			}
			if _, err := io.CopyBuffer(&c, r, buf); err != nil {
				b.Fatal(err)
			}
		}
		return c.n
	}
	size := replay() // warm-up
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got := replay(); got != size {
			b.Fatalf("replayed %d bytes, then %d", size, got)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(size)/want, "B/event")
}

// BenchmarkGetRepo100k: GET com.atproto.sync.getRepo of the 100k-record
// repository, the body counted and discarded. MB/s is CAR bytes per second.
func BenchmarkGetRepo100k(b *testing.B) {
	dir, did := syncFixture(b)
	s := startSyncBenchServer(b, dir)
	get := func() int64 {
		resp, err := syncBenchHTTP.Get(s.URL + "/xrpc/com.atproto.sync.getRepo?did=" + did)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.ipld.car" {
			b.Fatalf("getRepo: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var c syncByteCounter
		if _, err := io.Copy(&c, resp.Body); err != nil {
			b.Fatal(err)
		}
		return c.n
	}
	size := get() // warm-up
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got := get(); got != size {
			b.Fatalf("getRepo: %d bytes, then %d", size, got)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(size)/(1<<20), "car-MB")
}

// syncBenchSub is one live websocket subscriber: it timestamps and keeps every
// frame; frames are decoded after the timed loop.
type syncBenchSub struct {
	conn     *websocket.Conn
	arrivals []time.Time
	msgs     [][]byte
	done     chan struct{}
	err      error
}

// BenchmarkLiveDelivery100: 100 gorilla websocket subscribers (no cursor)
// on a fresh server; one op is one createRecord over HTTP, then a wait until
// all 100 have its #commit (a closed loop: writes do not queue). Latency of
// a delivery: from just before the HTTP request is sent to the frame's
// arrival at a subscriber, matched by the commit's rev.
//
//	p50-ms, p99-ms, max-ms  over all deliveries (100 per op)
//	last-p50-ms             the 100th subscriber's latency, median over ops
//	http-p50-ms             the createRecord round trip itself
func BenchmarkLiveDelivery100(b *testing.B) {
	s := startSyncBenchServer(b, b.TempDir())
	did, access := s.newAccount(b)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	var round sync.WaitGroup
	subs := make([]*syncBenchSub, syncBenchSubs)
	for i := range subs {
		// Distinct client addresses: one address gets 16 firehose slots.
		xff := http.Header{"X-Forwarded-For": {fmt.Sprintf("192.0.2.%d", i)}}
		conn, resp, err := d.Dial("ws://"+s.Host+"/xrpc/com.atproto.sync.subscribeRepos", xff)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		sub := &syncBenchSub{conn: conn, done: make(chan struct{})}
		subs[i] = sub
		go func() {
			defer close(sub.done)
			for {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					sub.err = err
					return
				}
				sub.arrivals = append(sub.arrivals, time.Now())
				sub.msgs = append(sub.msgs, msg)
				round.Done()
			}
		}()
	}
	gen := &syncRecordGen{rnd: rand.New(rand.NewPCG(1, 1))}
	var (
		sent  = map[string]time.Time{} // rev -> request start
		revs  []string
		httpT []time.Duration
	)
	write := func() {
		rec := map[string]any{"$type": "app.bsky.feed.post", "text": gen.text(60 + gen.rnd.IntN(221)), "langs": []any{"en"}, "createdAt": syntax.DatetimeNow().String()}
		round.Add(syncBenchSubs)
		t0 := time.Now()
		out := s.xrpc(b, "POST", "com.atproto.repo.createRecord", access, map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": rec})
		httpT = append(httpT, time.Since(t0))
		rev := out["commit"].(map[string]any)["rev"].(string)
		sent[rev] = t0
		revs = append(revs, rev)
		syncWaitRound(b, &round)
	}
	// Warm-up; every subscriber is attached once it has received a write.
	const warm = 20
	for range warm {
		write()
	}
	httpT = httpT[:0]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		write()
	}
	b.StopTimer()
	for _, sub := range subs {
		sub.conn.Close()
		<-sub.done
	}
	// Match every frame to its write by rev.
	var all []time.Duration
	last := make([]time.Duration, b.N)
	for si, sub := range subs {
		if len(sub.msgs) != warm+b.N {
			b.Fatalf("subscriber %d: %d frames, want %d", si, len(sub.msgs), warm+b.N)
		}
		for j, msg := range sub.msgs {
			f, err := fhParse(msg)
			if err != nil || f.Commit == nil || f.Commit.Rev != revs[j] {
				b.Fatalf("subscriber %d frame %d: %s %v, want the commit of rev %s", si, j, f.T, err, revs[j])
			}
			if j < warm {
				continue
			}
			lat := sub.arrivals[j].Sub(sent[f.Commit.Rev])
			all = append(all, lat)
			last[j-warm] = max(last[j-warm], lat)
		}
	}
	slices.Sort(all)
	slices.Sort(last)
	slices.Sort(httpT)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(syncPct(all, 0.50)), "p50-ms")
	b.ReportMetric(ms(syncPct(all, 0.99)), "p99-ms")
	b.ReportMetric(ms(all[len(all)-1]), "max-ms")
	b.ReportMetric(ms(syncPct(last, 0.50)), "last-p50-ms")
	b.ReportMetric(ms(syncPct(httpT, 0.50)), "http-p50-ms")
}

// syncWaitRound waits for a round of deliveries, failing after a generous
// deadline (a lost frame, not a latency goal).
func syncWaitRound(b *testing.B, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatal("a subscriber did not receive a commit within 30 s")
	}
}

func syncPct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}
