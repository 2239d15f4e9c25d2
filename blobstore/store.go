// Package blobstore keeps the account's blobs: their bytes in files on disk,
// their metadata and reference counts in the shared bbolt file.
//
// Layout on disk, under Config.Dir:
//
//	blobs/<cid>   blob bytes, content-addressed (CIDv1, raw codec, sha2-256)
//	tmp/          uploads in progress
//
// Layout in bbolt:
//
//	blobs      CID string      → JSON metadata (mime, size, times, refs)
//	blob_refs  collection/rkey → concatenated CID bytes of the blobs that record references
//	blob_missing CID string    → referenced but never uploaded (imported records)
//
// A blob starts unreferenced (refs == 0) when uploaded. The repository calls
// UpdateRefs inside its write transaction whenever records change; GC deletes
// blobs that have stayed unreferenced for longer than Config.TempGrace.
//
// Only UpdateRefs runs inside a caller's bbolt transaction. Every other
// method opens its own and must not be called while the calling goroutine
// holds a bbolt transaction on the same database.
package blobstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxSize is the upload limit when Config.MaxSize is 0 (the
	// reference PDS distribution's 100 MiB).
	DefaultMaxSize int64 = 100 << 20
	// DefaultTempGrace is how long an unreferenced blob is kept when
	// Config.TempGrace is 0.
	DefaultTempGrace = time.Hour
	// MaxListLimit is the largest page List returns.
	MaxListLimit = 1000
)

// Bucket and folder names.
const (
	bucketBlobs = "blobs"
	bucketRefs  = "blob_refs"
	blobsDir    = "blobs"
	tmpDir      = "tmp"
)

// Config configures a Store.
type Config struct {
	// Dir holds the blobs/ and tmp/ folders. They must be on one file
	// system, so that finishing an upload is a rename.
	Dir string
	// MaxSize is the largest blob Upload accepts, in bytes. 0 means
	// DefaultMaxSize.
	MaxSize int64
	// TempGrace is how long a blob may stay unreferenced (an upload no record
	// uses yet, or a blob whose last record was deleted) before GC deletes
	// it. 0 means DefaultTempGrace.
	TempGrace time.Duration
	// Now is the clock; nil means time.Now. Tests move it forward to age
	// blobs.
	Now func() time.Time
}

// Info describes a stored blob.
type Info struct {
	// CID is the CIDv1 (raw codec, sha2-256) of the bytes.
	CID cid.Cid
	// MimeType is the sniffed (or, failing that, declared) media type.
	MimeType string
	// Size is the length in bytes.
	Size int64
	// CreatedAt is when the blob was first uploaded.
	CreatedAt time.Time
	// Refs is the number of records that reference the blob. A blob with no
	// references is temporary: GC deletes it after Config.TempGrace.
	Refs int
}

// meta is the JSON value stored under the CID string in bucket "blobs".
type meta struct {
	MimeType string `json:"mime"`
	Size     int64  `json:"size"`
	// Created is the first upload time (Unix nanoseconds).
	Created int64 `json:"created"`
	Refs    int   `json:"refs"`
	// Unref is when the blob last became unreferenced: its upload (refreshed
	// by a re-upload) or the moment its refs dropped to 0 (Unix nanoseconds).
	// GC measures TempGrace from here. Meaningless while Refs > 0.
	Unref int64 `json:"unref"`
}

func (m *meta) info(c cid.Cid) *Info {
	return &Info{
		CID:       c,
		MimeType:  m.MimeType,
		Size:      m.Size,
		CreatedAt: time.Unix(0, m.Created).UTC(),
		Refs:      m.Refs,
	}
}

// Store is the blob store. Its methods are safe for concurrent use.
type Store struct {
	db  *bolt.DB
	cfg Config
	// mu serializes the steps that touch both a blob file and its metadata:
	// finishing an upload and GC. It is always taken before a bbolt write
	// transaction, never inside one; UpdateRefs does not take it.
	mu sync.Mutex

	// tmpMu guards active, the names of temp files of uploads in progress,
	// which GC's sweep of Dir/tmp must leave alone however old they are.
	tmpMu  sync.Mutex
	active map[string]struct{}
}

