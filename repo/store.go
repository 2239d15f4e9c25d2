package repo

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Storage layout, all in one bbolt file so that a commit is one transaction:
//
//	blocks      CID bytes        → rev (13 bytes) | refcount (uint32 BE) | block bytes
//	records     collection/rkey  → record CID bytes
//	repo_meta   "did", "commit", "rev", "data"
//	repo_import the staging area of an import in progress (import_write.go)
//
// Only blocks reachable from the head commit are kept. MST nodes and commits
// are unique by content; record blocks may be shared by several paths, hence
// the refcount.
var (
	bucketBlocks  = []byte("blocks")
	bucketRecords = []byte("records")
	bucketRecent  = []byte("recent_writes")
	bucketMeta    = []byte("repo_meta")

	metaDID    = []byte("did")
	metaCommit = []byte("commit")
	metaRev    = []byte("rev")
	metaData   = []byte("data")
)

// revLen is the length of a TID, the only rev format we store.
const revLen = 13

const blockHeaderLen = revLen + 4

func createBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketBlocks, bucketRecords, bucketMeta, bucketRecent} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("creating bucket %s: %w", b, err)
		}
	}
	return nil
}

// txSource reads blocks inside one bbolt transaction, for the MST.
type txSource struct{ b *bolt.Bucket }

// GetBlock returns the block bytes. They are valid for the life of the
// transaction, which outlives every Tree built on it.
func (s txSource) GetBlock(c cid.Cid) ([]byte, error) {
	v := s.b.Get(c.Bytes())
	if v == nil {
		return nil, fmt.Errorf("%s: %w", c, mst.ErrBlockNotFound)
	}
	if len(v) < blockHeaderLen {
		return nil, fmt.Errorf("%w: short block %s", ErrCorrupt, c)
	}
	return v[blockHeaderLen:], nil
}

// blockWriter changes the block buckets inside one update transaction.
type blockWriter struct {
	blocks *bolt.Bucket
	rev    string
}

func newBlockWriter(tx *bolt.Tx, rev string) (*blockWriter, error) {
	if len(rev) != revLen {
		return nil, fmt.Errorf("rev %q is not a TID", rev)
	}
	return &blockWriter{blocks: tx.Bucket(bucketBlocks), rev: rev}, nil
}

// put stores a block with one reference, or adds a reference to a stored one
// (keeping the rev it was first written at). Nodes and commits pass
// shared=false: writing one that is stored is a no-op (a proof node).
func (w *blockWriter) put(c cid.Cid, data []byte, shared bool) error {
	k := c.Bytes()
	if old := w.blocks.Get(k); old != nil {
		if !shared {
			return nil
		}
		v := make([]byte, len(old))
		copy(v, old)
		binary.BigEndian.PutUint32(v[revLen:], binary.BigEndian.Uint32(v[revLen:])+1)
		return w.blocks.Put(k, v)
	}
	v := make([]byte, blockHeaderLen+len(data))
	copy(v, w.rev)
	binary.BigEndian.PutUint32(v[revLen:], 1)
	copy(v[blockHeaderLen:], data)
	return w.blocks.Put(k, v)
}

// release drops one reference to a block and deletes it at zero.
func (w *blockWriter) release(c cid.Cid) error {
	k := c.Bytes()
	old := w.blocks.Get(k)
	if old == nil {
		return fmt.Errorf("%w: releasing missing block %s", ErrCorrupt, c)
	}
	if len(old) < blockHeaderLen {
		return fmt.Errorf("%w: short block %s", ErrCorrupt, c)
	}
	if n := binary.BigEndian.Uint32(old[revLen:]); n > 1 {
		v := make([]byte, len(old))
		copy(v, old)
		binary.BigEndian.PutUint32(v[revLen:], n-1)
		return w.blocks.Put(k, v)
	}
	return w.blocks.Delete(k)
}

// head is the current commit of the repository.
type head struct {
	commit cid.Cid
	rev    string
	data   cid.Cid
}

// readHead returns the head, or nil for a repository without a commit.
func readHead(tx *bolt.Tx) (*head, error) {
	m := tx.Bucket(bucketMeta)
	cb := m.Get(metaCommit)
	if cb == nil {
		return nil, nil
	}
	_, commit, err := cid.CidFromBytes(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: head commit: %v", ErrCorrupt, err)
	}
	_, data, err := cid.CidFromBytes(m.Get(metaData))
	if err != nil {
		return nil, fmt.Errorf("%w: head data: %v", ErrCorrupt, err)
	}
	return &head{commit: commit, rev: string(m.Get(metaRev)), data: data}, nil
}

func writeHead(tx *bolt.Tx, h *head) error {
	m := tx.Bucket(bucketMeta)
	if err := m.Put(metaCommit, h.commit.Bytes()); err != nil {
		return err
	}
	if err := m.Put(metaRev, []byte(h.rev)); err != nil {
		return err
	}
	return m.Put(metaData, h.data.Bytes())
}

// Destroy deletes every repository bucket from db: used only to clear the
// remains of an account creation that did not complete.
func Destroy(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketBlocks, bucketRecords, bucketMeta, bucketRecent, bucketImport} {
			if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
}
