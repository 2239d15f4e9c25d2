package repo

// Benchmarks for the write path and export (issue acceptance point 5). See
// BENCHMARKS.md for how to run them and the figures on the reference machine.
//
// Fixtures (repositories of 1k, 100k and 1M records) are built once and cached
// under $TMPDIR/pds-bench-fixtures; each benchmark works on a fresh copy.
// Delete that directory to rebuild them (and bump fixtureVersion when the
// storage layout or the generated records change).

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// fixtureVersion names the cached fixtures; bump it to force a rebuild.
const fixtureVersion = 3

// benchSizes are the repository sizes of the benchmarks.
var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

func fixtureDir() string { return filepath.Join(os.TempDir(), "pds-bench-fixtures") }

// fixtureStart is the createdAt / rkey time of the first generated record.
var fixtureStart = time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)

// recordGen makes a deterministic stream of realistic records: ~70% posts
// (text of 60-280 characters, ~150-350 bytes of CBOR), ~20% likes and ~10%
// follows, each keyed by a TID that increases with its createdAt, as records
// written by a client over time are.
type recordGen struct {
	rnd *rand.Rand
	t   time.Time
	n   int
}

func newRecordGen(seed uint64) *recordGen {
	return &recordGen{rnd: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), t: fixtureStart}
}

var words = strings.Fields(`the a of to and in is it you that he was for on are with as I his they be at one
have this from or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long make thing see
him two has look more day could go come did number sound no most people my over know water than call first who
may down side been now find any new work part take get place made live where after back little only round man
year came show every good me give our under name very through just form sentence great think say help low line
atproto bluesky federation relay appview firehose feed post skeet repo`)

func (g *recordGen) text(min, max int) string {
	n := min + g.rnd.IntN(max-min+1)
	var sb strings.Builder
	for sb.Len() < n {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(words[g.rnd.IntN(len(words))])
	}
	return sb.String()[:n]
}

func (g *recordGen) did() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 24)
	for i := range b {
		b[i] = alphabet[g.rnd.IntN(len(alphabet))]
	}
	return "did:plc:" + string(b)
}

// fakeCID is a syntactically valid CID string (a strongRef's cid is a string).
func (g *recordGen) fakeCID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 52)
	for i := range b {
		b[i] = alphabet[g.rnd.IntN(len(alphabet))]
	}
	return "bafyrei" + string(b)
}

// next returns the next create.
func (g *recordGen) next() Write {
	g.n++
	g.t = g.t.Add(time.Duration(1+g.rnd.IntN(120)) * time.Second)
	rkey := syntax.NewTIDFromTime(g.t, 0).String()
	created := g.t.Format("2006-01-02T15:04:05.000Z")
	switch k := g.rnd.IntN(10); {
	case k < 7:
		rec := map[string]any{
			"$type":     "app.bsky.feed.post",
			"text":      g.text(60, 280),
			"langs":     []any{"en"},
			"createdAt": created,
		}
		return create("app.bsky.feed.post", rkey, rec)
	case k < 9:
		rec := map[string]any{
			"$type": "app.bsky.feed.like",
			"subject": map[string]any{
				"uri": "at://" + g.did() + "/app.bsky.feed.post/" + syntax.NewTIDFromTime(g.t.Add(-time.Hour), 3).String(),
				"cid": g.fakeCID(),
			},
			"createdAt": created,
		}
		return create("app.bsky.feed.like", rkey, rec)
	default:
		rec := map[string]any{"$type": "app.bsky.graph.follow", "subject": g.did(), "createdAt": created}
		return create("app.bsky.graph.follow", rkey, rec)
	}
}

var fixtureMu sync.Mutex

// bucketBenchKey holds, in a fixture file, the repo signing key (one file per
// fixture: a concurrent build cannot pair a database with another's key).
var bucketBenchKey = []byte("bench_fixture")

// fixture returns the path of the cached n-record repository, building it
// first if needed.
func fixture(b *testing.B, n int) string {
	b.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	dir := fixtureDir()
	path := filepath.Join(dir, fmt.Sprintf("repo-v%d-%d.db", fixtureVersion, n))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.Logf("building fixture of %d records in %s (cached for later runs)", n, path)
	if err := buildFixture(path, n); err != nil {
		b.Fatalf("building fixture: %v", err)
	}
	st, _ := os.Stat(path)
	b.Logf("built fixture of %d records in %s (%d MB)", n, time.Since(start).Round(time.Second), st.Size()>>20)
	return path
}

