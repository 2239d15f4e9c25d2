package blobstore

import (
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// Remote keeps blob bytes off the local disk, in an S3-compatible object
// store (s3store.Store). With Config.Remote set, uploads are still received
// into Dir/tmp (hashed and counted there, never held in memory), then put
// under RemoteKey and the temp file removed; Open reads the object, and GC
// deletes it.
type Remote interface {
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64, contentType string) error
	Get(ctx context.Context, key string, size int64) (io.ReadSeekCloser, error)
	Delete(ctx context.Context, key string) error
}

// RemoteKey is the object key of a blob: "blocks/<cid>".
func RemoteKey(c string) string { return "blocks/" + c }

// keep moves a finished upload (a synced temp file) to where blobs live and
// reports whether the blob was already stored. The caller holds s.mu.
func (s *Store) keep(ctx context.Context, tmpName string, c cid.Cid, size int64, mimeType string) (existed, moved bool, err error) {
	if s.cfg.Remote == nil {
		dst := s.blobPath(c)
		_, statErr := os.Stat(dst)
		if err := os.Rename(tmpName, dst); err != nil {
			return false, false, err
		}
		return statErr == nil, true, syncDir(filepath.Join(s.cfg.Dir, blobsDir))
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		_, err := getMeta(tx, c)
		existed = err == nil
		return nil
	})
	f, err := os.Open(tmpName)
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	if err := s.cfg.Remote.Put(ctx, RemoteKey(c.String()), f, size, mimeType); err != nil {
		return false, false, err
	}
	return existed, false, nil
}

// drop deletes a blob's bytes; a missing blob is not an error.
func (s *Store) drop(ctx context.Context, c cid.Cid) error {
	if s.cfg.Remote != nil {
		return s.cfg.Remote.Delete(ctx, RemoteKey(c.String()))
	}
	if err := os.Remove(s.blobPath(c)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
