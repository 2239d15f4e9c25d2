package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/s3store"
)

const versitygwAddr = "127.0.0.1:3230"

// startVersitygw runs a real S3 server (versitygw, posix backend) on
// 127.0.0.1 and returns the PDS_BLOBSTORE_S3_* settings for it, with a
// fresh bucket.
func startVersitygw(t *testing.T) map[string]string {
	t.Helper()
	bin := findTool(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	root, side := t.TempDir(), t.TempDir()
	var out lockedBuffer
	cmd := exec.Command(bin, "--access", "test-access", "--secret", "test-secret-key", "--port", versitygwAddr, "posix", "--sidecar", side, root)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("versitygw:\n%s", out.String())
		}
	})
	waitTCP(t, versitygwAddr, 20*time.Second)
	env := map[string]string{
		"PDS_BLOBSTORE_S3_BUCKET":            "pds-blobs",
		"PDS_BLOBSTORE_S3_REGION":            "us-east-1",
		"PDS_BLOBSTORE_S3_ENDPOINT":          "http://" + versitygwAddr,
		"PDS_BLOBSTORE_S3_FORCE_PATH_STYLE":  "true",
		"PDS_BLOBSTORE_S3_ACCESS_KEY_ID":     "test-access",
		"PDS_BLOBSTORE_S3_SECRET_ACCESS_KEY": "test-secret-key",
		"PDS_BLOBSTORE_S3_UPLOAD_TIMEOUT_MS": "20000",
	}
	st := s3FromEnv(t, env)
	if err := st.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return env
}

