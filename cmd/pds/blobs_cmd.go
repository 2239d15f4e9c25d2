package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/s3store"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// blobsCmd: pds blobs migrate --to s3 [--delete].
func blobsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "migrate" {
		fmt.Fprintln(stderr, "usage: pds blobs migrate --to s3 [--delete] [--data DIR]")
		return 2
	}
	fs := flag.NewFlagSet("blobs migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "destination: s3 (configured by PDS_BLOBSTORE_S3_*)")
	del := fs.Bool("delete", false, "delete each local file once its copy is verified")
	data := fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *to != "s3" {
		fmt.Fprintln(stderr, "pds blobs migrate: --to s3 is the only destination")
		return 2
	}
	cfg, err := loadConfig(os.Getenv, "", *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	if cfg.S3 == nil {
		fmt.Fprintln(stderr, "pds blobs migrate: set PDS_BLOBSTORE_S3_BUCKET (and _ENDPOINT, _REGION, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY, _FORCE_PATH_STYLE) first")
		return 1
	}
	n, size, err := migrateBlobs(context.Background(), cfg, *del, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "pds blobs migrate: %v (after %d blobs; running it again resumes)\n", err, n)
		return 1
	}
	fmt.Fprintf(stdout, "copied and verified %d blobs (%d bytes) into bucket %s; start the server with the same PDS_BLOBSTORE_S3_* settings\n", n, size, cfg.S3.Bucket)
	if !*del {
		fmt.Fprintf(stdout, "the local copies are still in %s: remove them once the server serves blobs from S3 (or run again with --delete)\n", filepath.Join(cfg.BlobDir, "blobs"))
	}
	return 0
}

// migrateBlobs copies every blob of the disk store to S3 and reads each
// back to check it against its CID. A blob whose local file is gone must
// already be in S3 (a resumed run), which is checked the same way.
func migrateBlobs(ctx context.Context, cfg *config, del bool, progress io.Writer) (int, int64, error) {
	db, err := bolt.Open(filepath.Join(cfg.DataDir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return 0, 0, fmt.Errorf("%w: stop the server first", errDBInUse)
	}
	if err != nil {
		return 0, 0, err
	}
	var entries []blobstore.Entry
	err = db.View(func(tx *bolt.Tx) error {
		entries, err = blobstore.ListIn(tx)
		return err
	})
	db.Close()
	if err != nil {
		return 0, 0, err
	}
	st, err := s3store.New(*cfg.S3)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for i, e := range entries {
		c, err := cid.Decode(e.CID)
		if err != nil {
			return i, total, err
		}
		dm, err := multihash.Decode(c.Hash())
		if err != nil {
			return i, total, err
		}
		key := blobstore.RemoteKey(e.CID)
		path := blobstore.FilePath(cfg.BlobDir, e.CID)
		f, err := os.Open(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return i, total, err
		default:
			err = st.Put(ctx, key, f, e.Size, "")
			f.Close()
			if err != nil {
				return i, total, err
			}
		}
		rc, err := st.Get(ctx, key, e.Size)
		if err != nil {
			return i, total, err
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || n != e.Size || !bytes.Equal(h.Sum(nil), dm.Digest) {
			return i, total, fmt.Errorf("blob %s in the bucket does not match its CID (%d bytes read, %v)", e.CID, n, err)
		}
		if del {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return i, total, err
			}
		}
		total += e.Size
		if (i+1)%100 == 0 {
			fmt.Fprintf(progress, "%d/%d blobs\n", i+1, len(entries))
		}
	}
	return len(entries), total, nil
}
