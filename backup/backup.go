// Package backup writes and restores one-file backups of a PDS data
// directory: a tar archive holding a consistent snapshot of the bbolt
// database (written by bbolt's Tx.WriteTo inside one read transaction, so
// the server keeps running), the secret key files, every blob, and a
// manifest (written last, when every checksum is known).
//
// Archive layout:
//
//	pds.db          the database snapshot
//	keys/<name>     secret files from the data directory (0600 on restore)
//	blobs/<cid>     blob bytes; a restore checks each against its CID
//	manifest.json   Manifest: DID, head rev, last seq, counts, sha256 sums
//
// Everything is streamed: memory does not grow with the database or blob
// sizes. The database snapshot holds its read transaction only while the
// database itself is copied; blobs are listed inside that transaction and
// copied after it, so writers are never held up by a long blob copy.
package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Format is the archive format version written in the manifest.
const Format = 1

// Names inside the archive.
const (
	DBName       = "pds.db"
	ManifestName = "manifest.json"
	keysPrefix   = "keys/"
	blobsPrefix  = "blobs/"
)

// Errors of backup and restore.
var (
	errBadFormat = errors.New("not a pds backup, or a damaged one")
	errChecksum  = errors.New("checksum mismatch")
)

// FileSum is the size and sha256 of one archived file.
type FileSum struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest describes an archive; it is its last entry.
type Manifest struct {
	Format     int       `json:"format"`
	Created    time.Time `json:"created"`
	Version    string    `json:"version,omitempty"`
	DID        string    `json:"did,omitempty"`
	HeadCommit string    `json:"headCommit,omitempty"`
	HeadRev    string    `json:"headRev,omitempty"`
	// LastSeq is the firehose seq of the newest event in the snapshot: a
	// restored server must never hand out a seq at or below it.
	LastSeq   int64 `json:"lastSeq"`
	BlobCount int   `json:"blobCount"`
	BlobBytes int64 `json:"blobBytes"`
	// MissingBlobs were listed in the database but their file was gone
	// (collected while the backup ran); they are not in the archive.
	MissingBlobs []string `json:"missingBlobs,omitempty"`
	// Files holds the sums of pds.db and of each key file by archive name.
	Files map[string]FileSum `json:"files"`
}

// Blob is one blob to archive: its CID string and size in the database.
type Blob struct {
	CID  string
	Size int64
}

// Source is what Write archives.
type Source struct {
	DB *bolt.DB
	// Describe fills the manifest's DID, head and seq from the snapshot's
	// read transaction, and lists its blobs.
	Describe func(tx *bolt.Tx, m *Manifest) ([]Blob, error)
	// OpenBlob opens the bytes of the blob with CID string c, wherever
	// they live (disk or S3), with their size; os.ErrNotExist (wrapped)
	// when they are gone.
	OpenBlob func(ctx context.Context, c string) (io.ReadCloser, int64, error)
	// Keys maps an archive key name (e.g. "jwt-secret") to its file; files
	// that do not exist (secrets given by the environment) are skipped.
	Keys    map[string]string
	Version string
	Now     func() time.Time
}

// Write streams a backup archive of src to w and returns its manifest.
func Write(ctx context.Context, w io.Writer, src Source) (*Manifest, error) {
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	m := &Manifest{Format: Format, Created: now().UTC(), Version: src.Version, Files: map[string]FileSum{}}
	tw := tar.NewWriter(w)
	var blobs []Blob
	err := src.DB.View(func(tx *bolt.Tx) error {
		var err error
		if blobs, err = src.Describe(tx, m); err != nil {
			return err
		}
		size := tx.Size()
		if err := tw.WriteHeader(fileHeader(DBName, size, m.Created)); err != nil {
			return err
		}
		h := sha256.New()
		n, err := tx.WriteTo(io.MultiWriter(tw, h))
		if err != nil {
			return fmt.Errorf("copying the database: %w", err)
		}
		m.Files[DBName] = FileSum{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for name, path := range src.Keys {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup: key %s: %w", name, err)
		}
		if err := writeFile(tw, keysPrefix+name, b, m.Created); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		m.Files[keysPrefix+name] = FileSum{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
	}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ok, err := copyBlob(ctx, tw, src, b, m.Created)
		if err != nil {
			return nil, fmt.Errorf("backup: blob %s: %w", b.CID, err)
		}
		if !ok {
			m.MissingBlobs = append(m.MissingBlobs, b.CID)
			continue
		}
		m.BlobCount++
		m.BlobBytes += b.Size
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFile(tw, ManifestName, mj, m.Created); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

func fileHeader(name string, size int64, t time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: t, Format: tar.FormatPAX}
}

func writeFile(tw *tar.Writer, name string, b []byte, t time.Time) error {
	if err := tw.WriteHeader(fileHeader(name, int64(len(b)), t)); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	if _, err := tw.Write(b); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	return nil
}

// copyBlob archives one blob file; false when the file is gone.
func copyBlob(ctx context.Context, tw *tar.Writer, src Source, b Blob, t time.Time) (bool, error) {
	f, size, err := src.OpenBlob(ctx, b.CID)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if size != b.Size {
		return false, fmt.Errorf("blob has %d bytes, the database says %d", size, b.Size)
	}
	if err := tw.WriteHeader(fileHeader(blobsPrefix+b.CID, b.Size, t)); err != nil {
		return false, err
	}
	if n, err := io.Copy(tw, f); err != nil || n != size {
		return false, fmt.Errorf("copied %d of %d bytes: %w", n, size, err)
	}
	return true, nil
}

// DirEmpty reports whether dir is missing or holds nothing.
func DirEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

// syncDir fsyncs a directory so that renames into it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func ensureDir(path string) error { return os.MkdirAll(filepath.Dir(path), 0o700) }
