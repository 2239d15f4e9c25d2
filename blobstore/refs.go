package blobstore

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// RefChange says which blobs the record at Path references after a write.
type RefChange struct {
	// Path is the record's repository path, "collection/rkey".
	Path string
	// Blobs are the blobs the record now references; nil (or empty) for a
	// deleted record or one without blobs. Duplicates count once.
	Blobs []cid.Cid
}

// UpdateRefs records reference changes. It must run inside the repository's
// bbolt write transaction tx (the repo calls it from its BeforeCommit hook),
// so that reference counts change if and only if the records do; it does not
// commit or roll back tx, and it does not take the store's lock.
//
// For each change in order, it compares the blobs the path referenced before
// (bucket "blob_refs") with change.Blobs, increments the refs of newly
// referenced blobs, decrements those no longer referenced (a blob whose
// refs drop to 0 becomes temporary again: GC deletes it after TempGrace from
// now), and stores the new set. A newly referenced blob that was never
// uploaded (or already collected) returns an error wrapping ErrBlobNotFound
// and naming the CID; the caller must then abort the transaction.
func (s *Store) UpdateRefs(tx *bolt.Tx, changes []RefChange) error {
	refs := tx.Bucket([]byte(bucketRefs))
	if refs == nil {
		return fmt.Errorf("blobstore: bucket %s missing: %w", bucketRefs, ErrCorrupt)
	}
	now := s.cfg.Now().UnixNano()
	for _, ch := range changes {
		if ch.Path == "" {
			return fmt.Errorf("blobstore: reference change without a path")
		}
		key := []byte(ch.Path)
		old, err := decodeCIDs(refs.Get(key))
		if err != nil {
			return fmt.Errorf("blobstore: references of %s: %w", ch.Path, err)
		}
		cur := uniqueCIDs(ch.Blobs)
		for _, c := range cur {
			if containsCID(old, c) {
				continue
			}
			m, err := getMeta(tx, c)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%s (in %s): %w", c, ch.Path, ErrBlobNotFound)
			}
			if err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
			m.Refs++
			if err := putMeta(tx, c, m); err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
		}
		for _, c := range old {
			if containsCID(cur, c) {
				continue
			}
			m, err := getMeta(tx, c)
			if errors.Is(err, ErrNotFound) {
				// Never uploaded (an imported record's blob): one
				// reference fewer to wait for.
				if err := releaseMissing(tx, c); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
			m.Refs--
			if m.Refs <= 0 {
				m.Refs = 0
				m.Unref = now
			}
			if err := putMeta(tx, c, m); err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
		}
		if len(cur) == 0 {
			err = refs.Delete(key)
		} else {
			err = refs.Put(key, encodeCIDs(cur))
		}
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return nil
}

// encodeCIDs concatenates the binary CIDs.
func encodeCIDs(cs []cid.Cid) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, c.Bytes()...)
	}
	return out
}

// decodeCIDs splits a value written by encodeCIDs. It copies, so the result
// outlives the transaction.
func decodeCIDs(b []byte) ([]cid.Cid, error) {
	var out []cid.Cid
	for len(b) > 0 {
		n, c, err := cid.CidFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		out = append(out, c)
		b = b[n:]
	}
	return out, nil
}

func uniqueCIDs(cs []cid.Cid) []cid.Cid {
	var out []cid.Cid
	for _, c := range cs {
		if c.Defined() && !containsCID(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func containsCID(cs []cid.Cid, c cid.Cid) bool {
	for _, x := range cs {
		if x.Equals(c) {
			return true
		}
	}
	return false
}
