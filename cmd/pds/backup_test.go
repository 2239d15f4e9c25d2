package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/backup"
	"github.com/pdsbox/pds/internal/testpds"
)

// fakeRelay answers getHostStatus with a cursor and counts requestCrawl.
type fakeRelay struct {
	*httptest.Server
	seq    atomic.Int64
	crawls atomic.Int64
}

func newFakeRelay(t *testing.T) *fakeRelay {
	r := &fakeRelay{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/xrpc/com.atproto.sync.getHostStatus":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"hostname": req.URL.Query().Get("hostname"), "seq": r.seq.Load(), "status": "active", "accountCount": 1})
		case "/xrpc/com.atproto.sync.requestCrawl":
			r.crawls.Add(1)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// consume reads frames from a subscription until the event with seq
// upTo, returning the highest seq seen.
func consumeUntil(t *testing.T, wsURL string, cursor, upTo int64) int64 {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(wsURL+"?cursor="+strconv.FormatInt(cursor, 10), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	last := cursor
	for last < upTo {
		h, body := testpds.ReadFrame(t, conn)
		if h.Op != 1 {
			t.Fatalf("error frame %q", body)
		}
		last = frameSeq(t, h.T, body)
	}
	return last
}

func frameSeq(t *testing.T, typ string, body []byte) int64 {
	t.Helper()
	switch typ {
	case "#commit":
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	case "#sync":
		var ev comatproto.SyncSubscribeRepos_Sync
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	case "#identity":
		var ev comatproto.SyncSubscribeRepos_Identity
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	case "#account":
		var ev comatproto.SyncSubscribeRepos_Account
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	}
	t.Fatalf("unexpected frame %s", typ)
	return 0
}

func backupEnv(t *testing.T, s *testServer, dataDir string) {
	u, _ := url.Parse(s.URL)
	t.Setenv("PDS_HOSTNAME", "localhost")
	t.Setenv("PDS_PORT", u.Port())
	t.Setenv("PDS_DATA_DIRECTORY", dataDir)
	t.Setenv("PDS_ADMIN_PASSWORD", "admin-secret")
	t.Setenv("PDS_DID_PLC_URL", s.plc.URL)
}

// TestBackupRestoreRelayCursor: write, back up the running server, write
// more (seen by a relay, then lost with the server), restore into an empty
// directory, start again: a relay client reconnecting with its cursor gets
// no FutureCursor and no reused seq, first a #sync of the restored head,
// then new valid commits; keys, records and blobs came back, and the
// restarted server asks the relay to crawl it.
func TestBackupRestoreRelayCursor(t *testing.T) {
	relay := newFakeRelay(t)
	dir1 := t.TempDir()
	s1 := startServer(t, map[string]string{"PDS_DATA_DIRECTORY": dir1, "PDS_CRAWLERS": relay.URL})
	did, access, _ := s1.createAccount(t)
	st, blob, _ := s1.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", pngBytes(t, 300_000), "image/png")
	if st != 200 {
		t.Fatalf("uploadBlob: %d %s", st, blob)
	}
	var up struct{ Blob map[string]any }
	_ = json.Unmarshal(blob, &up)
	withImage := post("with image")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": up.Blob}}}
	for _, rec := range []map[string]any{post("one"), post("two"), withImage} {
		st, out := s1.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": rec})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	_, headBefore := s1.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)

	backupEnv(t, s1, dir1)
	archive := filepath.Join(t.TempDir(), "pds-backup.tar")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "--out", archive}, &stdout, &stderr); code != 0 {
		t.Fatalf("backup of the running server: exit %d: %s", code, stderr.String())
	}
	m, err := readManifest(archive)
	if err != nil {
		t.Fatal(err)
	}
	if m.DID != did || m.HeadRev != headBefore["rev"] || m.BlobCount != 1 || m.LastSeq != s1.app.events.LastSeq() {
		t.Fatalf("manifest %+v, head %v, last seq %d", m, headBefore, s1.app.events.LastSeq())
	}
	backupSeq := m.LastSeq

	// Two more commits, which a relay consumes, then the server is lost.
	lost := map[string]bool{}
	for _, text := range []string{"lost one", "lost two"} {
		st, out := s1.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post(text)})
		wantStatus(t, "createRecord", st, out, 200, "")
		lost[out["uri"].(string)] = true
	}
	u1, _ := url.Parse(s1.URL)
	relayCursor := consumeUntil(t, "ws://"+u1.Host+"/xrpc/com.atproto.sync.subscribeRepos", 0, s1.app.events.LastSeq())
	relay.seq.Store(relayCursor)
	s1.stop()

	// Restoring over existing data is refused without --force.
	stderr.Reset()
	if code := run([]string{"restore", archive, "--data", dir1}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "not empty") {
		t.Fatalf("restore over data: exit %d: %s", code, stderr.String())
	}

	dir2 := t.TempDir()
	t.Setenv("PDS_DATA_DIRECTORY", dir2)
	stderr.Reset()
	stdout.Reset()
	const margin = 5
	if code := run([]string{"restore", archive, "--data", dir2, "--relay", relay.URL, "--seq-margin", strconv.Itoa(margin)}, &stdout, &stderr); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr.String())
	}
	t.Log(stdout.String())
	for _, k := range []string{"jwt-secret", "repo-signing-key.hex", "plc-rotation-key.hex"} {
		fi, err := os.Stat(filepath.Join(dir2, k))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("restored %s: %v %v", k, fi, err)
		}
	}

	s2 := startServer(t, map[string]string{"PDS_DATA_DIRECTORY": dir2, "PDS_CRAWLERS": relay.URL, "PDS_DID_PLC_URL": s1.plc.URL})
	crawlsBefore := relay.crawls.Load()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s2.app.crawler.Run(ctx)

	// The relay reconnects with its cursor.
	u2, _ := url.Parse(s2.URL)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u2.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor="+strconv.FormatInt(relayCursor, 10), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, body := testpds.ReadFrame(t, conn)
	if h.Op != 1 || h.T != "#sync" {
		t.Fatalf("first frame after restore: %+v %q, want #sync", h, body)
	}
	var syncEv comatproto.SyncSubscribeRepos_Sync
	if err := syncEv.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	t.Logf("relay cursor %d, backup seq %d, #sync seq %d", relayCursor, backupSeq, syncEv.Seq)
	if syncEv.Seq <= relayCursor+margin || syncEv.Did != did || syncEv.Rev != m.HeadRev {
		t.Fatalf("#sync %+v: relay cursor %d, backup seq %d", syncEv, relayCursor, backupSeq)
	}
	// Its commit block is the restored head, signed by the account key.
	if _, err := irepo.VerifySyncMessage(context.Background(), s1.directory(t, did), &syncEv); err != nil {
		t.Fatalf("#sync does not verify: %v", err)
	}

	// The old session still works: the keys came back.
	st, out := s2.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("after restore")})
	wantStatus(t, "createRecord after restore", st, out, 200, "")
	h, body = testpds.ReadFrame(t, conn)
	if h.T != "#commit" {
		t.Fatalf("frame after the #sync: %+v", h)
	}
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if ev.Seq != syncEv.Seq+1 || ev.Since == nil || *ev.Since != m.HeadRev {
		t.Fatalf("commit after restore: seq %d since %v", ev.Seq, ev.Since)
	}
	if _, err := irepo.VerifyCommitMessage(context.Background(), &ev); err != nil {
		t.Fatalf("commit after restore does not verify: %v", err)
	}

	// Records from before the backup are back, the lost ones are not, and
	// the blob is served with its bytes.
	st, list := s2.call(t, "GET", "com.atproto.repo.listRecords", "", "repo="+did+"&collection=app.bsky.feed.post&limit=100", nil)
	wantStatus(t, "listRecords", st, list, 200, "")
	recs := list["records"].([]any)
	if len(recs) != 4 {
		t.Fatalf("%d records after restore, want 4", len(recs))
	}
	for _, r := range recs {
		if lost[r.(map[string]any)["uri"].(string)] {
			t.Fatalf("a record written after the backup is back: %v", r)
		}
	}
	cidStr := up.Blob["ref"].(map[string]any)["$link"].(string)
	st, raw, _ := s2.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+cidStr, nil, "")
	if st != 200 || len(raw) != 300_000 {
		t.Fatalf("getBlob after restore: %d, %d bytes", st, len(raw))
	}

	deadline := time.Now().Add(10 * time.Second)
	for relay.crawls.Load() == crawlsBefore {
		if time.Now().After(deadline) {
			t.Fatal("the restored server did not send requestCrawl")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestoreRefusesDamagedArchive: a flipped byte in the database or a
// blob, or a truncated archive, is refused and leaves no database.
func TestRestoreRefusesDamagedArchive(t *testing.T) {
	dir1 := t.TempDir()
	s := startServer(t, map[string]string{"PDS_DATA_DIRECTORY": dir1})
	did, access, _ := s.createAccount(t)
	st, _, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", pngBytes(t, 10_000), "image/png")
	if st != 200 {
		t.Fatal(st)
	}
	_ = did
	var buf bytes.Buffer
	if _, err := backup.Write(context.Background(), &buf, s.app.backupSource()); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	dbAt := bytes.Index(good, []byte("pds.db")) + 2048 // inside the database's content
	blobAt := bytes.LastIndex(good, []byte("blobs/")) + 1024
	for _, tc := range []struct {
		name string
		mod  func([]byte) []byte
	}{
		{"database byte flipped", func(b []byte) []byte { b[dbAt] ^= 0xff; return b }},
		{"blob byte flipped", func(b []byte) []byte { b[blobAt] ^= 0xff; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"not an archive", func(b []byte) []byte { return []byte("hello") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(t.TempDir(), "a.tar")
			if err := os.WriteFile(file, tc.mod(bytes.Clone(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			err := restore(context.Background(), func(string) string { return "" }, file, dir, false, "", 10, io.Discard)
			if err == nil {
				t.Fatal("restored a damaged archive")
			}
			if _, serr := os.Stat(filepath.Join(dir, dbFile)); serr == nil {
				t.Fatalf("a database was left behind (%v)", err)
			}
		})
	}
	// The undamaged archive restores.
	file := filepath.Join(t.TempDir(), "a.tar")
	_ = os.WriteFile(file, good, 0o600)
	if err := restore(context.Background(), func(string) string { return "" }, file, t.TempDir(), false, "", 10, io.Discard); err != nil {
		t.Fatal(err)
	}
}

// directory is an identity directory holding did with the signing key
// its PLC operations publish (the oracle for signatures, independent of
// the server's own key file).
func (s *testServer) directory(t *testing.T, did string) identity.Directory {
	t.Helper()
	ops := s.plc.Ops(did)
	if len(ops) == 0 {
		t.Fatalf("%s is not in the PLC directory", did)
	}
	pub, err := atcrypto.ParsePublicDIDKey(ops[len(ops)-1].VerificationMethods["atproto"])
	if err != nil {
		t.Fatal(err)
	}
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{
		DID:  syntax.DID(did),
		Keys: map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}},
	})
	return dir
}

// TestBackupEndpointNeedsAdmin: the online backup is served only to the
// admin password, with the XRPC error envelope otherwise.
func TestBackupEndpointNeedsAdmin(t *testing.T) {
	s := startServer(t, nil)
	for _, tc := range []struct {
		user, pass string
		want       int
	}{
		{"", "", 401},
		{"admin", "wrong", 401},
		{"alice", "admin-secret", 401},
		{"admin", "admin-secret", 200},
	} {
		req, _ := http.NewRequest("GET", s.URL+opsPrefix+"backup", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s:%s: %d, want %d", tc.user, tc.pass, resp.StatusCode, tc.want)
		}
		if tc.want == 401 && !bytes.Contains(body, []byte(`"error":"AuthenticationRequired"`)) {
			t.Fatalf("401 body %q", body)
		}
	}
}
