package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// exModel tracks what a repository should hold: path → record CID and bytes.
type exModel struct {
	cids map[string]cid.Cid
	data map[cid.Cid][]byte
}

func newExModel() *exModel { return &exModel{cids: map[string]cid.Cid{}, data: map[cid.Cid][]byte{}} }

// apply applies the writes to r and to the exModel.
func (m *exModel) apply(t testing.TB, r *testRepo, ws ...Write) *Commit {
	t.Helper()
	c := mustApply(t, r, ws...)
	for _, w := range ws {
		if w.Action == ActionDelete {
			delete(m.cids, w.Path())
			continue
		}
		rc, data, err := EncodeRecord(w.Record)
		if err != nil {
			t.Fatal(err)
		}
		m.cids[w.Path()] = rc
		m.data[rc] = data
	}
	return c
}

func (m *exModel) paths() []string { return slices.Sorted(maps.Keys(m.cids)) }

var exCollections = []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"}

func exRecord(coll string, i int) map[string]any {
	return map[string]any{"$type": coll, "text": fmt.Sprintf("%s %d", coll, i), "n": int64(i), "createdAt": "2026-11-29T00:00:00.000Z"}
}

func exRKey(i int) string { return fmt.Sprintf("3kzz%09d", i) }

// writeMixedEx writes n creates in mixed collections from index start, then
// updates every 7th and deletes every 5th of them, in batches, and stores
// one record at two paths.
func writeMixedEx(t testing.TB, r *testRepo, m *exModel, start, n int) {
	t.Helper()
	var ws []Write
	flush := func() {
		if len(ws) > 0 {
			m.apply(t, r, ws...)
			ws = nil
		}
	}
	for i := start; i < start+n; i++ {
		coll := exCollections[i%len(exCollections)]
		ws = append(ws, create(coll, exRKey(i), exRecord(coll, i)))
		if len(ws) == 90 {
			flush()
		}
	}
	flush()
	for i := start; i < start+n; i++ {
		coll := exCollections[i%len(exCollections)]
		switch {
		case i%5 == 0:
			ws = append(ws, del(coll, exRKey(i)))
		case i%7 == 0:
			ws = append(ws, update(coll, exRKey(i), exRecord(coll, -i)))
		}
		if len(ws) == 50 {
			flush()
		}
	}
	flush()
	shared := post(fmt.Sprintf("shared %d", start))
	m.apply(t, r,
		create("app.bsky.feed.post", fmt.Sprintf("shared%da", start), shared),
		create("app.bsky.feed.post", fmt.Sprintf("shared%db", start), shared))
}

