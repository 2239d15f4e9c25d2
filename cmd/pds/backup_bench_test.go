package main

// Backup and restore of a 100k-record repository with 1 GB of blobs
// (issue 15): time and peak private memory (RssAnon, polled every 5 ms) of
// `pds backup` and `pds restore` run as processes, after 100 MB and again
// after 1 GB of blobs, to show that memory does not grow with blob size.
// Heavy (~4 GB of disk under $TMPDIR), so it runs only when asked:
//
//   PDS_BENCH_BACKUP=1 go test ./cmd/pds -run '^$' -bench BackupRestore100k -benchtime 1x

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/repo"
)

// peakRssAnon runs cmd and returns its duration and the peak RssAnon
// (bytes) of watch (nil: cmd itself) seen while polling /proc/PID/status.
func peakRssAnon(b *testing.B, cmd *exec.Cmd, watch *os.Process) (time.Duration, int64) {
	b.Helper()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if watch == nil {
		watch = cmd.Process
	}
	var peak int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				b.Fatalf("%v: %v", cmd.Args, err)
			}
			return time.Since(start), peak
		case <-tick.C:
			if v := readRssAnon(watch.Pid); v > peak {
				peak = v
			}
		}
	}
}

func readRssAnon(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
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

func BenchmarkBackupRestore100k(b *testing.B) {
	if os.Getenv("PDS_BENCH_BACKUP") == "" {
		b.Skip("set PDS_BENCH_BACKUP=1 (needs ~4 GB of disk)")
	}
	work, err := os.MkdirTemp("", "ops-bench-backup-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "pds")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(work, "data")
	s := startServerWith(b, map[string]string{"PDS_DATA_DIRECTORY": data, "PDS_INVITE_REQUIRED": "false"}, nil)
	s.app.db.NoSync = true // building the fixture; the backup reads it with fsync'd files
	ctx := context.Background()
	if _, _, err := s.app.accounts.Create(ctx, account.CreateParams{Handle: "bench.test", Password: "bench-password"}); err != nil {
		b.Fatal(err)
	}
	rp, err := s.app.accounts.Repo()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	clock := syntax.NewTIDClock(0)
	for i := 0; i < 100_000; i += repo.MaxWrites {
		ws := make([]repo.Write, repo.MaxWrites)
		for j := range ws {
			ws[j] = repo.Write{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(clock.Next().String()),
				Record: map[string]any{"$type": "app.bsky.feed.post", "text": fmt.Sprintf("post %d: %s", i+j, strings.Repeat("lorem ipsum ", 8)), "createdAt": "2026-12-05T12:00:00.000Z"}}
		}
		if _, err := rp.Apply(ctx, ws, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("100k records in %v", time.Since(start))
	addBlobs := func(s *testServer, n int) {
		buf := make([]byte, 10<<20)
		for range n {
			_, _ = rand.Read(buf)
			if _, err := s.app.blobs.Upload(ctx, strings.NewReader(string(buf)), "application/octet-stream"); err != nil {
				b.Fatal(err)
			}
		}
	}
	env := append(os.Environ(), "PDS_DATA_DIRECTORY="+data, "PDS_ADMIN_PASSWORD=admin-secret", "PDS_PORT=3201", "LOG_LEVEL=error")
	run := func(label string) {
		archive := filepath.Join(work, "backup.tar")
		// Offline: the backup process itself snapshots the database.
		cmd := exec.Command(bin, "backup", "--out", archive)
		cmd.Env = env
		d, peak := peakRssAnon(b, cmd, nil)
		fi, _ := os.Stat(archive)
		b.Logf("%s: offline backup %v, %.0f MB archive, peak RssAnon %.1f MiB", label, d.Round(time.Millisecond), float64(fi.Size())/1e6, float64(peak)/(1<<20))
		b.ReportMetric(d.Seconds(), label+"-backup-s")
		b.ReportMetric(float64(peak)/(1<<20), label+"-backup-RssAnon-MiB")

		// Online: `pds serve` streams it; its memory is what matters.
		srv := exec.Command(bin, "serve", "--listen", "127.0.0.1:3201")
		srv.Env = env
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		for i := 0; ; i++ {
			if resp, err := http.Get("http://127.0.0.1:3201/xrpc/_health"); err == nil {
				resp.Body.Close()
				break
			}
			if i > 500 {
				b.Fatal("pds serve did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		idle := readRssAnon(srv.Process.Pid)
		cmd = exec.Command(bin, "backup", "--out", archive+".online")
		cmd.Env = env
		d, peak = peakRssAnon(b, cmd, srv.Process)
		_ = srv.Process.Signal(os.Interrupt)
		_ = srv.Wait()
		b.Logf("%s: online backup %v, server RssAnon idle %.1f MiB, peak during backup %.1f MiB", label, d.Round(time.Millisecond), float64(idle)/(1<<20), float64(peak)/(1<<20))
		b.ReportMetric(d.Seconds(), label+"-online-backup-s")
		b.ReportMetric(float64(peak)/(1<<20), label+"-online-server-RssAnon-MiB")
		_ = os.Remove(archive + ".online")

		target := filepath.Join(work, "restored-"+label)
		cmd = exec.Command(bin, "restore", archive, "--data", target)
		cmd.Env = append(os.Environ(), "LOG_LEVEL=error")
		d, peak = peakRssAnon(b, cmd, nil)
		b.Logf("%s: restore %v, peak RssAnon %.1f MiB", label, d.Round(time.Millisecond), float64(peak)/(1<<20))
		b.ReportMetric(d.Seconds(), label+"-restore-s")
		b.ReportMetric(float64(peak)/(1<<20), label+"-restore-RssAnon-MiB")
		_ = os.RemoveAll(target)
		_ = os.Remove(archive)
	}
	b.ResetTimer()
	addBlobs(s, 10)
	s.stop()
	run("100MB")
	s = startServerWith(b, map[string]string{"PDS_DATA_DIRECTORY": data}, nil)
	addBlobs(s, 90)
	s.stop()
	run("1GB")
}
