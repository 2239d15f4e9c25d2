package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/backup"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// keyFiles are the secret files of a data directory a backup carries.
func keyFiles(dataDir string) map[string]string {
	m := map[string]string{}
	for _, n := range []string{"jwt-secret", "admin-password", "plc-rotation-key.hex", account.SigningKeyFile, devPasswordFile} {
		m[n] = filepath.Join(dataDir, n)
	}
	return m
}

// backupSource describes the app's data for backup.Write.
func (a *app) backupSource() backup.Source {
	did := ""
	if r, err := a.accounts.Repo(); err == nil {
		did = r.DID().String()
	}
	return backup.Source{
		DB: a.db,
		Describe: func(tx *bolt.Tx, m *backup.Manifest) ([]backup.Blob, error) {
			m.DID = did
			commit, rev, _, err := repo.HeadIn(tx)
			switch {
			case errors.Is(err, repo.ErrNoHead):
			case err != nil:
				return nil, err
			default:
				m.HeadCommit, m.HeadRev = commit.String(), rev
			}
			m.LastSeq = events.LastSeqIn(tx)
			entries, err := blobstore.ListIn(tx)
			if err != nil {
				return nil, err
			}
			out := make([]backup.Blob, len(entries))
			for i, e := range entries {
				out[i] = backup.Blob{CID: e.CID, Size: e.Size}
			}
			return out, nil
		},
		OpenBlob: func(ctx context.Context, c string) (io.ReadCloser, int64, error) {
			id, err := cid.Decode(c)
			if err != nil {
				return nil, 0, err
			}
			rc, info, err := a.blobs.Open(ctx, id)
			if errors.Is(err, blobstore.ErrNotFound) {
				return nil, 0, fmt.Errorf("%s: %w", c, os.ErrNotExist)
			}
			if err != nil {
				return nil, 0, err
			}
			return rc, info.Size, nil
		},
		Keys:    keyFiles(a.cfg.DataDir),
		Version: version,
	}
}

// serveBackup streams a backup archive of the running server.
func (a *app) serveBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="pds-backup.tar"`)
	m, err := backup.Write(r.Context(), w, a.backupSource())
	if err != nil {
		// The status is sent; the archive is cut short, which the
		// client sees as a missing manifest.
		a.log.Error("backup", "err", err)
		return
	}
	a.log.Info("backup served", "did", m.DID, "rev", m.HeadRev, "last_seq", m.LastSeq, "blobs", m.BlobCount)
}

// backupCmd: pds backup --out FILE [--data DIR].
func backupCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "archive file to write (required)")
	data := fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "pds backup: --out FILE is required")
		return 2
	}
	cfg, err := loadConfig(os.Getenv, "", *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	ctx := context.Background()
	tmp := *out + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "pds backup: %v\n", err)
		return 1
	}
	defer os.Remove(tmp)
	defer f.Close()

	a, err := openApp(ctx, cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	switch {
	case errors.Is(err, errDBInUse):
		// The server is running: it writes the snapshot.
		err = backupViaServer(ctx, cfg, f)
	case err != nil:
	default:
		_, err = backup.Write(ctx, f, a.backupSource())
		a.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintf(stderr, "pds backup: %v\n", err)
		return 1
	}
	m, err := readManifest(tmp)
	if err != nil {
		fmt.Fprintf(stderr, "pds backup: the archive is incomplete: %v\n", err)
		return 1
	}
	if err := os.Rename(tmp, *out); err != nil {
		fmt.Fprintf(stderr, "pds backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s: account %s at rev %s, last seq %d, %d blobs (%d bytes)\n", *out, m.DID, m.HeadRev, m.LastSeq, m.BlobCount, m.BlobBytes)
	if len(m.MissingBlobs) > 0 {
		fmt.Fprintf(stdout, "note: %d blobs were deleted while the backup ran and are not in it\n", len(m.MissingBlobs))
	}
	return 0
}

func localURL(cfg *config) string {
	host := cfg.Listen
	if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") {
		host = "127.0.0.1:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	return "http://" + host
}

func backupViaServer(ctx context.Context, cfg *config, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, localURL(cfg)+opsPrefix+"backup", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("admin", cfg.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the database is locked by a running server, and asking it failed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the server answered %s: %s", resp.Status, b)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// readManifest reads the manifest at the end of an archive file, skipping
// over the other entries.
func readManifest(path string) (*backup.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no manifest: %w", err)
		}
		if hdr.Name == backup.ManifestName {
			var m backup.Manifest
			if err := json.NewDecoder(io.LimitReader(tr, 16<<20)).Decode(&m); err != nil {
				return nil, err
			}
			return &m, nil
		}
	}
}