// checkTreeMatchesEx checks that tree holds exactly the exModel's paths and
// CIDs, and that every record block is in blocks with the exModel's bytes.
func checkTreeMatchesEx(t testing.TB, tree *imst.Tree, blocks map[cid.Cid][]byte, m *exModel) {
	t.Helper()
	got := map[string]cid.Cid{}
	if err := tree.Walk(func(k []byte, v cid.Cid) error {
		got[string(k)] = v
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(m.cids) {
		t.Fatalf("tree holds %d records, want %d", len(got), len(m.cids))
	}
	for p, c := range m.cids {
		if got[p] != c {
			t.Fatalf("%s is %s, want %s", p, got[p], c)
		}
		if b, ok := blocks[c]; !ok || !bytes.Equal(b, m.data[c]) {
			t.Fatalf("record block of %s missing or wrong", p)
		}
	}
}

// Issue acceptance 3: the export is a repository any implementation loads,
// signed, whose MST recomputes from scratch to the signed root and holds
// exactly what was written.
func TestExportCARIndigo(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	pub := impPub(t, r.key)
	if err := r.ExportCAR(ctx, &bytes.Buffer{}); !errors.Is(err, ErrNoHead) {
		t.Fatalf("export of no repository: %v", err)
	}
	m := newExModel()
	writeMixedEx(t, r, m, 0, 400)
	if len(m.cids) < 300 {
		t.Fatalf("only %d records", len(m.cids))
	}
	buf := impExport(t, r)

	sc, ir, err := irepo.LoadRepoFromCAR(ctx, bytes.NewReader(buf))
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.VerifySignature(pub); err != nil {
		t.Fatalf("signature: %v", err)
	}
	head, rev, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	if sc.DID != testDID.String() || sc.Rev != rev || sc.Prev != nil {
		t.Fatalf("commit %+v", sc)
	}
	cb := impReadCAR(t, buf)
	if len(cb.roots) != 1 || cb.roots[0] != head || cb.order[0] != head {
		t.Fatalf("roots %v, first block %s, head %s", cb.roots, cb.order[0], head)
	}
	if ir.MST.IsPartial() {
		t.Fatal("exported tree is partial")
	}
	checkTreeMatchesEx(t, &ir.MST, cb.blocks, m)

	// Recompute from the records alone.
	all := map[string]cid.Cid{}
	if err := ir.MST.Walk(func(k []byte, v cid.Cid) error {
		all[string(k)] = v
		_, _, err := ir.GetRecordBytes(ctx, syntax.NSID(strings.Split(string(k), "/")[0]), syntax.RecordKey(strings.Split(string(k), "/")[1]))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fresh, err := imst.LoadTreeFromMap(all)
	if err != nil {
		t.Fatal(err)
	}
	root, err := fresh.RootCID()
	if err != nil {
		t.Fatal(err)
	}
	if *root != sc.Data {
		t.Fatalf("recomputed root %s, commit data %s", root, sc.Data)
	}
	// Only reachable blocks are exported (and so stored).
	impCheckFullExport(t, r, pub)
}

func TestExportSince(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	m := newExModel()
	writeMixedEx(t, r, m, 0, 200)
	_, revR, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	atR := impReadCAR(t, impExport(t, r))
	deletedContent := m.data[m.cids["app.bsky.feed.post/"+exRKey(3)]]

	writeMixedEx(t, r, m, 200, 150)
	// A record deleted after R and written again: its block is gone, then
	// new again, so the diff must carry it.
	m.apply(t, r, del("app.bsky.feed.post", exRKey(3)))
	m.apply(t, r, create("app.bsky.feed.post", "again", exRecord("app.bsky.feed.post", 3)))
	if !bytes.Equal(m.data[m.cids["app.bsky.feed.post/again"]], deletedContent) {
		t.Fatal("test setup: not the same record")
	}
	head, headRev, _ := r.Head()

	var diff bytes.Buffer
	if err := r.ExportSince(ctx, &diff, revR); err != nil {
		t.Fatal(err)
	}
	d := impReadCAR(t, diff.Bytes())
	if len(d.roots) != 1 || d.roots[0] != head {
		t.Fatalf("diff roots %v, head %s", d.roots, head)
	}
	if _, ok := d.blocks[head]; !ok || d.order[0] != head {
		t.Fatal("diff does not start with the head commit")
	}
	if len(d.order) >= impCountBlocks(t, impExport(t, r)) {
		t.Fatalf("diff of %d blocks is not smaller than the repository", len(d.order))
	}
	checkLoadsHeadEx(t, unionBlocks(atR, d), head, m)

	// Since the head: the commit alone. Since nothing: everything.
	diff.Reset()
	if err := r.ExportSince(ctx, &diff, headRev); err != nil {
		t.Fatal(err)
	}
	if n := impCountBlocks(t, diff.Bytes()); n != 1 {
		t.Fatalf("since head: %d blocks", n)
	}
	diff.Reset()
	if err := r.ExportSince(ctx, &diff, ""); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(diff.Bytes(), impExport(t, r)) {
		t.Fatal("since \"\" is not the full export")
	}
	if err := r.ExportSince(ctx, &diff, "not-a-tid"); err == nil {
		t.Fatal("since not a TID accepted")
	}
}

func TestExportSinceChain(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	m := newExModel()
	m.apply(t, r, create("app.bsky.feed.post", "first", post("first")))
	have := impReadCAR(t, impExport(t, r))
	_, rev, _ := r.Head()
	for round := range 6 {
		writeMixedEx(t, r, m, 1000*round, 40+10*round)
		if round%2 == 1 {
			// Delete some of the previous round's records too.
			var ws []Write
			for i := 1000 * (round - 1); i < 1000*(round-1)+30; i += 3 {
				p := exCollections[i%len(exCollections)] + "/" + exRKey(i)
				if _, ok := m.cids[p]; ok {
					ws = append(ws, del(exCollections[i%len(exCollections)], exRKey(i)))
				}
			}
			m.apply(t, r, ws...)
		}
		var diff bytes.Buffer
		if err := r.ExportSince(ctx, &diff, rev); err != nil {
			t.Fatal(err)
		}
		have = unionBlocks(have, impReadCAR(t, diff.Bytes()))
		head, newRev, _ := r.Head()
		checkLoadsHeadEx(t, have, head, m)
		rev = newRev
	}
}

func unionBlocks(a, b *impCAR) *impCAR {
	out := &impCAR{roots: b.roots, blocks: maps.Clone(a.blocks)}
	out.order = slices.Clone(a.order)
	for _, c := range b.order {
		if _, ok := out.blocks[c]; !ok {
			out.order = append(out.order, c)
		}
		out.blocks[c] = b.blocks[c]
	}
	return out
}

// checkLoadsHeadEx checks that blocks hold the whole repository at head.
func checkLoadsHeadEx(t testing.TB, blocks *impCAR, head cid.Cid, m *exModel) {
	t.Helper()
	var sc irepo.Commit
	data, ok := blocks.blocks[head]
	if !ok {
		t.Fatal("head commit missing")
	}
	if err := sc.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	tree, err := imst.LoadTreeFromStore(context.Background(), blocks, sc.Data)
	if err != nil {
		t.Fatal(err)
	}
	if tree.IsPartial() {
		t.Fatal("the blocks do not hold the whole tree at head")
	}
	checkTreeMatchesEx(t, tree, blocks.blocks, m)
}

func TestRecordProof(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	pub := impPub(t, r.key)
	if _, err := r.RecordProof("app.bsky.feed.post", "x"); !errors.Is(err, ErrNoHead) {
		t.Fatalf("proof without a head: %v", err)
	}
	m := newExModel()
	writeMixedEx(t, r, m, 0, 300)
	head, _, _ := r.Head()

	check := func(coll, rkey string, want *cid.Cid) {
		t.Helper()
		b, err := r.RecordProof(syntax.NSID(coll), syntax.RecordKey(rkey))
		if err != nil {
			t.Fatal(err)
		}
		sc, root, err := irepo.LoadCommitFromCAR(ctx, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if *root != head {
			t.Fatalf("proof root %s, head %s", root, head)
		}
		if err := sc.VerifySignature(pub); err != nil {
			t.Fatal(err)
		}
		cb := impReadCAR(t, b)
		tree, err := imst.LoadTreeFromStore(ctx, cb, sc.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tree.Get([]byte(coll + "/" + rkey))
		if err != nil {
			t.Fatalf("%s/%s: %v", coll, rkey, err)
		}
		switch {
		case want == nil && got != nil:
			t.Fatalf("%s/%s: proof says %s, want absent", coll, rkey, got)
		case want != nil && (got == nil || *got != *want):
			t.Fatalf("%s/%s: proof says %v, want %s", coll, rkey, got, want)
		case want != nil:
			if !bytes.Equal(cb.blocks[*want], m.data[*want]) {
				t.Fatalf("%s/%s: record block missing from the proof", coll, rkey)
			}
		}
		// A proof is a path, not the repository.
		if len(cb.order) > 12 {
			t.Fatalf("proof of %d blocks", len(cb.order))
		}
	}
	for i, p := range m.paths() {
		if i%7 != 0 {
			continue
		}
		coll, rkey, _ := strings.Cut(p, "/")
		c := m.cids[p]
		check(coll, rkey, &c)
	}
	for _, p := range []string{
		"a.a.a/first", "zzz.zzz.zzz/last", "app.bsky.feed.post/" + exRKey(5), // deleted
		"app.bsky.feed.post/3kzz000000001x", "app.bsky.feed.like/zzzz", "app.bsky.feed.postx/a",
	} {
		coll, rkey, _ := strings.Cut(p, "/")
		check(coll, rkey, nil)
	}
}

func TestGetRecord(t *testing.T) {
	r := newTestRepo(t, Options{})
	m := newExModel()
	writeMixedEx(t, r, m, 0, 60)
	for _, p := range m.paths() {
		coll, rkey, _ := strings.Cut(p, "/")
		got, err := r.GetRecord(syntax.NSID(coll), syntax.RecordKey(rkey))
		if err != nil {
			t.Fatal(err)
		}
		if got.CID != m.cids[p] || !bytes.Equal(got.Data, m.data[got.CID]) || got.Collection.String() != coll || got.RKey.String() != rkey {
			t.Fatalf("%s: %+v", p, got)
		}
	}
	for _, p := range []string{"app.bsky.feed.post/" + exRKey(5), "app.bsky.feed.post/nope", "com.example.none/x"} {
		coll, rkey, _ := strings.Cut(p, "/")
		if _, err := r.GetRecord(syntax.NSID(coll), syntax.RecordKey(rkey)); !errors.Is(err, ErrRecordNotFound) {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

func TestListRecordsAndCollections(t *testing.T) {
	r := newTestRepo(t, Options{})
	if colls, err := r.Collections(); err != nil || len(colls) != 0 {
		t.Fatalf("collections of nothing: %v %v", colls, err)
	}
	m := newExModel()
	// Neighbouring collections that share a prefix with the one listed.
	const coll = "app.bsky.feed.post"
	neighbours := []string{"app.bsky.feed.pos", "app.bsky.feed.post.x", "app.bsky.feed.post0", "app.bsky.feed.postz"}
	var ws []Write
	for _, n := range neighbours {
		for i := range 3 {
			ws = append(ws, create(n, fmt.Sprintf("n%d", i), map[string]any{"$type": n}))
		}
	}
	m.apply(t, r, ws...)
	var want []string
	for batch := range 3 {
		ws = nil
		for i := range 83 {
			k := fmt.Sprintf("%c%03d", 'a'+batch, i)
			want = append(want, k)
			ws = append(ws, create(coll, k, post(k)))
		}
		m.apply(t, r, ws...)
	}
	slices.Sort(want)

	list := func(limit int, desc bool) []string {
		var out []string
		cursor := ""
		for pages := 0; ; pages++ {
			recs, next, err := r.ListRecords(coll, cursor, limit, desc)
			if err != nil {
				t.Fatal(err)
			}
			eff := limit
			if limit <= 0 || limit > MaxListLimit {
				eff = MaxListLimit
			}
			if len(recs) > eff {
				t.Fatalf("limit %d: page of %d", limit, len(recs))
			}
			for _, rec := range recs {
				if rec.Collection != coll || rec.CID != m.cids[coll+"/"+rec.RKey.String()] {
					t.Fatalf("record %+v", rec)
				}
				out = append(out, rec.RKey.String())
			}
			if next == "" {
				return out
			}
			if len(recs) == 0 || next != recs[len(recs)-1].RKey.String() {
				t.Fatalf("cursor %q after a page of %d", next, len(recs))
			}
			cursor = next
			if pages > 1000 {
				t.Fatal("no end")
			}
		}
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	for _, limit := range []int{1, 7, 83, 100, 249, 0, -1, 101, 1 << 30} {
		if got := list(limit, false); !slices.Equal(got, want) {
			t.Fatalf("limit %d ascending: %d records %v…", limit, len(got), got[:min(5, len(got))])
		}
		if got := list(limit, true); !slices.Equal(got, rev) {
			t.Fatalf("limit %d descending: %d records %v…", limit, len(got), got[:min(5, len(got))])
		}
	}
	// One page of the default limit, and an exact last page has no cursor.
	recs, next, _ := r.ListRecords(coll, "", 0, false)
	if len(recs) != MaxListLimit || next != want[MaxListLimit-1] {
		t.Fatalf("default page: %d, next %q", len(recs), next)
	}
	recs, next, _ = r.ListRecords(coll, want[len(want)-11], 10, false)
	if len(recs) != 10 || next != "" {
		t.Fatalf("exact last page: %d, next %q", len(recs), next)
	}
	// Cursors that are not keys, and cursors past either end.
	recs, _, _ = r.ListRecords(coll, "b0405", 3, false) // between b040 and b041
	if len(recs) != 3 || recs[0].RKey != "b041" {
		t.Fatalf("ascending from a gap: %v", recs)
	}
	recs, _, _ = r.ListRecords(coll, "b0405", 3, true)
	if len(recs) != 3 || recs[0].RKey != "b040" {
		t.Fatalf("descending from a gap: %v", recs)
	}
	if recs, next, _ := r.ListRecords(coll, "zzz", 5, false); len(recs) != 0 || next != "" {
		t.Fatalf("after the end: %v %q", recs, next)
	}
	if recs, next, _ := r.ListRecords(coll, "a", 5, true); len(recs) != 0 || next != "" {
		t.Fatalf("before the start, descending: %v %q", recs, next)
	}
	if recs, _, _ := r.ListRecords("com.example.empty", "", 5, true); len(recs) != 0 {
		t.Fatalf("empty collection: %v", recs)
	}
	for _, n := range neighbours {
		for _, desc := range []bool{false, true} {
			recs, _, _ := r.ListRecords(syntax.NSID(n), "", 50, desc)
			if len(recs) != 3 {
				t.Fatalf("%s: %d records", n, len(recs))
			}
		}
	}

	wantColls := append([]string{coll}, neighbours...)
	checkColls := func() {
		t.Helper()
		slices.Sort(wantColls)
		got, err := r.Collections()
		if err != nil {
			t.Fatal(err)
		}
		var gs []string
		for _, c := range got {
			gs = append(gs, c.String())
		}
		if !slices.Equal(gs, wantColls) {
			t.Fatalf("collections %v, want %v", gs, wantColls)
		}
	}
	checkColls()
	// A collection whose records are all deleted is gone.
	m.apply(t, r, del("app.bsky.feed.post0", "n0"), del("app.bsky.feed.post0", "n1"), del("app.bsky.feed.post0", "n2"))
	wantColls = slices.DeleteFunc(wantColls, func(s string) bool { return s == "app.bsky.feed.post0" })
	checkColls()
}
