package repo

import (
	"bytes"
	"fmt"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// HeadIn reads the head inside tx, for callers that describe a snapshot of
// the database (backups): the commit CID, its rev, and a CAR v1 rooted at
// the commit holding only the signed commit block (the blocks of a #sync
// event). It returns ErrNoHead for a repository without a commit. The CAR
// is a copy, valid after tx ends.
func HeadIn(tx *bolt.Tx) (commit cid.Cid, rev string, syncCAR []byte, err error) {
	if tx.Bucket(bucketMeta) == nil || tx.Bucket(bucketBlocks) == nil {
		return cid.Undef, "", nil, ErrNoHead
	}
	h, err := readHead(tx)
	if err != nil {
		return cid.Undef, "", nil, err
	}
	if h == nil {
		return cid.Undef, "", nil, ErrNoHead
	}
	block, err := txSource{tx.Bucket(bucketBlocks)}.GetBlock(h.commit)
	if err != nil {
		return cid.Undef, "", nil, fmt.Errorf("%w: head commit block: %v", ErrCorrupt, err)
	}
	c := &Commit{CID: h.commit, CommitBlock: bytes.Clone(block)}
	return h.commit, h.rev, c.SyncCAR(), nil
}
