package repo

import (
	"context"
	"fmt"
	"io"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
)

// ExportCAR streams the whole repository to w as a CAR v1 whose root is the
// head commit: the commit block first, then every record and MST node. It
// reads one consistent snapshot and holds no more than one block in memory;
// the snapshot is spooled to disk first (see OpenExport), so a slow w never
// holds a database transaction.
func (r *Repo) ExportCAR(ctx context.Context, w io.Writer) error {
	return r.export(ctx, w, "")
}

// ExportSince streams, as a CAR v1 rooted at the head commit, the commit and
// the blocks first written after rev since: what getRepo?since= answers. A
// consumer holding the repository at since gets everything it lacks. An
// empty since exports everything.
func (r *Repo) ExportSince(ctx context.Context, w io.Writer, since string) error {
	if since != "" {
		if _, err := syntax.ParseTID(since); err != nil {
			return fmt.Errorf("%w: since: %v", ErrInvalidWrite, err)
		}
	}
	return r.export(ctx, w, since)
}

func (r *Repo) export(ctx context.Context, w io.Writer, since string) error {
	e, err := r.OpenExport(ctx, since)
	if err != nil {
		return err
	}
	defer e.Close()
	_, err = io.Copy(w, e.Reader())
	return err
}

// writeSnapshot writes the CAR of the head commit as tx sees it to w: the
// commit block first, then every block (or those first written after rev
// since). It returns the head commit.
func writeSnapshot(ctx context.Context, tx *bolt.Tx, bw io.Writer, since string) (cid.Cid, error) {
	h, err := readHead(tx)
	if err != nil {
		return cid.Undef, err
	}
	if h == nil {
		return cid.Undef, ErrNoHead
	}
	if _, err := bw.Write(carHeader(h.commit)); err != nil {
		return cid.Undef, err
	}
	src := txSource{tx.Bucket(bucketBlocks)}
	data, err := src.GetBlock(h.commit)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: head commit: %v", ErrCorrupt, err)
	}
	if err := writeCARBlock(bw, h.commit, data); err != nil {
		return cid.Undef, err
	}
	n := 0
	emit := func(k, v []byte) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		_, c, err := cid.CidFromBytes(k)
		if err != nil {
			return fmt.Errorf("%w: block key: %v", ErrCorrupt, err)
		}
		if c == h.commit {
			return nil
		}
		if len(v) < blockHeaderLen {
			return fmt.Errorf("%w: short block %s", ErrCorrupt, c)
		}
		return writeCARBlock(bw, c, v[blockHeaderLen:])
	}
	// Every stored block is reachable from the head: a plain scan of the
	// bucket, in key order, is the whole repository. For since, the scan
	// keeps the blocks first written after that rev (each block carries
	// its rev): O(repository) for a rare query, in exchange for no rev
	// index to update on every commit.
	err = tx.Bucket(bucketBlocks).ForEach(func(k, v []byte) error {
		if since != "" && (len(v) < revLen || string(v[:revLen]) <= since) {
			return nil
		}
		return emit(k, v)
	})
	return h.commit, err
}

// RecordProof returns a CAR v1 rooted at the head commit that proves the
// value of collection/rkey, or its absence: the commit, the MST nodes on the
// key's path, and the record block if present (sync.getRecord).
func (r *Repo) RecordProof(collection syntax.NSID, rkey syntax.RecordKey) ([]byte, error) {
	var out []byte
	err := r.db.View(func(tx *bolt.Tx) error {
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if h == nil {
			return ErrNoHead
		}
		src := txSource{tx.Bucket(bucketBlocks)}
		commit, err := src.GetBlock(h.commit)
		if err != nil {
			return fmt.Errorf("%w: head commit: %v", ErrCorrupt, err)
		}
		tree, err := mst.LoadTree(src, h.data)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		key := []byte(collection.String() + "/" + rkey.String())
		nodes, err := tree.Proof(key)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		car := newCARBuffer(h.commit)
		car.add(h.commit, commit)
		for _, b := range nodes {
			car.add(b.CID, b.Data)
		}
		val, err := tree.Get(key)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if val != nil {
			data, err := src.GetBlock(*val)
			if err != nil {
				return fmt.Errorf("%w: record %s: %v", ErrCorrupt, key, err)
			}
			car.add(*val, data)
		}
		out = car.bytes()
		return nil
	})
	return out, err
}