// buildFixture writes an n-record repository with Apply, in batches of
// MaxWrites, without fsync until the end; the file is renamed into place only
// when complete.
func buildFixture(path string, n int) error {
	tmp := fmt.Sprintf("%s.building-%d", path, os.Getpid())
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, InitialMmapSize: 1 << 30})
	if err != nil {
		return err
	}
	defer db.Close()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		kb, err := tx.CreateBucketIfNotExists(bucketBenchKey)
		if err != nil {
			return err
		}
		return kb.Put([]byte("key"), key.Bytes())
	})
	if err != nil {
		return err
	}
	r, err := Open(db, testDID, key, Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := r.Init(ctx); err != nil {
		return err
	}
	gen := newRecordGen(uint64(n))
	batch := make([]Write, 0, MaxWrites)
	last := time.Now()
	for done := 0; done < n; {
		batch = batch[:0]
		for len(batch) < MaxWrites && done+len(batch) < n {
			batch = append(batch, gen.next())
		}
		if _, err := r.Apply(ctx, batch, nil); err != nil {
			return fmt.Errorf("after %d records: %w", done, err)
		}
		done += len(batch)
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "  fixture %d: %d records written\n", n, done)
		}
	}
	db.NoSync = false
	if err := db.Sync(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// benchRepo is a fresh copy of a fixture, opened with default bbolt options.
type benchRepo struct {
	*Repo
	db *bolt.DB
}

func openFixture(b *testing.B, n int, opts *bolt.Options) *benchRepo {
	b.Helper()
	src := fixture(b, n)
	dst := filepath.Join(b.TempDir(), "pds.db")
	if err := copyFile(src, dst); err != nil {
		b.Fatal(err)
	}
	if opts == nil {
		opts = &bolt.Options{Timeout: time.Second}
	}
	db, err := bolt.Open(dst, 0o600, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	var keyBytes []byte
	_ = db.View(func(tx *bolt.Tx) error {
		if kb := tx.Bucket(bucketBenchKey); kb != nil {
			keyBytes = slices.Clone(kb.Get([]byte("key")))
		}
		return nil
	})
	key, err := atcrypto.ParsePrivateBytesK256(keyBytes)
	if err != nil {
		b.Fatalf("fixture %s: signing key: %v", src, err)
	}
	r, err := Open(db, testDID, key, Options{})
	if err != nil {
		b.Fatal(err)
	}
	// Cheap validity check: a head, and the record count in the index.
	if _, _, err := r.Head(); err != nil {
		b.Fatalf("fixture %s: %v", src, err)
	}
	var count int
	_ = db.View(func(tx *bolt.Tx) error {
		count = tx.Bucket(bucketRecords).Stats().KeyN
		return nil
	})
	if count != n {
		b.Fatalf("fixture %s holds %d records, want %d", src, count, n)
	}
	return &benchRepo{Repo: r, db: db}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	// Flush the copy now, or the first fsync of the benchmark would write
	// the whole file back.
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// liveTID returns TIDs of now, strictly increasing even when called faster
// than the clock ticks, as keys of new records.
type liveTID struct{ last int64 }

func (c *liveTID) next() string {
	now := time.Now().UnixMicro()
	if now <= c.last {
		now = c.last + 1
	}
	c.last = now
	return syntax.NewTID(now, 1).String()
}

// newPost is one live createRecord: a post keyed by a TID of now.
func newPost(g *recordGen, clock *liveTID) Write {
	return create("app.bsky.feed.post", clock.next(), map[string]any{
		"$type":     "app.bsky.feed.post",
		"text":      g.text(60, 280),
		"langs":     []any{"en"},
		"createdAt": syntax.DatetimeNow().String(),
	})
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

const mb = 1 << 20

// BenchmarkCommitOneRecord applies one createRecord per iteration, fsync
// included, to repositories of 1k, 100k and 1M records. Besides ns/op it
// reports the p50/p99 latency of Apply, the Go heap in use (HeapInuse:
// heap-base-MB after a GC before the first write, heap-max-MB the most seen,
// sampled every 100 writes, garbage not yet collected included), the live
// heap (HeapAlloc) after a GC after the last write (live-end-MB), the blocks in each commit's CAR, and
// bbolt's pages written and write+fsync time per commit.
func BenchmarkCommitOneRecord(b *testing.B) {
	benchCommitOneRecord(b, nil)
}

// BenchmarkCommitOneRecordFreelistMap is BenchmarkCommitOneRecord with the
// bbolt options often suggested for large files: the hashmap freelist, not
// written to disk on each commit (rebuilt by a scan on open instead).
func BenchmarkCommitOneRecordFreelistMap(b *testing.B) {
	benchCommitOneRecord(b, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
}

func benchCommitOneRecord(b *testing.B, opts *bolt.Options) {
	for _, size := range benchSizes {
		b.Run("records="+size.name, func(b *testing.B) {
			r := openFixture(b, size.n, opts)
			ctx := context.Background()
			gen := newRecordGen(42)
			// Writes are prepared outside the timed loop, 100 at a time (so
			// that they do not pile up in the heap we measure): the record
			// maps stand for what the API layer parses.
			var clock liveTID
			writes := make([]Write, 100)
			refill := func() {
				for i := range writes {
					writes[i] = newPost(gen, &clock)
				}
			}
			refill()
			lat := make([]time.Duration, 0, b.N)
			st0 := r.db.Stats()
			runtime.GC()
			base := heapInuse()
			maxHeap := base
			b.ReportAllocs()
			b.ResetTimer()
			carBlocks := 0
			for i := 0; i < b.N; i++ {
				if i > 0 && i%100 == 0 {
					b.StopTimer()
					maxHeap = max(maxHeap, heapInuse())
					refill()
					b.StartTimer()
				}
				t0 := time.Now()
				c, err := r.Apply(ctx, writes[i%100:i%100+1], nil)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				carBlocks += countCARBlocks(c.CAR)
			}
			b.StopTimer()
			maxHeap = max(maxHeap, heapInuse())
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/mb, "live-end-MB")
			slices.Sort(lat)
			b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(base)/mb, "heap-base-MB")
			b.ReportMetric(float64(maxHeap)/mb, "heap-max-MB")
			b.ReportMetric(float64(carBlocks)/float64(b.N), "car-blocks/op")
			reportBoltStats(b, r.db, st0)
		})
	}
}

// reportBoltStats reports bbolt's work per op: pages allocated (written) and
// time in write+fsync, and the free pages left on the freelist.
func reportBoltStats(b *testing.B, db *bolt.DB, before bolt.Stats) {
	st := db.Stats()
	d := st.TxStats.Sub(&before.TxStats)
	b.ReportMetric(float64(d.GetPageAlloc())/float64(db.Info().PageSize)/float64(b.N), "pages/op")
	b.ReportMetric(float64(d.GetWriteTime().Microseconds())/1000/float64(b.N), "write-ms/op")
	b.ReportMetric(float64(st.FreePageN), "freepages")
}

// BenchmarkApplyBatch200 applies 200 creates per iteration (the most one
// commit may carry) to the 100k repository, fsync included.
func BenchmarkApplyBatch200(b *testing.B) {
	r := openFixture(b, 100_000, nil)
	ctx := context.Background()
	gen := newRecordGen(7)
	var clock liveTID
	batches := make([][]Write, b.N)
	for i := range batches {
		batches[i] = make([]Write, MaxWrites)
		for j := range batches[i] {
			batches[i][j] = gen.next()
			// TIDs of now, so that the new keys follow the fixture's.
			batches[i][j].RKey = syntax.RecordKey(clock.next())
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := r.Apply(ctx, batches[i], nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(MaxWrites*b.N)/b.Elapsed().Seconds(), "records/s")
}

// countCARBlocks counts the sections of a CAR v1 (header excluded).
func countCARBlocks(car []byte) int {
	n := -1
	for len(car) > 0 {
		l, k := binary.Uvarint(car)
		if k <= 0 || uint64(len(car)-k) < l {
			return -1
		}
		car = car[k+int(l):]
		n++
	}
	return n
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// BenchmarkExportCAR streams the whole repository as a CAR to a counting
// io.Discard; MB/s is CAR bytes per second.
func BenchmarkExportCAR(b *testing.B) {
	for _, size := range benchSizes[1:] {
		b.Run("records="+size.name, func(b *testing.B) {
			r := openFixture(b, size.n, nil)
			ctx := context.Background()
			var probe countingWriter
			if err := r.ExportCAR(ctx, &probe); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(probe.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var w countingWriter
				if err := r.ExportCAR(ctx, &w); err != nil {
					b.Fatal(err)
				}
				if w.n != probe.n {
					b.Fatalf("exported %d bytes, then %d", probe.n, w.n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(probe.n)/mb, "car-MB")
			b.ReportMetric(float64(heapInuse())/mb, "heap-end-MB")
		})
	}
}
