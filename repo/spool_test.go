package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestExportStalledReaderHoldsNoTx reproduces the stalled getRepo: a reader
// that takes the first bytes of an export and then stops. Meanwhile the
// writer grows the file well past its mapping (which in bbolt waits for
// every open read transaction): the writes must go through, and the stalled
// export, once read, must still be the exact snapshot of the commit it
// started at.
func TestExportStalledReaderHoldsNoTx(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	for i := 0; i < 100; i++ {
		mustApply(t, r, create("app.bsky.feed.post", fmt.Sprintf("a%04d", i), post(strings.Repeat("x", 2000))))
	}
	want := impExport(t, r)

	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		exported <- r.ExportCAR(ctx, pw)
		pw.Close()
	}()
	// Read a little, then stall: ExportCAR is now blocked writing to pw.
	first := make([]byte, 100)
	if _, err := io.ReadFull(pr, first); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		big := strings.Repeat("y", 100_000)
		for i := 0; i < 300; i++ {
			w := create("app.bsky.feed.post", fmt.Sprintf("b%04d", i), post(big[:90_000+i]))
			if _, err := r.Apply(ctx, []Write{w}, nil); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		go io.Copy(io.Discard, pr) // unblock, so that the db can close
		t.Fatal("writes blocked behind a stalled export")
	}
	rest, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-exported; err != nil {
		t.Fatal(err)
	}
	if got := append(first, rest...); !bytes.Equal(got, want) {
		t.Fatalf("stalled export is not the snapshot it started at (%d bytes, want %d)", len(got), len(want))
	}
}

// TestExportShared: concurrent exports of one commit share one file, a new
// commit gets a new one, and the file closes with its last reader.
func TestExportShared(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	mustApply(t, r, create("app.bsky.feed.post", "a", post("a")))
	e1, err := r.OpenExport(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := r.OpenExport(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if e1.s != e2.s {
		t.Fatal("two exports of one commit did not share a spool")
	}
	mustApply(t, r, create("app.bsky.feed.post", "b", post("b")))
	e3, err := r.OpenExport(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if e3.s == e1.s || e3.Commit == e1.Commit {
		t.Fatal("a new commit reused the old spool")
	}
	e1.Close()
	e1.Close() // idempotent
	if _, err := io.ReadAll(e2.Reader()); err != nil {
		t.Fatalf("shared reader broke when another closed: %v", err)
	}
	e2.Close()
	e3.Close()
	r.exports.mu.Lock()
	defer r.exports.mu.Unlock()
	if len(r.exports.m) != 0 || len(r.exports.slots) != 0 {
		t.Fatalf("spools left open: %d entries, %d slots", len(r.exports.m), len(r.exports.slots))
	}
}
