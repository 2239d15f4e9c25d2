package blobstore

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Entry is one stored blob as a snapshot lists it.
type Entry struct {
	// CID is the CID string, also the blob's file name under Dir/blobs.
	CID  string
	Size int64
}

// ListIn returns every stored blob, referenced or not, read inside tx, in
// CID string order. The files are under FilePath.
func ListIn(tx *bolt.Tx) ([]Entry, error) {
	b := tx.Bucket([]byte(bucketBlobs))
	if b == nil {
		return nil, nil
	}
	var out []Entry
	err := b.ForEach(func(k, v []byte) error {
		var m meta
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("metadata of %s: %w", k, ErrCorrupt)
		}
		out = append(out, Entry{CID: string(k), Size: m.Size})
		return nil
	})
	return out, err
}

// FilePath is where the bytes of the blob with CID string c live, for a
// store configured with dir.
func FilePath(dir, c string) string { return filepath.Join(dir, blobsDir, c) }