func s3FromEnv(t *testing.T, env map[string]string) *s3store.Store {
	t.Helper()
	vars := map[string]string{"PDS_DATA_DIRECTORY": t.TempDir()}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := loadConfig(func(k string) string { return vars[k] }, "", "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3store.New(*cfg.S3)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestS3Blobs: with PDS_BLOBSTORE_S3_*, uploads land in the bucket (not in
// the blob folder), getBlob streams them back (ranges too), and GC deletes
// the object of a blob no record references.
func TestS3Blobs(t *testing.T) {
	env := startVersitygw(t)
	dataDir := t.TempDir()
	extra := map[string]string{"PDS_DATA_DIRECTORY": dataDir}
	for k, v := range env {
		extra[k] = v
	}
	s := startServer(t, extra)
	did, access, _ := s.createAccount(t)
	body := pngBytes(t, 900_000)
	st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", body, "image/png")
	if st != 200 {
		t.Fatalf("uploadBlob: %d %s", st, raw)
	}
	var up struct{ Blob map[string]any }
	_ = json.Unmarshal(raw, &up)
	cidStr := up.Blob["ref"].(map[string]any)["$link"].(string)
	withImage := post("s3")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": up.Blob}}}
	st2, rec := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": withImage})
	wantStatus(t, "createRecord", st2, rec, 200, "")

	// Not on the local disk; in the bucket.
	if _, err := os.Stat(blobstore.FilePath(s.app.cfg.BlobDir, cidStr)); err == nil {
		t.Fatal("the blob was written to the local folder")
	}
	s3 := s3FromEnv(t, env)
	obj, _ := s3.Get(context.Background(), blobstore.RemoteKey(cidStr), int64(len(body)))
	var got bytes.Buffer
	if _, err := got.ReadFrom(obj); err != nil || !bytes.Equal(got.Bytes(), body) {
		t.Fatalf("object in the bucket: %d bytes, %v", got.Len(), err)
	}
	obj.Close()
	if ents, _ := os.ReadDir(filepath.Join(s.app.cfg.BlobDir, "tmp")); len(ents) != 0 {
		t.Fatalf("temp files left: %v", ents)
	}

	// getBlob streams it, and a range request gets its slice.
	st, raw, _ = s.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+cidStr, nil, "")
	if st != 200 || !bytes.Equal(raw, body) {
		t.Fatalf("getBlob: %d, %d bytes", st, len(raw))
	}
	req, _ := newRangeRequest(s.URL+"/xrpc/com.atproto.sync.getBlob?did="+did+"&cid="+cidStr, "bytes=1000-1999")
	resp, err := httpDo(req)
	if err != nil || resp.status != 206 || !bytes.Equal(resp.body, body[1000:2000]) {
		t.Fatalf("range: %+v %v", resp, err)
	}

	// Deleting the record and collecting garbage removes the object.
	rkey := rec["uri"].(string)[strings.LastIndexByte(rec["uri"].(string), '/')+1:]
	st2, out := s.call(t, "POST", "com.atproto.repo.deleteRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey})
	wantStatus(t, "deleteRecord", st2, out, 200, "")
	gcStore, err := blobstore.New(s.app.db, blobstore.Config{Dir: s.app.cfg.BlobDir, Remote: s3, TempGrace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := gcStore.GC(context.Background()); err != nil || n != 1 {
		t.Fatalf("GC: %d %v", n, err)
	}
	obj, _ = s3.Get(context.Background(), blobstore.RemoteKey(cidStr), int64(len(body)))
	_, err = obj.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("object after GC: %v", err)
	}
}

// TestBlobsMigrateToS3: blobs of a disk store are copied to the bucket,
// verified against their CIDs, and served from S3 after a restart.
func TestBlobsMigrateToS3(t *testing.T) {
	env := startVersitygw(t)
	dataDir := t.TempDir()
	s := startServer(t, map[string]string{"PDS_DATA_DIRECTORY": dataDir})
	did, access, _ := s.createAccount(t)
	var blobs [][]byte
	var cids []string
	for i := range 3 {
		b := pngBytes(t, 100_000*(i+1))
		st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", b, "image/png")
		if st != 200 {
			t.Fatal(st)
		}
		var up struct{ Blob map[string]any }
		_ = json.Unmarshal(raw, &up)
		p := post("migrate")
		p["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": up.Blob}}}
		st2, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": p})
		wantStatus(t, "createRecord", st2, out, 200, "")
		blobs = append(blobs, b)
		cids = append(cids, up.Blob["ref"].(map[string]any)["$link"].(string))
	}
	backupEnv(t, s, dataDir)
	var stdout, stderr bytes.Buffer
	// Refused while the server runs.
	for k, v := range env {
		t.Setenv(k, v)
	}
	if code := run([]string{"blobs", "migrate", "--to", "s3"}, &stdout, &stderr); code == 0 {
		t.Fatal("migrated under a running server")
	}
	s.stop()
	// A blob damaged on disk is caught by the verification.
	path0 := blobstore.FilePath(s.app.cfg.BlobDir, cids[0])
	good0, _ := os.ReadFile(path0)
	bad := bytes.Clone(good0)
	bad[10] ^= 1
	_ = os.WriteFile(path0, bad, 0o600)
	stderr.Reset()
	if code := run([]string{"blobs", "migrate", "--to", "s3"}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "does not match") {
		t.Fatalf("damaged blob: exit %d %s", code, stderr.String())
	}
	_ = os.WriteFile(path0, good0, 0o600)
	stderr.Reset()
	if code := run([]string{"blobs", "migrate", "--to", "s3", "--delete"}, &stdout, &stderr); code != 0 {
		t.Fatalf("migrate: exit %d %s", code, stderr.String())
	}
	for _, c := range cids {
		if _, err := os.Stat(blobstore.FilePath(s.app.cfg.BlobDir, c)); err == nil {
			t.Fatalf("local copy of %s kept with --delete", c)
		}
	}
	extra := map[string]string{"PDS_DATA_DIRECTORY": dataDir, "PDS_DID_PLC_URL": s.plc.URL}
	for k, v := range env {
		extra[k] = v
	}
	s2 := startServer(t, extra)
	for i, c := range cids {
		st, raw, _ := s2.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+c, nil, "")
		if st != 200 || !bytes.Equal(raw, blobs[i]) {
			t.Fatalf("getBlob %s from S3 after migration: %d, %d bytes", c, st, len(raw))
		}
	}
}

type rawResp struct {
	status int
	body   []byte
}

func newRangeRequest(u, rng string) (*http.Request, error) {
	req, err := http.NewRequest("GET", u, nil)
	if err == nil {
		req.Header.Set("Range", rng)
	}
	return req, err
}

func httpDo(req *http.Request) (*rawResp, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &rawResp{status: resp.StatusCode, body: b}, err
}
