package blobstore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// GC deletes the blobs that no record references (refs == 0) and that have
// been unreferenced for longer than TempGrace: uploads no record ever used,
// and blobs whose last record was deleted or changed. It also removes files
// in Dir/tmp older than TempGrace (uploads interrupted by a crash) and files
// in Dir/blobs that have no metadata and are older than TempGrace (a crash
// between an upload's rename and its metadata write). It returns the number
// of blobs deleted from Dir/blobs.
//
// The decision is taken in one bbolt write transaction, so a concurrent
// UpdateRefs either commits first (and the blob is kept) or sees the blob
// gone (and fails with ErrBlobNotFound). Files are deleted after that
// transaction commits, under the store lock that Upload also holds while
// finishing, so a concurrent upload of the same bytes either finishes before
// (restarting the grace period) or after (storing the blob afresh).
func (s *Store) GC(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.cfg.Now()
	cutoff := now.Add(-s.cfg.TempGrace).UnixNano()

	var doomed []cid.Cid
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketBlobs))
		if b == nil {
			return fmt.Errorf("bucket %s missing: %w", bucketBlobs, ErrCorrupt)
		}
		var keys [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var m meta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("metadata of %s: %w", k, ErrCorrupt)
			}
			if m.Refs > 0 || m.Unref > cutoff {
				return nil
			}
			c, err := cid.Decode(string(k))
			if err != nil {
				return fmt.Errorf("key %q: %w", k, ErrCorrupt)
			}
			doomed = append(doomed, c)
			keys = append(keys, append([]byte(nil), k...))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("blobstore: gc: %w", err)
	}

	deleted := 0
	var firstErr error
	keep := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, c := range doomed {
		if err := s.drop(ctx, c); err != nil {
			keep(err)
			continue
		}
		deleted++
	}

	n, err := s.sweepOrphans(now)
	deleted += n
	if err != nil {
		keep(err)
	}
	if err := s.sweepTmp(now); err != nil {
		keep(err)
	}
	if firstErr != nil {
		return deleted, fmt.Errorf("blobstore: gc: %w", firstErr)
	}
	return deleted, nil
}

// sweepOrphans removes old files in Dir/blobs that have no metadata. The
// caller holds s.mu.
func (s *Store) sweepOrphans(now time.Time) (int, error) {
	dir := filepath.Join(s.cfg.Dir, blobsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var old []string
	for _, e := range entries {
		if s.isOld(e, now) {
			old = append(old, e.Name())
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	var orphans []string
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketBlobs))
		if b == nil {
			return fmt.Errorf("bucket %s missing: %w", bucketBlobs, ErrCorrupt)
		}
		for _, name := range old {
			if b.Get([]byte(name)) == nil {
				orphans = append(orphans, name)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range orphans {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return n, err
		}
		n++
	}
	return n, nil
}

// sweepTmp removes files in Dir/tmp not modified for TempGrace: leftovers of
// uploads interrupted by a crash. Files of uploads in progress are skipped.
func (s *Store) sweepTmp(now time.Time) error {
	dir := filepath.Join(s.cfg.Dir, tmpDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !s.isOld(e, now) || s.isActive(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// isOld reports whether e is a regular file last modified more than
// TempGrace before now.
func (s *Store) isOld(e os.DirEntry, now time.Time) bool {
	if !e.Type().IsRegular() {
		return false
	}
	fi, err := e.Info()
	if err != nil {
		return false
	}
	return now.Sub(fi.ModTime()) > s.cfg.TempGrace
}

// RunGC calls GC every interval until ctx is done, logging failures and
// deletions to log (nil means slog.Default()). It blocks; run it in its own
// goroutine.
func (s *Store) RunGC(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = s.cfg.TempGrace
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.GC(ctx)
		if err != nil && ctx.Err() == nil {
			log.Error("blob garbage collection failed", "err", err, "deleted", n)
			continue
		}
		if n > 0 {
			log.Info("blob garbage collection", "deleted", n)
		}
	}
}
