package repo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	bolt "go.etcd.io/bbolt"
)

// rssAnon reads this process's resident anonymous memory (RssAnon, the
// private memory that is not a mapped file) from /proc, in bytes; 0 where
// there is no /proc.
func rssAnon() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// peakSampler records the highest RssAnon seen every few milliseconds.
type peakSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak int64
}

func startPeakSampler() *peakSampler { return startSampler(nil) }

// startSampler is startPeakSampler that also passes a line of RssAnon and
// Go heap figures to timeline every 250 ms, if timeline is set.
func startSampler(timeline func(string)) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), peak: rssAnon()}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		next := start
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				p.peak = max(p.peak, rssAnon())
				if timeline != nil && !now.Before(next) {
					next = next.Add(250 * time.Millisecond)
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					timeline(fmt.Sprintf("%5.2f s  RssAnon %5.1f MB  HeapInuse %5.1f MB  HeapSys %5.1f MB  NumGC %d",
						now.Sub(start).Seconds(), float64(rssAnon())/mb, float64(ms.HeapInuse)/mb, float64(ms.HeapSys)/mb, ms.NumGC))
				}
			}
		}
	}()
	return p
}

func (p *peakSampler) Stop() int64 {
	close(p.stop)
	p.done.Wait()
	return max(p.peak, rssAnon())
}

// BenchmarkImportCAR100k imports the 100k-record fixture's CAR (about the
// repository of a very active account), read from a file as an HTTP body
// would stream it, into an empty repository with fsync, re-signing the
// head. It reports the import time, the peak RssAnon of the process during
// the import (peak-RssAnon-MB) and its growth over the level before it
// (delta-RssAnon-MB). Goal: under 10 s and 100 MB private memory.
// PDS_BENCH_TIMELINE=1 logs RssAnon and the Go heap every 250 ms.
func BenchmarkImportCAR100k(b *testing.B) {
	benchImport(b, 0)
}

// benchImport runs the import; benchMmap is bbolt's InitialMmapSize for
// the target (0: the default, as the server opens its file). A 1 GiB
// initial map avoids bbolt's remaps (each copies every dirty node) but saved
// only ~10 MB in a measurement, so the server keeps the default.
func benchImport(b *testing.B, benchMmap int) {
	src := openFixture(b, 100_000, nil)
	carPath := filepath.Join(b.TempDir(), "repo.car")
	f, err := os.Create(carPath)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.ExportCAR(context.Background(), &buf); err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		b.Fatal(err)
	}
	f.Close()
	carBytes := buf.Len()
	buf = bytes.Buffer{}
	pub, err := src.signer.PublicKey()
	if err != nil {
		b.Fatal(err)
	}
	src.db.Close()
	b.ReportMetric(float64(carBytes)/mb, "car-MB")
	var peak, delta int64
	// The fixture and its export are setup, not the import.
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		db, err := bolt.Open(filepath.Join(b.TempDir(), "dst.db"), 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, InitialMmapSize: benchMmap})
		if err != nil {
			b.Fatal(err)
		}
		key, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			b.Fatal(err)
		}
		dst, err := Open(db, testDID, key, Options{})
		if err != nil {
			b.Fatal(err)
		}
		rd, err := os.Open(carPath)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		base := rssAnon()
		var timeline func(string)
		if os.Getenv("PDS_BENCH_TIMELINE") != "" {
			timeline = func(l string) { b.Log(l) }
		}
		sampler := startSampler(timeline)
		b.StartTimer()
		c, err := dst.ImportCAR(context.Background(), bufio.NewReaderSize(rd, 64<<10), pub, ImportOptions{})
		b.StopTimer()
		p := sampler.Stop()
		if err != nil {
			b.Fatal(err)
		}
		if st, err := dst.Stats(); err != nil || st.Records != 100_000 || st.Rev != c.Rev {
			b.Fatalf("imported %+v %v", st, err)
		}
		peak, delta = max(peak, p), max(delta, p-base)
		rd.Close()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/mb, "peak-RssAnon-MB")
	b.ReportMetric(float64(delta)/mb, "delta-RssAnon-MB")
}
