package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// blockChunkBytes bounds what WriteBlocksCAR copies out of one transaction.
const blockChunkBytes = 1 << 20

// WriteBlocksCAR writes a root-less CAR v1 of the stored blocks named by
// cids (sync.getBlocks), each block once however often it is named. If any
// is missing, nothing is written and missing lists them. Blocks are copied
// out of short read transactions about a megabyte at a time and written
// with no transaction held, so memory stays at one chunk and a slow w never
// pins the database. A block deleted by a commit that lands mid-stream cuts
// the CAR short with an error (the caller can only close the connection).
func (r *Repo) WriteBlocksCAR(ctx context.Context, w io.Writer, cids []cid.Cid) (missing []cid.Cid, err error) {
	uniq := make([]cid.Cid, 0, len(cids))
	seen := make(map[cid.Cid]struct{}, len(cids))
	for _, c := range cids {
		if _, ok := seen[c]; !ok {
			seen[c] = struct{}{}
			uniq = append(uniq, c)
		}
	}
	err = r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlocks)
		for _, c := range uniq {
			if b.Get(c.Bytes()) == nil {
				missing = append(missing, c)
			}
		}
		return nil
	})
	if err != nil || len(missing) > 0 {
		return missing, err
	}
	if _, err := w.Write(carHeaderRoots(nil)); err != nil {
		return nil, err
	}
	var chunk bytes.Buffer
	for i := 0; i < len(uniq); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk.Reset()
		err := r.db.View(func(tx *bolt.Tx) error {
			src := txSource{tx.Bucket(bucketBlocks)}
			for ; i < len(uniq) && chunk.Len() < blockChunkBytes; i++ {
				data, err := src.GetBlock(uniq[i])
				if err != nil {
					return fmt.Errorf("block %s went away mid-stream: %w", uniq[i], err)
				}
				_ = writeCARBlock(&chunk, uniq[i], data) // a bytes.Buffer does not fail
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(chunk.Bytes()); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