// New opens the store: it creates Dir/blobs and Dir/tmp (mode 0700) and the
// bbolt buckets "blobs" and "blob_refs". The caller owns db and closes it
// after the last use of the Store.
func New(db *bolt.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("blobstore: nil database")
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("blobstore: no directory configured")
	}
	if cfg.MaxSize < 0 || cfg.TempGrace < 0 {
		return nil, fmt.Errorf("blobstore: negative MaxSize or TempGrace")
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.TempGrace == 0 {
		cfg.TempGrace = DefaultTempGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, blobsDir), filepath.Join(cfg.Dir, tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketBlobs, bucketRefs, bucketMissing} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("creating bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return &Store{db: db, cfg: cfg, active: make(map[string]struct{})}, nil
}

// MaxSize returns the effective upload limit in bytes.
func (s *Store) MaxSize() int64 { return s.cfg.MaxSize }

func (s *Store) blobPath(c cid.Cid) string {
	return filepath.Join(s.cfg.Dir, blobsDir, c.String())
}

// Stat returns the metadata of a stored blob, referenced or not (check
// Info.Refs: the reference PDS serves only referenced blobs from getBlob).
// It returns ErrNotFound for an unknown CID.
func (s *Store) Stat(ctx context.Context, c cid.Cid) (*Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var info *Info
	err := s.db.View(func(tx *bolt.Tx) error {
		m, err := getMeta(tx, c)
		if err != nil {
			return err
		}
		info = m.info(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// Open returns the blob's bytes and metadata, referenced or not (see Stat).
// The caller must close the reader. The file stays readable even if GC
// deletes the blob meanwhile. It returns ErrNotFound for an unknown CID.
func (s *Store) Open(ctx context.Context, c cid.Cid) (io.ReadSeekCloser, *Info, error) {
	info, err := s.Stat(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.blobPath(c))
	if err != nil {
		if os.IsNotExist(err) {
			// GC removed it between Stat and Open.
			return nil, nil, fmt.Errorf("%s: %w", c, ErrNotFound)
		}
		return nil, nil, fmt.Errorf("blobstore: %w", err)
	}
	return f, info, nil
}

// List returns the CIDs of referenced blobs (refs > 0) in CID string order,
// starting after cursor (a CID string; "" starts at the beginning), at most
// limit of them (limit is clamped to 1..MaxListLimit). The returned cursor is
// the last CID of the page when more referenced blobs follow, "" otherwise.
// It backs com.atproto.sync.listBlobs.
func (s *Store) List(ctx context.Context, cursor string, limit int) ([]cid.Cid, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit = max(1, min(limit, MaxListLimit))
	var out []cid.Cid
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketBlobs))
		if b == nil {
			return fmt.Errorf("bucket %s missing: %w", bucketBlobs, ErrCorrupt)
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
			var m meta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("metadata of %s: %w", k, ErrCorrupt)
			}
			if m.Refs <= 0 {
				continue
			}
			if len(out) == limit {
				more = true
				return nil
			}
			c, err := cid.Decode(string(k))
			if err != nil {
				return fmt.Errorf("key %q: %w", k, ErrCorrupt)
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if more {
		next = out[len(out)-1].String()
	}
	return out, next, nil
}

// getMeta reads a blob's metadata; ErrNotFound if absent.
func getMeta(tx *bolt.Tx, c cid.Cid) (*meta, error) {
	b := tx.Bucket([]byte(bucketBlobs))
	if b == nil {
		return nil, fmt.Errorf("bucket %s missing: %w", bucketBlobs, ErrCorrupt)
	}
	v := b.Get([]byte(c.String()))
	if v == nil {
		return nil, fmt.Errorf("%s: %w", c, ErrNotFound)
	}
	var m meta
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", c, ErrCorrupt)
	}
	return &m, nil
}

// putMeta writes a blob's metadata; tx must be writable.
func putMeta(tx *bolt.Tx, c cid.Cid, m *meta) error {
	b := tx.Bucket([]byte(bucketBlobs))
	if b == nil {
		return fmt.Errorf("bucket %s missing: %w", bucketBlobs, ErrCorrupt)
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put([]byte(c.String()), v)
}
