package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// Bounds on the small entries of an archive.
const (
	maxKeySize      = 64 << 10
	maxManifestSize = 16 << 20
)

// Dest is where Restore puts an archive's files.
type Dest struct {
	// DBPath is the database file to create.
	DBPath string
	// BlobPath returns the file for the blob with CID string c.
	BlobPath func(c string) string
	// Keys maps the accepted key names to their files; an archive entry
	// keys/<name> with another name is refused.
	Keys map[string]string
}

// Restore reads an archive written by Write and recreates its files under
// dst. Each blob is checked against its CID as it is written; the database
// and key files are checked against the manifest's sums before they are put
// in place (the database is written to DBPath+".restoring" and renamed at
// the end), so a damaged archive leaves no database behind. The caller
// checks beforehand that the destination is empty.
func Restore(ctx context.Context, r io.Reader, dst Dest) (*Manifest, error) {
	tr := tar.NewReader(r)
	tmpDB := dst.DBPath + ".restoring"
	defer os.Remove(tmpDB)
	var (
		m       *Manifest
		dbSum   *FileSum
		keys    = map[string][]byte{}
		blobs   = map[string]bool{}
		sawName = map[string]bool{}
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errBadFormat, err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size < 0 {
			return nil, fmt.Errorf("%w: entry %q is not a regular file", errBadFormat, hdr.Name)
		}
		if sawName[hdr.Name] {
			return nil, fmt.Errorf("%w: entry %q appears twice", errBadFormat, hdr.Name)
		}
		sawName[hdr.Name] = true
		switch name := hdr.Name; {
		case name == DBName:
			sum, err := writeChecked(tr, tmpDB, hdr.Size, nil)
			if err != nil {
				return nil, fmt.Errorf("restoring the database: %w", err)
			}
			dbSum = sum
		case name == ManifestName:
			b, err := readSmall(tr, hdr.Size, maxManifestSize)
			if err != nil {
				return nil, err
			}
			m = &Manifest{}
			if err := json.Unmarshal(b, m); err != nil {
				return nil, fmt.Errorf("%w: manifest: %w", errBadFormat, err)
			}
		case strings.HasPrefix(name, keysPrefix):
			k := strings.TrimPrefix(name, keysPrefix)
			if _, ok := dst.Keys[k]; !ok {
				return nil, fmt.Errorf("%w: unknown key file %q", errBadFormat, k)
			}
			b, err := readSmall(tr, hdr.Size, maxKeySize)
			if err != nil {
				return nil, err
			}
			keys[k] = b
		case strings.HasPrefix(name, blobsPrefix):
			c, err := cid.Decode(strings.TrimPrefix(name, blobsPrefix))
			if err != nil || c.String() != strings.TrimPrefix(name, blobsPrefix) {
				return nil, fmt.Errorf("%w: blob entry %q is not named by its CID", errBadFormat, name)
			}
			dm, err := multihash.Decode(c.Hash())
			if err != nil || dm.Code != multihash.SHA2_256 {
				return nil, fmt.Errorf("%w: blob %s is not sha2-256", errBadFormat, c)
			}
			path := dst.BlobPath(c.String())
			if _, err := writeChecked(tr, path+".restoring", hdr.Size, dm.Digest); err != nil {
				return nil, fmt.Errorf("blob %s: %w", c, err)
			}
			if err := os.Rename(path+".restoring", path); err != nil {
				return nil, err
			}
			blobs[c.String()] = true
		default:
			return nil, fmt.Errorf("%w: unexpected entry %q", errBadFormat, name)
		}
	}
	if m == nil || m.Format != Format {
		return nil, fmt.Errorf("%w: no manifest of format %d", errBadFormat, Format)
	}
	if dbSum == nil || m.Files[DBName] != *dbSum {
		return nil, fmt.Errorf("%w: the database does not match the manifest", errChecksum)
	}
	for k, b := range keys {
		sum := sha256.Sum256(b)
		if m.Files[keysPrefix+k] != (FileSum{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}) {
			return nil, fmt.Errorf("%w: key %s", errChecksum, k)
		}
	}
	for name := range m.Files {
		if k, ok := strings.CutPrefix(name, keysPrefix); ok && keys[k] == nil {
			return nil, fmt.Errorf("%w: key %s is missing", errBadFormat, k)
		}
	}
	if len(blobs) != m.BlobCount {
		return nil, fmt.Errorf("%w: %d blobs, the manifest lists %d", errBadFormat, len(blobs), m.BlobCount)
	}
	for k, b := range keys {
		path := dst.Keys[k]
		if err := writeFileSync(path, b); err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
	}
	if err := os.Rename(tmpDB, dst.DBPath); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dst.DBPath)); err != nil {
		return nil, err
	}
	return m, nil
}

// writeChecked streams exactly size bytes from r into a new file at path
// (fsynced) and returns their sum; with want set, the sha256 must equal it.
func writeChecked(r io.Reader, path string, size int64, want []byte) (*FileSum, error) {
	if err := ensureDir(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(path)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFormat, err)
	}
	if n != size {
		return nil, fmt.Errorf("%w: truncated entry (%d of %d bytes)", errBadFormat, n, size)
	}
	sum := h.Sum(nil)
	if want != nil && !bytes.Equal(sum, want) {
		return nil, fmt.Errorf("%w: content does not match its CID", errChecksum)
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	ok = true
	return &FileSum{Size: n, SHA256: hex.EncodeToString(sum)}, nil
}

func readSmall(r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%w: entry of %d bytes (at most %d)", errBadFormat, size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFormat, err)
	}
	return b, nil
}

func writeFileSync(path string, b []byte) error {
	if err := ensureDir(path); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
