package events

// Firehose benchmarks at the sequencer level (issue 4, acceptance 6); the
// same figures over HTTP and websockets are in cmd/pds/sync_bench_test.go,
// and e2e/firehose-bench compares them with the reference PDS.
//
//   go test ./events -run '^$' -bench . -benchtime 3x     (replay)
//   go test ./events -run '^$' -bench LiveFanout -benchtime 2000x
//
// The replay fixture (100,000 real #commit events: one signed commit per
// created record, on a repository growing to 100k records) is built once and
// cached under $TMPDIR/pds-bench-fixtures (~1-2 min); each run works on a
// fresh copy. Delete the file, or bump benchFixtureVersion, to rebuild it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

const (
	benchFixtureVersion = 1
	benchReplayEvents   = 100_000
	benchSubscribers    = 100
)

var benchQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchRecords makes a deterministic stream of realistic creates: ~70%
// posts (60-280 characters of text), ~20% likes, ~10% follows, keyed by TIDs
// increasing with createdAt, as a client writing over time makes them.
type benchRecords struct {
	rnd *rand.Rand
	t   time.Time
}

func newBenchRecords(seed uint64) *benchRecords {
	return &benchRecords{rnd: rand.New(rand.NewPCG(seed, 1)), t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

var benchWords = strings.Fields(`the a of to and in is it you that was for on are with as his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how said each she
which do their time if will way about many then them write would like so these her long make thing see him two
atproto bluesky federation relay appview firehose feed post repo`)

func (g *benchRecords) str(alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.rnd.IntN(len(alphabet))]
	}
	return string(b)
}

func (g *benchRecords) next() repo.Write {
	g.t = g.t.Add(time.Duration(1+g.rnd.IntN(120)) * time.Second)
	rkey := syntax.RecordKey(syntax.NewTIDFromTime(g.t, 0).String())
	created := g.t.Format("2006-01-02T15:04:05.000Z")
	const b32 = "abcdefghijklmnopqrstuvwxyz234567"
	w := repo.Write{Action: repo.ActionCreate, RKey: rkey}
	switch k := g.rnd.IntN(10); {
	case k < 7:
		var sb strings.Builder
		n := 60 + g.rnd.IntN(221)
		for sb.Len() < n {
			sb.WriteString(benchWords[g.rnd.IntN(len(benchWords))])
			sb.WriteByte(' ')
		}
		w.Collection = "app.bsky.feed.post"
		w.Record = map[string]any{"$type": "app.bsky.feed.post", "text": sb.String()[:n], "langs": []any{"en"}, "createdAt": created}
	case k < 9:
		w.Collection = "app.bsky.feed.like"
		w.Record = map[string]any{"$type": "app.bsky.feed.like", "createdAt": created, "subject": map[string]any{
			"uri": "at://did:plc:" + g.str(b32, 24) + "/app.bsky.feed.post/" + syntax.NewTIDFromTime(g.t.Add(-time.Hour), 3).String(),
			"cid": "bafyrei" + g.str(b32, 52),
		}}
	default:
		w.Collection = "app.bsky.graph.follow"
		w.Record = map[string]any{"$type": "app.bsky.graph.follow", "subject": "did:plc:" + g.str(b32, 24), "createdAt": created}
	}
	return w
}

// replayFixture returns the path of a cached bbolt file holding a repository
// and its benchReplayEvents #commit events: the empty first commit, then one
// commit per created record, each appended by the sequencer inside the
// commit's transaction exactly as the server does.
func replayFixture(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "pds-bench-fixtures")
	path := filepath.Join(dir, fmt.Sprintf("events-v%d-%d.db", benchFixtureVersion, benchReplayEvents))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	b.Logf("building %s (%d commit events; cached for later runs)", path, benchReplayEvents)
	start := time.Now()
	tmp := fmt.Sprintf("%s.building-%d", path, os.Getpid())
	defer os.Remove(tmp)
	if err := buildReplayFixture(tmp, benchReplayEvents); err != nil {
		b.Fatalf("building fixture: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	b.Logf("built in %s, %d MB", time.Since(start).Round(time.Second), st.Size()>>20)
	return path
}

func buildReplayFixture(path string, n int) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, InitialMmapSize: 1 << 30, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer db.Close()
	seq, err := New(db, Config{Log: benchQuiet})
	if err != nil {
		return err
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return err
	}
	r, err := repo.Open(db, testDID, key, repo.Options{BeforeCommit: func(tx *bolt.Tx, c *repo.Commit) error {
		_, err := seq.AppendCommit(tx, c)
		return err
	}})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := r.Init(ctx); err != nil {
		return err
	}
	gen := newBenchRecords(uint64(n))
	last := time.Now()
	for seq.LastSeq() < int64(n) {
		if _, err := r.Apply(ctx, []repo.Write{gen.next()}, nil); err != nil {
			return fmt.Errorf("after %d events: %w", seq.LastSeq(), err)
		}
		if time.Since(last) > 20*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "  events fixture: %d events\n", seq.LastSeq())
		}
	}
	db.NoSync = false
	if err := db.Sync(); err != nil {
		return err
	}
	return db.Close()
}

func benchCopyFile(b *testing.B, src, dst string) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}

var errBenchDone = errors.New("done")

