package dbprobe

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestWedged reproduces the wedge: a read transaction that never ends, and a
// writer that needs to grow the mapping (so it waits for that reader, and
// every new reader waits for it). The probe must say so within its timeout,
// and recover when the reader goes.
func TestWedged(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := New(db, 200*time.Millisecond)
	if err := p.Check(); err != nil {
		t.Fatalf("healthy db: %v", err)
	}
	stuck, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	writer := make(chan error, 1)
	go func() {
		// Write until the file outgrows its mapping: the remap waits for
		// the stuck reader.
		big := make([]byte, 1<<20)
		for i := 0; i < 64; i++ {
			err := db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("b"))
				if err != nil {
					return err
				}
				return b.Put([]byte{byte(i)}, big)
			})
			if err != nil {
				writer <- err
				return
			}
		}
		writer <- nil
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.Check()
		if errors.Is(err, ErrNotAnswering) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe never saw the wedge (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Calling again while the probe is stuck answers at once, adding no
	// goroutine.
	start := time.Now()
	if err := p.Check(); !errors.Is(err, ErrNotAnswering) || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("second check: %v after %v", err, time.Since(start))
	}
	stuck.Rollback()
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	recovered := time.Now().Add(5 * time.Second)
	for p.Check() != nil {
		if time.Now().After(recovered) {
			t.Fatal("probe did not recover")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
