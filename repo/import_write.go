package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	irepo "github.com/bluesky-social/indigo/atproto/repo"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// bucketImport is the staging area of an import in progress: it holds the
// new repository's blocks and records buckets, under the same names as the
// live ones, until the last transaction of the import moves them into
// place. Nothing reads it; its presence at Open means an import was
// interrupted, and it is discarded.
var bucketImport = []byte("repo_import")

// Bounds of one staging transaction of an import: the dirty pages bbolt
// holds until the commit are about this much, whatever the repository's
// size. Variables only so that tests can make a small import take many
// transactions.
var (
	importBatchBytes = 4 << 20
	importBatchKeys  = 20_000
)

// importFill is the fill percent of the staged buckets, written in key order:
// pages are packed nearly full, with room for the writes that follow.
const importFill = 0.9

// testImportHook, when set by a test, runs after each staging transaction
// (with its number, from 1; final for the last one, after which only the
// switch remains) and can fail the import there, or stop the process, to
// show that nothing of a partial import is seen.
var testImportHook func(step int, final bool) error

// writeImport writes the checked repository and makes it the head under a
// new commit signed with our key. It holds the writer lock throughout, so
// the head cannot move under it.
//
// The blocks (in CID order, so bbolt appends) and then the record index (in
// key order) go to the staging buckets in transactions of at most
// importBatchBytes or importBatchKeys; the last transaction deletes the old
// repository's buckets, moves the staged ones into their place, writes the
// head and runs BeforeCommit. Until it commits, every reader sees the old
// repository; if anything fails before, the staging area is discarded.
func (r *Repo) writeImport(ctx context.Context, imp *imported, sp *importSpill) (c *Commit, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var h *head
	if err := r.db.View(func(tx *bolt.Tx) (err error) {
		h, err = readHead(tx)
		return err
	}); err != nil {
		return nil, err
	}
	// The new rev sorts after the imported one and after ours.
	after := &head{rev: imp.rev}
	if h != nil && h.rev > after.rev {
		after.rev = h.rev
	}
	rev := r.nextRev(after)
	sc := irepo.Commit{DID: r.did.String(), Version: irepo.ATPROTO_REPO_VERSION, Data: imp.data, Rev: rev}
	if err := sc.Sign(r.signer); err != nil {
		return nil, fmt.Errorf("signing commit: %w", err)
	}
	var cb bytes.Buffer
	if err := sc.MarshalCBOR(&cb); err != nil {
		return nil, fmt.Errorf("encoding commit: %w", err)
	}
	commitData := cb.Bytes()
	commitCID, err := cidBuilder.Sum(commitData)
	if err != nil {
		return nil, err
	}
	commitD, _ := digest(commitCID)

	if err := r.db.Update(func(tx *bolt.Tx) error {
		if err := dropImport(tx); err != nil {
			return err
		}
		st, err := tx.CreateBucket(bucketImport)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketBlocks, bucketRecords} {
			if _, err := st.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("starting import: %w", err)
	}
	done := false
	defer func() {
		if !done {
			if derr := r.db.Update(dropImport); derr != nil {
				err = errors.Join(err, fmt.Errorf("discarding the staged import: %w", derr))
			}
		}
	}()
	step := 0
	stage := func(fill func(b *bolt.Bucket) error, bucket []byte, final *bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketImport).Bucket(bucket)
			b.FillPercent = importFill
			return fill(b)
		}); err != nil {
			return err
		}
		step++
		if testImportHook != nil {
			return testImportHook(step, *final)
		}
		return nil
	}

	// The blocks, in CID order: those of the spill's sorted index that are
	// referenced (a node, a record: see imported), with the new commit in
	// its place.
	commitDone := false
	for i := 0; i < len(sp.index) || !commitDone; {
		err := stage(func(b *bolt.Bucket) error {
			for size := 0; size < importBatchBytes && (i < len(sp.index) || !commitDone); {
				var (
					d    [32]byte
					data []byte
					refs uint32
				)
				if !commitDone && (i == len(sp.index) || bytes.Compare(commitD[:], sp.index[i].d[:]) <= 0) {
					d, data, refs, commitDone = commitD, commitData, 1, true
				} else {
					d, refs = sp.index[i].d, sp.refs[i]
					i++
					if refs == 0 {
						continue // the imported commit, or a block nothing links
					}
					var err error
					if data, err = sp.read(i - 1); err != nil {
						return err
					}
				}
				v := make([]byte, blockHeaderLen+len(data))
				copy(v, rev)
				binary.BigEndian.PutUint32(v[revLen:], refs)
				copy(v[blockHeaderLen:], data)
				if err := b.Put(cidOfDigest(d).Bytes(), v); err != nil {
					return err
				}
				size += len(v)
			}
			return nil
		}, bucketBlocks, new(bool))
		if err != nil {
			return nil, err
		}
	}

	// The record index, in key order.
	paths := sp.paths()
	for end := false; !end; {
		err := stage(func(b *bolt.Bucket) error {
			for range importBatchKeys {
				key, d, ok, err := paths.next()
				if err != nil {
					return err
				}
				if !ok {
					end = true
					return nil
				}
				if err := b.Put(key, cidOfDigest(d).Bytes()); err != nil {
					return err
				}
			}
			return nil
		}, bucketRecords, &end)
		if err != nil {
			return nil, err
		}
	}

	// The switch: the last moment a cancel aborts the import.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c = &Commit{
		DID:         r.did,
		CID:         commitCID,
		Rev:         rev,
		Data:        imp.data,
		Blobs:       imp.blobs,
		CommitBlock: bytes.Clone(commitData),
		Sync:        true,
		RecordBlobs: imp.recBlobs,
		ImportedRev: imp.rev,
	}
	c.CAR = c.SyncCAR()
	err = r.db.Update(func(tx *bolt.Tx) error {
		now, err := readHead(tx)
		if err != nil {
			return err
		}
		if (now == nil) != (h == nil) || (now != nil && now.commit != h.commit) {
			return fmt.Errorf("%w: the head moved during the import", ErrCorrupt)
		}
		for _, name := range [][]byte{bucketBlocks, bucketRecords, bucketRecent} {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return fmt.Errorf("clearing %s: %w", name, err)
			}
		}
		st := tx.Bucket(bucketImport)
		for _, name := range [][]byte{bucketBlocks, bucketRecords} {
			if err := tx.MoveBucket(name, st, nil); err != nil {
				return fmt.Errorf("moving the imported %s into place: %w", name, err)
			}
		}
		if err := tx.DeleteBucket(bucketImport); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketRecent); err != nil {
			return err
		}
		if err := writeHead(tx, &head{commit: commitCID, rev: rev, data: imp.data}); err != nil {
			return err
		}
		return r.beforeCommit(tx, c)
	})
	if err != nil {
		return nil, err
	}
	done = true
	return c, nil
}

// dropImport discards the staging area of an import, if there is one.
func dropImport(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketImport); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
		return fmt.Errorf("discarding a staged import: %w", err)
	}
	return nil
}