// BenchmarkReplay100k: Subscribe from cursor 0 over 100,000 stored #commit
// events, to a send that only counts; one op is the whole replay. MB/s is
// frame bytes per second (b.SetBytes), events/s is reported beside it.
func BenchmarkReplay100k(b *testing.B) {
	src := replayFixture(b)
	dst := filepath.Join(b.TempDir(), "events.db")
	benchCopyFile(b, src, dst)
	db, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := New(db, Config{Log: benchQuiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if s.LastSeq() < benchReplayEvents {
		b.Fatalf("fixture holds %d events", s.LastSeq())
	}
	replay := func() (n int, size int64, last []byte) {
		zero := int64(0)
		err := s.Subscribe(context.Background(), &zero, func(i Info) error { return fmt.Errorf("info %+v", i) }, func(f []byte) error {
			n++
			size += int64(len(f))
			if n == benchReplayEvents {
				last = f
				return errBenchDone
			}
			return nil
		})
		if !errors.Is(err, errBenchDone) {
			b.Fatalf("replay ended after %d events: %v", n, err)
		}
		return n, size, last
	}
	_, size, last := replay() // warm the page cache; check the end
	if seq, err := frameSeq(last); err != nil || seq != benchReplayEvents {
		b.Fatalf("last replayed frame: seq %d, %v", seq, err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, got, _ := replay(); got != size {
			b.Fatalf("replayed %d bytes, then %d", size, got)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(benchReplayEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(size)/benchReplayEvents, "B/event")
}

// benchCommit is one real #commit of a single-record create on the replay
// fixture's 100k-record repository (a realistic frame), to append again and
// again.
func benchCommit(b *testing.B) *repo.Commit {
	b.Helper()
	dst := filepath.Join(b.TempDir(), "commit.db")
	benchCopyFile(b, replayFixture(b), dst)
	db, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		b.Fatal(err)
	}
	r, err := repo.Open(db, testDID, key, repo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	w := newBenchRecords(99).next()
	w.RKey = syntax.RecordKey(syntax.NewTIDNow(0).String())
	w.Collection = "app.bsky.feed.post"
	w.Record = map[string]any{"$type": "app.bsky.feed.post", "text": strings.Repeat("benchmark post text ", 8), "langs": []any{"en"}, "createdAt": syntax.DatetimeNow().String()}
	c, err := r.Apply(context.Background(), []repo.Write{w}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkLiveFanout100: one #commit appended in its own db.Update per op
// (fsync included, as a real write), delivered to 100 in-process Subscribe
// callbacks; each op waits for all 100 deliveries before the next write.
// Reported per delivery (100 per op):
//
//	fanout-p50/p99-us: from the commit being durable (a commit callback
//	  registered before the event's own) to the send callback;
//	write-p50/p99-ms: from just before db.Update (fsync included).
//
// ns/op is a whole round: write, fsync, and delivery to the 100th consumer.
func BenchmarkLiveFanout100(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		b.Run(fmt.Sprintf("nosync=%v", nosync), func(b *testing.B) { benchLiveFanout(b, nosync) })
	}
}

func benchLiveFanout(b *testing.B, nosync bool) {
	c := benchCommit(b)
	db, err := bolt.Open(filepath.Join(b.TempDir(), "events.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: nosync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := New(db, Config{Log: benchQuiet})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		started, committed atomic.Int64 // unix ns of the current write
		round              sync.WaitGroup
		subsDone           sync.WaitGroup
	)
	fanout := make([][]time.Duration, benchSubscribers)
	write := make([][]time.Duration, benchSubscribers)
	for i := range benchSubscribers {
		subsDone.Add(1)
		go func() {
			defer subsDone.Done()
			err := s.Subscribe(ctx, nil, func(Info) error { return nil }, func(f []byte) error {
				now := time.Now().UnixNano()
				fanout[i] = append(fanout[i], time.Duration(now-committed.Load()))
				write[i] = append(write[i], time.Duration(now-started.Load()))
				round.Done()
				return nil
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				b.Error(err)
			}
		}()
	}
	for {
		s.mu.Lock()
		n := len(s.subs)
		s.mu.Unlock()
		if n == benchSubscribers {
			break
		}
		time.Sleep(time.Millisecond)
	}
	appendOne := func() {
		round.Add(benchSubscribers)
		started.Store(time.Now().UnixNano())
		err := db.Update(func(tx *bolt.Tx) error {
			// Runs first among the commit callbacks, after the fsync.
			tx.OnCommit(func() { committed.Store(time.Now().UnixNano()) })
			_, err := s.AppendCommit(tx, c)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		round.Wait()
	}
	for range 20 { // warm-up
		appendOne()
	}
	for i := range fanout {
		fanout[i], write[i] = fanout[i][:0], write[i][:0]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		appendOne()
	}
	b.StopTimer()
	cancel()
	subsDone.Wait()
	s.Close()
	all := func(per [][]time.Duration) []time.Duration {
		out := slices.Concat(per...)
		slices.Sort(out)
		return out
	}
	f, w := all(fanout), all(write)
	if len(f) != b.N*benchSubscribers {
		b.Fatalf("%d deliveries, want %d", len(f), b.N*benchSubscribers)
	}
	b.ReportMetric(float64(pct(f, 0.50).Nanoseconds())/1e3, "fanout-p50-us")
	b.ReportMetric(float64(pct(f, 0.99).Nanoseconds())/1e3, "fanout-p99-us")
	b.ReportMetric(float64(pct(w, 0.50).Nanoseconds())/1e6, "write-p50-ms")
	b.ReportMetric(float64(pct(w, 0.99).Nanoseconds())/1e6, "write-p99-ms")
	b.ReportMetric(float64(len(c.CAR)), "car-B")
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}
