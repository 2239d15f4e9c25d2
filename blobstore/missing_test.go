package blobstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"

	"github.com/pdsbox/pds/blobstore"
)

// TestImportedRefs follows the blobs of an imported repository: references
// to blobs not uploaded yet are listed as missing (paged), counted as
// expected, and become referenced blobs (kept by GC) when they arrive.
func TestImportedRefs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, blobstore.Config{TempGrace: time.Minute})
	// A blob of the repository before the import, no longer referenced
	// after it, and one that the import references and is already here.
	old := e.upload(t, randomBytes(t, 100))
	kept := e.upload(t, randomBytes(t, 100))
	if err := e.updateRefs(blobstore.RefChange{Path: "app.bsky.feed.post/old", Blobs: []cid.Cid{old.CID, kept.CID}}); err != nil {
		t.Fatal(err)
	}
	const n = 25
	var data [][]byte
	var changes []blobstore.RefChange
	for i := range n {
		b := randomBytes(t, 200+i)
		data = append(data, b)
		c := rawCID(t, b)
		// Each blob twice: in a post and in a second record.
		changes = append(changes,
			blobstore.RefChange{Path: fmt.Sprintf("app.bsky.feed.post/%03d", i), Blobs: []cid.Cid{c, c, kept.CID}},
			blobstore.RefChange{Path: fmt.Sprintf("app.bsky.feed.like/%03d", i), Blobs: []cid.Cid{c}})
	}
	if err := e.db.Update(func(tx *bolt.Tx) error { return e.store.ReplaceRefs(tx, changes) }); err != nil {
		t.Fatal(err)
	}
	if got := e.refs(t, old.CID); got != 0 {
		t.Fatalf("old blob has %d refs after the import", got)
	}
	if got := e.refs(t, kept.CID); got != n {
		t.Fatalf("kept blob has %d refs, want %d", got, n)
	}
	assertCounts(t, e, n+1, 1)

	// Paged listing: every missing blob once, in order, with a record path.
	seen := map[cid.Cid]string{}
	cursor, pages := "", 0
	for {
		page, next, err := e.store.ListMissing(ctx, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range page {
			if _, dup := seen[m.CID]; dup {
				t.Fatalf("%s listed twice", m.CID)
			}
			seen[m.CID] = m.Path
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != n || pages != 3 {
		t.Fatalf("%d missing in %d pages, want %d in 3", len(seen), pages, n)
	}
	for i, b := range data {
		if p := seen[rawCID(t, b)]; p != fmt.Sprintf("app.bsky.feed.post/%03d", i) {
			t.Fatalf("blob %d listed with path %q", i, p)
		}
	}

	// Uploads make them present and referenced twice.
	for i, b := range data[:10] {
		info := e.upload(t, b)
		if info.Refs != 2 {
			t.Fatalf("blob %d uploaded with %d refs, want 2", i, info.Refs)
		}
	}
	assertCounts(t, e, n+1, 11)
	// A deleted record releases its reference to a missing blob too.
	if err := e.updateRefs(blobstore.RefChange{Path: "app.bsky.feed.post/020"}, blobstore.RefChange{Path: "app.bsky.feed.like/020"}); err != nil {
		t.Fatal(err)
	}
	assertCounts(t, e, n, 11)
	// GC keeps the uploaded ones, collects the old one.
	e.clock.Advance(2 * time.Minute)
	if _, err := e.store.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Stat(ctx, old.CID); err == nil {
		t.Fatal("the pre-import blob survived GC")
	}
	for _, b := range data[:10] {
		if got := e.refs(t, rawCID(t, b)); got != 2 {
			t.Fatalf("uploaded blob has %d refs", got)
		}
	}
	for _, b := range data[10:] {
		e.upload(t, b)
	}
	assertCounts(t, e, n, n) // the blob of the deleted records is back but unreferenced
	if page, next, err := e.store.ListMissing(ctx, "", 100); err != nil || len(page) != 0 || next != "" {
		t.Fatalf("missing after all uploads: %v %q %v", page, next, err)
	}

	// Deleting everything leaves no blob, file or reference.
	if err := e.store.DeleteAll(ctx); err != nil {
		t.Fatal(err)
	}
	if f := e.files(t, "blobs"); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
	if k := e.metaKeys(t); len(k) != 0 {
		t.Fatalf("metadata left: %v", k)
	}
	assertCounts(t, e, 0, 0)
}

func assertCounts(t *testing.T, e *env, expected, imported int) {
	t.Helper()
	ex, im, err := e.store.Counts(context.Background())
	if err != nil || ex != expected || im != imported {
		t.Fatalf("counts expected=%d imported=%d (%v), want %d %d", ex, im, err, expected, imported)
	}
}
