package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type entry struct {
	name string
	typ  byte
	body string
}

func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Size: int64(len(e.body)), Mode: 0o600}
		if typ != tar.TypeReg {
			h.Size, h.Linkname = 0, "/etc/passwd"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			_, _ = tw.Write([]byte(e.body))
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

// TestRestoreRefusesHostileEntries: names outside the layout, links,
// duplicates, unknown keys and blobs not matching their CID are refused,
// and nothing is written outside the destination.
func TestRestoreRefusesHostileEntries(t *testing.T) {
	const blobCID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" // sha256 of "hello world"
	for _, tc := range []struct {
		name    string
		entries []entry
	}{
		{"path traversal", []entry{{name: "../evil", body: "x"}}},
		{"absolute path", []entry{{name: "/tmp/evil", body: "x"}}},
		{"symlink", []entry{{name: DBName, typ: tar.TypeSymlink}}},
		{"unknown key", []entry{{name: "keys/../../evil", body: "x"}}},
		{"blob named by a non-CID", []entry{{name: "blobs/../../evil", body: "x"}}},
		{"blob not matching its CID", []entry{{name: "blobs/" + blobCID, body: "hello mars!"}}},
		{"duplicate entry", []entry{{name: ManifestName, body: "{}"}, {name: ManifestName, body: "{}"}}},
		{"no manifest", []entry{{name: DBName, body: "db"}}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dst := Dest{
				DBPath:   filepath.Join(root, "data", "pds.db"),
				BlobPath: func(c string) string { return filepath.Join(root, "data", "blobs", c) },
				Keys:     map[string]string{"jwt-secret": filepath.Join(root, "data", "jwt-secret")},
			}
			_, err := Restore(context.Background(), bytes.NewReader(archive(t, tc.entries...)), dst)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, errBadFormat) && !errors.Is(err, errChecksum) {
				t.Fatalf("error %v is neither errBadFormat nor errChecksum", err)
			}
			if _, err := os.Stat(filepath.Join(root, "evil")); err == nil {
				t.Fatal("wrote outside the destination")
			}
			if _, err := os.Stat(dst.DBPath); err == nil {
				t.Fatal("left a database")
			}
		})
	}
}
