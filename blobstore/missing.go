package blobstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// bucketMissing holds the blobs that records reference but that were never
// uploaded: after a repository import, the blobs of the old server that the
// migrating client has yet to copy. CID string → JSON missingEntry.
const bucketMissing = "blob_missing"

// missingEntry is the value of a missing blob.
type missingEntry struct {
	// Refs is the number of records referencing the blob, as meta.Refs.
	Refs int `json:"refs"`
	// Path is one record that references it, for listMissingBlobs.
	Path string `json:"path"`
}

// Missing is a blob a record references that the store does not hold.
type Missing struct {
	CID cid.Cid
	// Path is a record ("collection/rkey") that references it.
	Path string
}

// ReplaceRefs discards every blob reference and records changes as the
// complete new set, inside the repository's write transaction tx (after a
// repository import). Blobs the store holds get their counts; blobs it does
// not hold are remembered as missing, and become referenced blobs when they
// are uploaded. Blobs no longer referenced become temporary (GC deletes them
// after TempGrace from now). Like UpdateRefs, it neither commits tx nor
// takes the store's lock.
func (s *Store) ReplaceRefs(tx *bolt.Tx, changes []RefChange) error {
	now := s.cfg.Now().UnixNano()
	blobs := tx.Bucket([]byte(bucketBlobs))
	if blobs == nil {
		return fmt.Errorf("blobstore: bucket %s missing: %w", bucketBlobs, ErrCorrupt)
	}
	// Every stored blob starts unreferenced.
	type kv struct{ k, v []byte }
	var reset []kv
	err := blobs.ForEach(func(k, v []byte) error {
		var m meta
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("metadata of %s: %w", k, ErrCorrupt)
		}
		if m.Refs == 0 {
			return nil
		}
		m.Refs, m.Unref = 0, now
		nv, err := json.Marshal(&m)
		if err != nil {
			return err
		}
		reset = append(reset, kv{bytes.Clone(k), nv})
		return nil
	})
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	for _, x := range reset {
		if err := blobs.Put(x.k, x.v); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	for _, name := range []string{bucketRefs, bucketMissing} {
		if err := tx.DeleteBucket([]byte(name)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return fmt.Errorf("blobstore: clearing %s: %w", name, err)
		}
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	refs, missing := tx.Bucket([]byte(bucketRefs)), tx.Bucket([]byte(bucketMissing))
	for _, ch := range changes {
		cur := uniqueCIDs(ch.Blobs)
		if ch.Path == "" || len(cur) == 0 {
			continue
		}
		for _, c := range cur {
			m, err := getMeta(tx, c)
			switch {
			case errors.Is(err, ErrNotFound):
				if err := addMissing(missing, c, ch.Path); err != nil {
					return err
				}
				continue
			case err != nil:
				return fmt.Errorf("blobstore: %w", err)
			}
			m.Refs++
			if err := putMeta(tx, c, m); err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
		}
		if err := refs.Put([]byte(ch.Path), encodeCIDs(cur)); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return nil
}

func addMissing(b *bolt.Bucket, c cid.Cid, path string) error {
	e, err := getMissing(b, c)
	if err != nil {
		return err
	}
	if e == nil {
		e = &missingEntry{Path: path}
	}
	e.Refs++
	return putMissing(b, c, e)
}

// getMissing returns the missing entry of c, or nil.
func getMissing(b *bolt.Bucket, c cid.Cid) (*missingEntry, error) {
	v := b.Get([]byte(c.String()))
	if v == nil {
		return nil, nil
	}
	var e missingEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("blobstore: missing entry of %s: %w", c, ErrCorrupt)
	}
	return &e, nil
}

func putMissing(b *bolt.Bucket, c cid.Cid, e *missingEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Put([]byte(c.String()), v)
}

// releaseMissing drops one reference to a missing blob, if it is one.
func releaseMissing(tx *bolt.Tx, c cid.Cid) error {
	b := tx.Bucket([]byte(bucketMissing))
	if b == nil {
		return nil
	}
	e, err := getMissing(b, c)
	if err != nil || e == nil {
		return err
	}
	if e.Refs--; e.Refs <= 0 {
		return b.Delete([]byte(c.String()))
	}
	return putMissing(b, c, e)
}

// adoptMissing returns how many records reference c while it was missing,
// and forgets it as missing: an upload of an expected blob.
func adoptMissing(tx *bolt.Tx, c cid.Cid) (int, error) {
	b := tx.Bucket([]byte(bucketMissing))
	if b == nil {
		return 0, nil
	}
	e, err := getMissing(b, c)
	if err != nil || e == nil {
		return 0, err
	}
	return e.Refs, b.Delete([]byte(c.String()))
}

// ListMissing returns the referenced blobs the store does not hold, in CID
// string order after cursor (a CID string, "" from the start), at most
// limit (clamped to 1..MaxListLimit), with the cursor of the next page ("" at
// the end). It backs com.atproto.repo.listMissingBlobs.
func (s *Store) ListMissing(ctx context.Context, cursor string, limit int) ([]Missing, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit = max(1, min(limit, MaxListLimit))
	var out []Missing
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketMissing))
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		var k, v []byte
		if cursor == "" {
			k, v = cur.First()
		} else {
			k, v = cur.Seek([]byte(cursor))
			if k != nil && bytes.Equal(k, []byte(cursor)) {
				k, v = cur.Next()
			}
		}
		for ; k != nil; k, v = cur.Next() {
			if len(out) == limit {
				more = true
				return nil
			}
			var e missingEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("missing entry of %s: %w", k, ErrCorrupt)
			}
			c, err := cid.Decode(string(k))
			if err != nil {
				return fmt.Errorf("key %q: %w", k, ErrCorrupt)
			}
			out = append(out, Missing{CID: c, Path: e.Path})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("blobstore: %w", err)
	}
	next := ""
	if more {
		next = out[len(out)-1].CID.String()
	}
	return out, next, nil
}

// Counts returns how many distinct blobs records reference (expected) and
// how many of those the store holds (imported), as checkAccountStatus
// reports them.
func (s *Store) Counts(ctx context.Context) (expected, imported int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket([]byte(bucketBlobs)).ForEach(func(k, v []byte) error {
			var m meta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("metadata of %s: %w", k, ErrCorrupt)
			}
			if m.Refs > 0 {
				imported++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if b := tx.Bucket([]byte(bucketMissing)); b != nil {
			expected = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("blobstore: %w", err)
	}
	return imported + expected, imported, nil
}

// DeleteAll deletes every blob, its metadata and every reference (account
// deletion): ClearTx in its own transaction, then RemoveFiles.
func (s *Store) DeleteAll(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.Update(s.ClearTx); err != nil {
		return err
	}
	return s.RemoveFiles()
}

// ClearTx deletes the metadata and references of every blob inside the
// caller's write transaction, so that an account deletion drops them with
// everything else. The files stay until RemoveFiles (or GC, which removes
// files without metadata) runs after the transaction commits.
func (s *Store) ClearTx(tx *bolt.Tx) error {
	for _, name := range []string{bucketBlobs, bucketRefs, bucketMissing} {
		if err := tx.DeleteBucket([]byte(name)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return fmt.Errorf("blobstore: %w", err)
		}
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return nil
}

// RemoveFiles deletes every blob file. Call it only after ClearTx has
// committed: a file whose metadata remains would be served as missing.
func (s *Store) RemoveFiles() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.cfg.Dir, blobsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return syncDir(dir)
}
