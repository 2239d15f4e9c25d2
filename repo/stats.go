package repo

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Stats are the true counts of the stored repository, as
// com.atproto.server.checkAccountStatus reports them.
type Stats struct {
	// Commit and Rev are the head; undefined and "" without one.
	Commit cid.Cid
	Rev    string
	// Blocks is the number of stored blocks (commit, MST nodes, records):
	// exactly the blocks reachable from the head.
	Blocks int
	// Records is the number of indexed record paths.
	Records int
}

// Stats counts the repository in one read transaction. It walks the pages of
// the blocks and records buckets (bbolt keeps no counts), so it costs time
// in proportion to the repository: it is for status checks, not hot paths.
func (r *Repo) Stats() (Stats, error) {
	var st Stats
	err := r.db.View(func(tx *bolt.Tx) error {
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if h != nil {
			st.Commit, st.Rev = h.commit, h.rev
		}
		if b := tx.Bucket(bucketBlocks); b != nil {
			st.Blocks = b.Stats().KeyN
		}
		if b := tx.Bucket(bucketRecords); b != nil {
			st.Records = b.Stats().KeyN
		}
		return nil
	})
	return st, err
}

// HeadSyncTx returns, inside the caller's transaction, the head as a #sync
// event carries it: its rev and a CAR holding only the signed commit block,
// rooted at it. It returns ErrNoHead for a repository without a commit.
func HeadSyncTx(tx *bolt.Tx) (rev string, car []byte, err error) {
	h, err := readHead(tx)
	if err != nil {
		return "", nil, err
	}
	if h == nil {
		return "", nil, ErrNoHead
	}
	block, err := (txSource{tx.Bucket(bucketBlocks)}).GetBlock(h.commit)
	if err != nil {
		return "", nil, fmt.Errorf("%w: head commit: %v", ErrCorrupt, err)
	}
	c := &Commit{CID: h.commit, Rev: h.rev, CommitBlock: block}
	return h.rev, c.SyncCAR(), nil
}

// DestroyTx deletes the whole repository inside the caller's transaction
// (account deletion); see Destroy.
func DestroyTx(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketBlocks, bucketRecords, bucketMeta, bucketRecent, bucketImport} {
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
	}
	return nil
}
