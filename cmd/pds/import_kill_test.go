package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/internal/testpds"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// importKillRecords is the size of the repository TestImportKill9 imports:
// big enough that an import takes a while to kill in the middle of.
const importKillRecords = 20_000

// TestImportKill9: the real server, killed with SIGKILL at several points
// of an importRepo (a migrating account), restarts with the account exactly
// as it was before the import (deactivated, its empty first commit, no
// records), or, if the import went through, with all of the imported
// repository; never anything between. Then an import completes and
// survives a restart.
func TestImportKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	ctx := context.Background()
	plc := testpds.NewMockPLC(t)
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	rot, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	did, op, err := identity.PLCGenesis(rot, pub, "mover.test", "https://old.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := (&identity.PLCClient{URL: plc.URL}).Submit(ctx, did, op); err != nil {
		t.Fatal(err)
	}
	car, blocks := importKillCAR(t, did, key, importKillRecords)

	// An account migrating in, on a server in its own process.
	start := func(dataDir string) (*durHelper, *testServer, string) {
		h := startDurHelper(t, dataDir, plc.URL)
		hs := &testServer{URL: "http://" + h.host}
		st, desc := hs.call(t, "GET", "com.atproto.server.describeServer", "", "", nil)
		wantStatus(t, "describeServer", st, desc, 200, "")
		return h, hs, desc["did"].(string)
	}
	create := func(hs *testServer, serviceDID string) string {
		tok, err := auth.SignServiceJWT(key, did, serviceDID, "com.atproto.server.createAccount", time.Minute, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		st, out := hs.call(t, "POST", "com.atproto.server.createAccount", tok, "", map[string]any{
			"did": did.String(), "handle": "mover.test", "password": "hunter2-hunter2",
		})
		wantStatus(t, "createAccount", st, out, 200, "")
		return out["accessJwt"].(string)
	}
	importCAR := func(client *http.Client, hs *testServer, access string) error {
		req, err := http.NewRequest("POST", hs.URL+"/xrpc/com.atproto.repo.importRepo", bytes.NewReader(car))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/vnd.ipld.car")
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("importRepo: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	status := func(hs *testServer, access string) map[string]any {
		st, out := hs.call(t, "GET", "com.atproto.server.checkAccountStatus", access, "", nil)
		wantStatus(t, "checkAccountStatus", st, out, 200, "")
		delete(out, "validDid") // the DID document names another PDS throughout
		return out
	}

	// How long an import takes here, on a twin server.
	th, ths, tsvc := start(t.TempDir())
	tAccess := create(ths, tsvc)
	t0 := time.Now()
	if err := importCAR(http.DefaultClient, ths, tAccess); err != nil {
		t.Fatal(err)
	}
	full := time.Since(t0)
	after := status(ths, tAccess)
	th.kill(t)
	if after["indexedRecords"] != float64(importKillRecords) || after["repoBlocks"] != float64(blocks) || after["activated"] != false {
		t.Fatalf("a full import: %v, want %d records, %d blocks, deactivated", after, importKillRecords, blocks)
	}

	dataDir := t.TempDir()
	h, hs, svc := start(dataDir)
	access := create(hs, svc)
	before := status(hs, access)
	if before["indexedRecords"] != float64(0) || before["activated"] != false {
		t.Fatalf("before the import: %v", before)
	}
	old, imported := 0, false
	// Kills from early in the request to well after the twin's import time
	// (a restarted server is slower at first): the last ones let it end.
	for _, f := range []float64{0.2, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2, 3, 5} {
		client := &http.Client{Timeout: time.Minute}
		done := make(chan error, 1)
		go func() { done <- importCAR(client, hs, access) }()
		time.Sleep(time.Duration(f * float64(full)))
		h.kill(t)
		answered := <-done == nil
		// Whether the kill came while the import was writing its staging
		// area (repo's bucket "repo_import"), which the restart discards.
		staged := false
		if db, err := bolt.Open(filepath.Join(dataDir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second}); err == nil {
			_ = db.View(func(tx *bolt.Tx) error { staged = tx.Bucket([]byte("repo_import")) != nil; return nil })
			db.Close()
		}
		h, hs, _ = start(dataDir)
		got := status(hs, access)
		switch {
		case reflect.DeepEqual(got, before):
			if answered {
				t.Fatalf("kill at %.0f%%: importRepo answered 200, but the import is gone after the restart", f*100)
			}
			old++
		case got["indexedRecords"] == float64(importKillRecords) && got["repoBlocks"] == float64(blocks) && got["activated"] == false:
			imported = true
		default:
			t.Fatalf("kill at %.0f%% of %s: after the restart %v; before the import %v", f*100, full, got, before)
		}
		t.Logf("killed at %.0f%% of %s (staging area present: %v): %s", f*100, full, staged, map[bool]string{true: "imported", false: "as before"}[imported])
		if imported {
			break // from here on, the old state is the imported one
		}
	}
	if old == 0 {
		t.Fatal("no kill came before the import completed")
	}
	if !imported {
		if err := importCAR(&http.Client{Timeout: time.Minute}, hs, access); err != nil {
			t.Fatal(err)
		}
	}
	h.kill(t)
	_, hs, _ = start(dataDir)
	if got := status(hs, access); got["indexedRecords"] != float64(importKillRecords) || got["repoBlocks"] != float64(blocks) || got["activated"] != false {
		t.Fatalf("after the import and a restart: %v", got)
	}
}

// importKillCAR builds a repository of n posts signed by key and returns its
// CAR and its number of blocks.
func importKillCAR(t *testing.T, did syntax.DID, key atcrypto.PrivateKey, n int) ([]byte, int) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "src.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := repo.Open(db, did, key, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; {
		var ws []repo.Write
		for ; len(ws) < repo.MaxWrites && i < n; i++ {
			ws = append(ws, repo.Write{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(testTID(i)),
				Record: post(fmt.Sprintf("post number %d of the repository that moves", i))})
		}
		if _, err := r.Apply(context.Background(), ws, nil); err != nil {
			t.Fatal(err)
		}
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.ExportCAR(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st.Blocks
}
