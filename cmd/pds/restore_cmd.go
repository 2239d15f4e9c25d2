package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pdsbox/pds/backup"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// errNotEmpty: restore refuses a data directory that holds data.
var errNotEmpty = errors.New("the data directory is not empty")

// defaultSeqMargin is added to the backup's last seq on restore: events
// sequenced after the backup was taken are lost with the old server, but
// relays may have seen them, and a reused seq would be skipped by them.
const defaultSeqMargin = 100_000

// restoreCmd: pds restore FILE [--data DIR] [--force] [--relay URL] [--seq-margin N].
func restoreCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory to restore into (default $PDS_DATA_DIRECTORY or ./data)")
	force := fs.Bool("force", false, "replace the database, keys and blobs of a non-empty data directory")
	relay := fs.String("relay", "", "relay to ask for the last seq it saw from this host (com.atproto.sync.getHostStatus), e.g. https://bsky.network")
	margin := fs.Int64("seq-margin", defaultSeqMargin, "how far above the backup's last seq the firehose resumes")
	file := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	}
	if file == "" || *margin < 0 {
		fmt.Fprintln(stderr, "usage: pds restore FILE [--data DIR] [--force] [--relay URL] [--seq-margin N]")
		return 2
	}
	if err := restore(context.Background(), os.Getenv, file, *data, *force, *relay, *margin, stdout); err != nil {
		fmt.Fprintf(stderr, "pds restore: %v\n", err)
		return 1
	}
	return 0
}

func restore(ctx context.Context, getenv env, file, dataFlag string, force bool, relay string, margin int64, stdout io.Writer) error {
	dataDir := getenv.str("PDS_DATA_DIRECTORY", "./data")
	if dataFlag != "" {
		dataDir = dataFlag
	}
	blobDir := getenv.str("PDS_BLOBSTORE_DISK_LOCATION", filepath.Join(dataDir, "blobs"))
	if relay != "" {
		if u, err := url.Parse(relay); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("--relay %q is not an http(s) URL", relay)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()

	// Never under a running server, and never over data unless told.
	dbPath := filepath.Join(dataDir, dbFile)
	if db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond, OpenFile: openExisting}); err == nil {
		db.Close()
	} else if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%w: stop the server first", errDBInUse)
	}
	for _, d := range []string{dataDir, filepath.Join(blobDir, "blobs")} {
		empty, err := backup.DirEmpty(d)
		if err != nil {
			return err
		}
		if !empty && !force {
			return fmt.Errorf("%w: %s (restore into an empty one, or pass --force to replace its database, keys and blobs)", errNotEmpty, d)
		}
	}
	keys := keyFiles(dataDir)
	if force {
		for _, p := range append([]string{dbPath, filepath.Join(blobDir, "blobs"), filepath.Join(blobDir, "tmp")}, mapValues(keys)...) {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(blobDir, "blobs"), 0o700); err != nil {
		return err
	}
	m, err := backup.Restore(ctx, f, backup.Dest{
		DBPath:   dbPath,
		BlobPath: func(c string) string { return blobstore.FilePath(blobDir, c) },
		Keys:     keys,
	})
	if err != nil {
		return err
	}

	// The firehose resumes above anything a relay may have seen: the
	// margin covers events after the backup, and the relay's reported seq
	// may lag the cursor it reconnects with.
	seen := m.LastSeq
	if relay != "" {
		relaySeen, err := relayHostSeq(ctx, relay, getenv.str("PDS_HOSTNAME", "localhost"))
		if err != nil {
			return fmt.Errorf("the files are restored, but asking the relay failed (%w); run `pds seq raise N` with the relay's cursor for this host before starting", err)
		}
		seen = max(seen, relaySeen)
	}
	next := seen + margin
	vars := func(k string) string {
		if k == "PDS_DATA_DIRECTORY" {
			return dataDir
		}
		return getenv(k)
	}
	cfg, err := loadConfig(vars, "", dataDir)
	if err != nil {
		return err
	}
	a, err := openApp(ctx, cfg, newLogger(io.Discard, "error"), time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.events.RaiseSeq(next); err != nil {
		return err
	}
	// The first event after the restore says where the repository is, so
	// a relay that saw lost commits resynchronises instead of rejecting
	// the next commit for a broken chain.
	if r, err := a.accounts.Repo(); err == nil {
		err = a.db.Update(func(tx *bolt.Tx) error {
			_, rev, car, err := repo.HeadIn(tx)
			if err != nil {
				return err
			}
			_, err = a.events.AppendSync(tx, r.DID(), rev, car)
			return err
		})
		if err != nil {
			return fmt.Errorf("sequencing the #sync event: %w", err)
		}
	}
	fmt.Fprintf(stdout, "restored %s at rev %s (%d blobs) into %s\nthe firehose resumes after seq %d (backup's last seq %d", m.DID, m.HeadRev, m.BlobCount, dataDir, a.events.LastSeq(), m.LastSeq)
	if relay != "" {
		fmt.Fprintf(stdout, ", above %s's cursor", relay)
	}
	fmt.Fprintln(stdout, ") with a #sync of the head;\nstart the server: it sends requestCrawl to PDS_CRAWLERS at startup")
	if cfg.S3 != nil {
		fmt.Fprintln(stdout, "the blobs were restored to the local folder: run `pds blobs migrate --to s3 --delete` before starting")
	}
	return nil
}

// openExisting opens the database file only if it exists, so that the
// in-use probe never creates one.
func openExisting(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag&^os.O_CREATE, perm)
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// relayHostSeq asks a relay for the last seq it consumed from hostname.
func relayHostSeq(ctx context.Context, relay, hostname string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(relay, "/") + "/xrpc/com.atproto.sync.getHostStatus?hostname=" + url.QueryEscape(hostname)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Seq     *int64 `json:"seq"`
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return 0, fmt.Errorf("getHostStatus: %s: %w", resp.Status, err)
	}
	if resp.StatusCode == http.StatusBadRequest && out.Error == "HostNotFound" {
		return 0, nil // the relay never saw this host
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("getHostStatus: %s: %s %s", resp.Status, out.Error, out.Message)
	}
	if out.Seq == nil || *out.Seq < 0 {
		return 0, nil
	}
	return *out.Seq, nil
}
