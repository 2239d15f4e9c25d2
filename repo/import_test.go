package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"testing/iotest"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
)

// newTestRepoKey is newTestRepo with a given signing key and DID.
func newTestRepoKey(t testing.TB, did syntax.DID, key atcrypto.PrivateKeyExportable, opts Options) *testRepo {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pds.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := Open(db, did, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testRepo{Repo: r, db: db, path: path, key: key}
}

func impPub(t testing.TB, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func impExport(t testing.TB, r *testRepo) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.ExportCAR(context.Background(), &buf); err != nil {
		t.Fatalf("export: %v", err)
	}
	return buf.Bytes()
}

// impState is everything a reader can observe of a repository.
type impState struct {
	head    cid.Cid
	rev     string
	records map[string]string // path → CID
	export  []byte
}

func impStateOf(t testing.TB, r *testRepo) impState {
	t.Helper()
	s := impState{records: map[string]string{}}
	var err error
	s.head, s.rev, err = r.Head()
	if errors.Is(err, ErrNoHead) {
		return s
	}
	if err != nil {
		t.Fatal(err)
	}
	colls, err := r.Collections()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range colls {
		cursor := ""
		for {
			recs, next, err := r.ListRecords(c, cursor, MaxListLimit, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				s.records[c.String()+"/"+rec.RKey.String()] = rec.CID.String()
			}
			if next == "" {
				break
			}
			cursor = next
		}
	}
	s.export = impExport(t, r)
	return s
}

func impAssertSame(t testing.TB, want, got impState) {
	t.Helper()
	if want.head != got.head || want.rev != got.rev {
		t.Fatalf("head %s %s, want %s %s", got.head, got.rev, want.head, want.rev)
	}
	if len(want.records) != len(got.records) {
		t.Fatalf("%d records, want %d", len(got.records), len(want.records))
	}
	for k, v := range want.records {
		if got.records[k] != v {
			t.Fatalf("record %s is %q, want %q", k, got.records[k], v)
		}
	}
	if !bytes.Equal(want.export, got.export) {
		t.Fatalf("export differs (%d vs %d bytes)", len(got.export), len(want.export))
	}
}

// impFill writes n posts in two collections, plus one record stored at two
// paths, and returns the expected path → CID map.
func impFill(t testing.TB, r *testRepo, n int) map[string]cid.Cid {
	t.Helper()
	want := map[string]cid.Cid{}
	var ws []Write
	for i := range n {
		coll := "app.bsky.feed.post"
		rec := post(fmt.Sprintf("post %d", i))
		if i%3 == 0 {
			coll = "app.bsky.feed.like"
			rec = map[string]any{"$type": coll, "subject": fmt.Sprintf("at://x/%d", i), "createdAt": "2026-11-29T00:00:00.000Z"}
		}
		w := create(coll, fmt.Sprintf("3kaaaaaa%05d", i), rec)
		c, _, err := EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		want[w.Path()] = c
		ws = append(ws, w)
		if len(ws) == 100 {
			mustApply(t, r, ws...)
			ws = nil
		}
	}
	same := post("twice")
	c, _, _ := EncodeRecord(same)
	ws = append(ws, create("app.bsky.feed.post", "twice1", same), create("app.bsky.feed.post", "twice2", same))
	want["app.bsky.feed.post/twice1"], want["app.bsky.feed.post/twice2"] = c, c
	mustApply(t, r, ws...)
	return want
}

func TestImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := newTestRepo(t, Options{})
	want := impFill(t, src, 250)
	pub := impPub(t, src.key)
	srcState := impStateOf(t, src)

	var hooked []*Commit
	dst := newTestRepo(t, Options{BeforeCommit: func(tx *bolt.Tx, c *Commit) error {
		hooked = append(hooked, c)
		return nil
	}})
	dstPub := impPub(t, dst.key)
	// The target has content of its own, which the import replaces.
	mustApply(t, dst, create("app.bsky.feed.repost", "old", map[string]any{"$type": "app.bsky.feed.repost"}))
	hooked = nil

	c, err := dst.ImportCAR(ctx, bytes.NewReader(srcState.export), pub, ImportOptions{})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	// A new commit over the imported tree, signed by the target's key, with
	// a rev after the imported one.
	if c.CID == srcState.head || c.Rev <= srcState.rev || c.ImportedRev != srcState.rev || c.DID != testDID || c.Ops != nil || c.Since != nil || c.PrevData != nil {
		t.Fatalf("import commit %+v (source head %s %s)", c, srcState.head, srcState.rev)
	}
	if c.Data != impDataOf(t, srcState.export) {
		t.Fatalf("imported data %s, source %s", c.Data, impDataOf(t, srcState.export))
	}
	if len(hooked) != 1 || hooked[0] != c {
		t.Fatalf("BeforeCommit ran %d times", len(hooked))
	}
	// The #sync blocks: a CAR of the commit block alone, rooted at it.
	sc, root, err := irepo.LoadCommitFromCAR(ctx, bytes.NewReader(c.CAR))
	if err != nil || *root != c.CID || sc.Data != c.Data || sc.Rev != c.Rev || sc.VerifySignature(dstPub) != nil {
		t.Fatalf("sync CAR: %v", err)
	}
	if sc.VerifySignature(pub) == nil {
		t.Fatal("the new head still verifies with the source key")
	}
	if !bytes.Equal(c.CAR, c.SyncCAR()) {
		t.Fatal("CAR is not the #sync CAR")
	}
	if n := impCountBlocks(t, c.CAR); n != 1 {
		t.Fatalf("sync CAR has %d blocks", n)
	}
	if head, rev, err := dst.Head(); err != nil || head != c.CID || rev != c.Rev {
		t.Fatalf("head %s %s %v, want %s %s", head, rev, err, c.CID, c.Rev)
	}

	got := impStateOf(t, dst)
	impAssertSameRecords(t, srcState, got)
	checkIntegrity(t, dst.db) // refcounts, block revs, index, reachability
	st, err := dst.Stats()
	if err != nil || st.Commit != c.CID || st.Rev != c.Rev || st.Records != len(want) || st.Blocks != impCountBlocks(t, got.export) {
		t.Fatalf("stats %+v %v; want %d records, %d blocks", st, err, len(want), impCountBlocks(t, got.export))
	}
	if len(got.records) != len(want) {
		t.Fatalf("%d records, want %d", len(got.records), len(want))
	}
	for p, c := range want {
		coll, rkey, _ := syntax.ParseRepoPath(p)
		rec, err := dst.GetRecord(coll, rkey)
		if err != nil || rec.CID != c {
			t.Fatalf("%s: %v %v", p, rec, err)
		}
	}
	if _, err := dst.GetRecord("app.bsky.feed.repost", "old"); !errors.Is(err, ErrRecordNotFound) {
		t.Fatalf("old record survived the import: %v", err)
	}

	// Writes continue from the imported head, with revs after it, and the
	// shared record block is refcounted per path.
	next := mustApply(t, dst, del("app.bsky.feed.post", "twice1"), create("app.bsky.feed.post", "after", post("after")))
	verifyCommit(t, next, dstPub, c)
	if rec, err := dst.GetRecord("app.bsky.feed.post", "twice2"); err != nil || rec.CID != want["app.bsky.feed.post/twice2"] {
		t.Fatalf("shared record after deleting one path: %v", err)
	}
	next2 := mustApply(t, dst, del("app.bsky.feed.post", "twice2"))
	verifyCommit(t, next2, dstPub, next)
	var diff bytes.Buffer
	if err := dst.ExportSince(ctx, &diff, c.Rev); err != nil {
		t.Fatal(err)
	}
	impCheckFullExport(t, dst, dstPub)
	checkIntegrity(t, dst.db)
}

// impDataOf returns the MST root of the commit a CAR is rooted at.
func impDataOf(t testing.TB, car []byte) cid.Cid {
	t.Helper()
	sc, _, err := irepo.LoadCommitFromCAR(context.Background(), bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	return sc.Data
}

// impAssertSameRecords checks that two repositories hold the same records
// under the same MST root, whatever their commits.
func impAssertSameRecords(t testing.TB, want, got impState) {
	t.Helper()
	if impDataOf(t, want.export) != impDataOf(t, got.export) {
		t.Fatalf("MST root %s, want %s", impDataOf(t, got.export), impDataOf(t, want.export))
	}
	if len(want.records) != len(got.records) {
		t.Fatalf("%d records, want %d", len(got.records), len(want.records))
	}
	for k, v := range want.records {
		if got.records[k] != v {
			t.Fatalf("record %s is %q, want %q", k, got.records[k], v)
		}
	}
}

// impCheckFullExport loads the repository's export with indigo and checks that
// it is complete and every stored block is reachable.
func impCheckFullExport(t testing.TB, r *testRepo, pub atcrypto.PublicKey) {
	t.Helper()
	ctx := context.Background()
	buf := impExport(t, r)
	sc, ir, err := irepo.LoadRepoFromCAR(ctx, bytes.NewReader(buf))
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.VerifySignature(pub); err != nil {
		t.Fatal(err)
	}
	if ir.MST.IsPartial() {
		t.Fatal("partial tree")
	}
	reachable := 1 // the commit
	seen := map[cid.Cid]bool{}
	err = ir.MST.Walk(func(k []byte, v cid.Cid) error {
		if _, _, err := ir.GetRecordBytes(ctx, syntax.NSID(bytes.Split(k, []byte("/"))[0]), syntax.RecordKey(bytes.Split(k, []byte("/"))[1])); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if !seen[v] {
			seen[v] = true
			reachable++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reachable += impCountNodes(ir.MST.Root)
	if n := impCountBlocks(t, buf); n != reachable {
		t.Fatalf("export has %d blocks, %d reachable", n, reachable)
	}
}

func impCountNodes(n *imst.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, e := range n.Entries {
		if e.Child != nil {
			c += impCountNodes(e.Child)
		}
	}
	return c
}

func impCountBlocks(t testing.TB, b []byte) int {
	t.Helper()
	return len(impReadCAR(t, b).order)
}

// impCAR is the content of a CAR, in order.
type impCAR struct {
	roots  []cid.Cid
	order  []cid.Cid
	blocks map[cid.Cid][]byte
}

func impReadCAR(t testing.TB, b []byte) *impCAR {
	t.Helper()
	br, err := carv2.NewBlockReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out := &impCAR{roots: br.Roots, blocks: map[cid.Cid][]byte{}}
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out.order = append(out.order, blk.Cid())
		out.blocks[blk.Cid()] = blk.RawData()
	}
	return out
}

// Get makes impCAR an indigo block source (missing blocks are
// ipld.ErrNotFound, as indigo expects of partial trees).
func (c *impCAR) Get(_ context.Context, k cid.Cid) (blocks.Block, error) {
	b, ok := c.blocks[k]
	if !ok {
		return nil, &ipld.ErrNotFound{Cid: k}
	}
	return blocks.NewBlockWithCid(b, k)
}

// impBlock is a block to put in a crafted CAR.
type impBlock struct {
	c    cid.Cid
	data []byte
}

// impWriteCAR frames a CAR v1 with any roots and blocks, as given.
func impWriteCAR(t testing.TB, roots []cid.Cid, blocks []impBlock) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: roots, Version: 1}, &buf); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := writeCARBlock(&buf, b.c, b.data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func impCBORBlock(t testing.TB, data []byte) impBlock {
	t.Helper()
	c, err := cidBuilder.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return impBlock{c, data}
}

func impCommitBlock(t testing.TB, key atcrypto.PrivateKey, did string, data cid.Cid, rev string) impBlock {
	t.Helper()
	sc := irepo.Commit{DID: did, Version: irepo.ATPROTO_REPO_VERSION, Data: data, Rev: rev}
	if err := sc.Sign(key); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sc.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	return impCBORBlock(t, buf.Bytes())
}

func impNodeBlock(t testing.TB, nd imst.NodeData) impBlock {
	t.Helper()
	b, c, err := nd.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return impBlock{*c, b}
}

func impRecordBlock(t testing.TB, rec map[string]any) impBlock {
	t.Helper()
	c, b, err := EncodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return impBlock{c, b}
}

// impKeysAtHeight returns n distinct valid paths of the given MST height, in
// order.
func impKeysAtHeight(h, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("app.bsky.feed.post/k%06d", i)
		if mst.HeightForKey([]byte(k)) == h {
			out = append(out, k)
		}
	}
	return out
}

// impLeafEntries encodes sorted keys, all of one height, as node entries.
func impLeafEntries(keys []string, val cid.Cid) []imst.EntryData {
	var out []imst.EntryData
	prev := ""
	for _, k := range keys {
		p := imst.CountPrefixLen([]byte(prev), []byte(k))
		out = append(out, imst.EntryData{PrefixLen: int64(p), KeySuffix: []byte(k[p:]), Value: val})
		prev = k
	}
	return out
}

const impRev = "3kaaaaaaaaaa2"

// classify splits an export's blocks into commit, MST nodes and records.
func impClassify(t testing.TB, cb *impCAR) (commit cid.Cid, nodes, records []cid.Cid) {
	t.Helper()
	commit = cb.roots[0]
	for _, c := range cb.order {
		if c == commit {
			continue
		}
		m, err := atdata.UnmarshalCBOR(cb.blocks[c])
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m["$type"]; ok {
			records = append(records, c)
		} else {
			nodes = append(nodes, c)
		}
	}
	return commit, nodes, records
}

func impWithout(cb *impCAR, drop cid.Cid) []impBlock {
	var out []impBlock
	for _, c := range cb.order {
		if c != drop {
			out = append(out, impBlock{c, cb.blocks[c]})
		}
	}
	return out
}

func impAll(cb *impCAR) []impBlock { return impWithout(cb, cid.Undef) }

func TestImportRejects(t *testing.T) {
	ctx := context.Background()
	src := newTestRepo(t, Options{})
	impFill(t, src, 120)
	pub := impPub(t, src.key)
	good := impExport(t, src)
	cb := impReadCAR(t, good)
	commitCID, nodes, records := impClassify(t, cb)
	if len(nodes) < 3 || len(records) < 10 {
		t.Fatalf("%d nodes, %d records: too small a tree", len(nodes), len(records))
	}
	var sc irepo.Commit
	if err := sc.UnmarshalCBOR(bytes.NewReader(cb.blocks[commitCID])); err != nil {
		t.Fatal(err)
	}
	other, _ := atcrypto.GeneratePrivateKeyK256()

	// Re-sign the same tree with a changed commit.
	resigned := func(key atcrypto.PrivateKey, did string, data cid.Cid, rev string) []byte {
		nc := impCommitBlock(t, key, did, data, rev)
		return impWriteCAR(t, []cid.Cid{nc.c}, append(impWithout(cb, commitCID), nc))
	}
	// A one-node tree of the given entries, with its record, signed.
	rec := impRecordBlock(t, post("x"))
	oneNode := func(nd imst.NodeData, extra ...impBlock) []byte {
		n := impNodeBlock(t, nd)
		c := impCommitBlock(t, src.key, testDID.String(), n.c, impRev)
		return impWriteCAR(t, []cid.Cid{c.c}, append([]impBlock{c, n, rec}, extra...))
	}
	h0 := impKeysAtHeight(0, 3)
	h1 := impKeysAtHeight(1, 2)

	// A block whose bytes do not match its CID.
	tampered := impAll(cb)
	for i := range tampered {
		if tampered[i].c == records[0] {
			d := bytes.Clone(tampered[i].data)
			d[len(d)-1] ^= 1
			tampered[i].data = d
		}
	}
	// A record whose CID is not sha2-256.
	sha512Rec := func() []byte {
		c, _ := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_512).Sum(rec.data)
		return oneNode(imst.NodeData{Entries: impLeafEntries(h0[:1], c)}, impBlock{c, rec.data})
	}()
	// A child node under a sha2-512 CID: every node decodes and the keys are
	// in order, but the tree does not recompute to the commit's data.
	sha512Child := func() []byte {
		leaf := impNodeBlock(t, imst.NodeData{Entries: impLeafEntries(h0[:1], rec.c)})
		c512, _ := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_512).Sum(leaf.data)
		var root imst.NodeData
		if h0[0] < h1[0] {
			root = imst.NodeData{Left: &c512, Entries: impLeafEntries(h1[:1], rec.c)}
		} else {
			root = imst.NodeData{Entries: impLeafEntries(h1[:1], rec.c)}
			root.Entries[0].Right = &c512
		}
		return oneNode(root, impBlock{c512, leaf.data})
	}()
	badRecord := impCBORBlock(t, []byte{0xa1, 0x61, 0x61, 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}) // {"a": 1.5}
	noType := impRecordBlock(t, map[string]any{"text": "untyped"})

	cases := []struct {
		name string
		car  []byte
		opts ImportOptions
	}{
		{"empty", nil, ImportOptions{}},
		{"garbage", []byte("this is not a CAR file at all, not even close"), ImportOptions{}},
		{"truncated header", good[:10], ImportOptions{}},
		{"truncated block", good[:len(good)-7], ImportOptions{}},
		{"truncated to half", good[:len(good)/2], ImportOptions{}},
		{"no roots", impWriteCAR(t, nil, impAll(cb)), ImportOptions{}},
		{"two roots", impWriteCAR(t, []cid.Cid{commitCID, commitCID}, impAll(cb)), ImportOptions{}},
		{"root missing", impWriteCAR(t, []cid.Cid{commitCID}, impWithout(cb, commitCID)), ImportOptions{}},
		{"root not a commit", impWriteCAR(t, []cid.Cid{nodes[0]}, impAll(cb)), ImportOptions{}},
		{"root is a record", impWriteCAR(t, []cid.Cid{records[0]}, impAll(cb)), ImportOptions{}},
		{"signed by another key", resigned(other, testDID.String(), sc.Data, sc.Rev), ImportOptions{}},
		{"another DID", resigned(src.key, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", sc.Data, sc.Rev), ImportOptions{}},
		{"rev not a TID", resigned(src.key, testDID.String(), sc.Data, "1"), ImportOptions{}},
		{"rev of TID length but not a TID", resigned(src.key, testDID.String(), sc.Data, "zzzzzzzzzzzzz"), ImportOptions{}},
		{"rev in the future", resigned(src.key, testDID.String(), sc.Data, syntax.NewTID(time.Now().Add(time.Hour).UnixMicro(), 0).String()), ImportOptions{}},
		{"rev at the end of time", resigned(src.key, testDID.String(), sc.Data, "jzzzzzzzzzzzz"), ImportOptions{}},
		{"rev a date", resigned(src.key, testDID.String(), sc.Data, "2026-01-01T00:00:00Z"), ImportOptions{}},
		{"data root missing", resigned(src.key, testDID.String(), rec.c, sc.Rev), ImportOptions{}},
		{"missing MST node", impWriteCAR(t, []cid.Cid{commitCID}, impWithout(cb, nodes[len(nodes)/2])), ImportOptions{}},
		{"missing MST root", impWriteCAR(t, []cid.Cid{commitCID}, impWithout(cb, sc.Data)), ImportOptions{}},
		{"missing record", impWriteCAR(t, []cid.Cid{commitCID}, impWithout(cb, records[len(records)/2])), ImportOptions{}},
		{"block not matching its CID", impWriteCAR(t, []cid.Cid{commitCID}, tampered), ImportOptions{}},
		{"over MaxBytes", good, ImportOptions{MaxBytes: int64(len(good)) - 1}},
		{"over MaxBlocks", good, ImportOptions{MaxBlocks: len(cb.order) - 1}},
		{"over MaxBlockBytes", good, ImportOptions{MaxBlockBytes: 64}},
		{"keys out of order", oneNode(imst.NodeData{Entries: []imst.EntryData{
			{KeySuffix: []byte(h0[1]), Value: rec.c},
			{KeySuffix: []byte(h0[0]), Value: rec.c},
		}}), ImportOptions{}},
		{"duplicate key", oneNode(imst.NodeData{Entries: []imst.EntryData{
			{KeySuffix: []byte(h0[0]), Value: rec.c},
			{PrefixLen: int64(len(h0[0])), Value: rec.c},
		}}), ImportOptions{}},
		{"keys of two heights in one node", oneNode(imst.NodeData{Entries: impLeafEntries(impSorted(h0[0], h1[0]), rec.c)}), ImportOptions{}},
		{"child pointer at height 0", oneNode(imst.NodeData{Left: &rec.c, Entries: impLeafEntries(h0[:1], rec.c)}), ImportOptions{}},
		{"key at the wrong height", func() []byte {
			leaf := impNodeBlock(t, imst.NodeData{Entries: impLeafEntries(h1[:1], rec.c)})
			return oneNode(imst.NodeData{Left: &leaf.c, Entries: impLeafEntries(h1[1:], rec.c)}, leaf)
		}(), ImportOptions{}},
		{"non-canonical prefix", oneNode(imst.NodeData{Entries: []imst.EntryData{
			{KeySuffix: []byte(h0[0]), Value: rec.c},
			{KeySuffix: []byte(h0[1]), Value: rec.c},
		}}), ImportOptions{}},
		{"key not a repo path", oneNode(imst.NodeData{Entries: impLeafEntries([]string{impKeyAtHeight0("not-a-path")}, rec.c)}), ImportOptions{}},
		{"record CID not sha2-256", sha512Rec, ImportOptions{}},
		{"node under a sha2-512 CID", sha512Child, ImportOptions{}},
		{"record not atproto data", oneNode(imst.NodeData{Entries: impLeafEntries(h0[:1], badRecord.c)}, badRecord), ImportOptions{}},
		{"record without $type", oneNode(imst.NodeData{Entries: impLeafEntries(h0[:1], noType.c)}, noType), ImportOptions{}},
		{"root without keys", oneNode(imst.NodeData{Left: &sc.Data}), ImportOptions{}},
	}
	// Sanity: the crafting helpers make an importable CAR when nothing is
	// wrong, so each case fails for its own reason.
	okCAR := oneNode(imst.NodeData{Entries: impLeafEntries(h0, rec.c)})

	dst := newTestRepoKey(t, testDID, src.key, Options{})
	impFill(t, dst, 30)
	before := impStateOf(t, dst)
	snap := snapshotDB(t, dst.db)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dst.ImportCAR(ctx, bytes.NewReader(tc.car), pub, tc.opts)
			if !errors.Is(err, ErrInvalidCAR) {
				t.Fatalf("err = %v, want ErrInvalidCAR (commit %v)", err, c)
			}
			t.Log(err)
			impAssertSame(t, before, impStateOf(t, dst))
			assertSnapshot(t, dst.db, snap)
		})
	}
	t.Run("control", func(t *testing.T) {
		fresh := newTestRepoKey(t, testDID, src.key, Options{})
		if _, err := fresh.ImportCAR(ctx, bytes.NewReader(okCAR), pub, ImportOptions{}); err != nil {
			t.Fatalf("crafted CAR: %v", err)
		}
		// Blocks the commit does not reach are dropped; an old rev is fine.
		junk := impRecordBlock(t, post("unreachable"))
		oldRev := impCommitBlock(t, src.key, testDID.String(), sc.Data, "2222222222222")
		withJunk := impWriteCAR(t, []cid.Cid{oldRev.c}, append(impWithout(cb, commitCID), junk, oldRev))
		imported, err := fresh.ImportCAR(ctx, bytes.NewReader(withJunk), pub, ImportOptions{})
		if err != nil {
			t.Fatalf("CAR with an unreachable block: %v", err)
		}
		if _, ok := impReadCAR(t, impExport(t, fresh)).blocks[junk.c]; ok {
			t.Fatal("unreachable block imported")
		}
		checkIntegrity(t, fresh.db)
		next := mustApply(t, fresh, create("app.bsky.feed.post", "n", post("n")))
		if imported.Rev <= "2222222222222" || next.Rev <= imported.Rev || next.Since == nil || *next.Since != imported.Rev {
			t.Fatalf("rev after an old import: %s since %v", next.Rev, next.Since)
		}
		if _, err := fresh.ImportCAR(ctx, bytes.NewReader(good), pub, ImportOptions{MaxBytes: int64(len(good)), MaxBlocks: len(cb.order)}); err != nil {
			t.Fatalf("CAR at exactly the bounds: %v", err)
		}
		impCheckFullExport(t, fresh, pub)
		checkIntegrity(t, fresh.db)
	})
}

func impSorted(s ...string) []string { slices.Sort(s); return s }

// impKeyAtHeight0 returns prefix+N with MST height 0.
func impKeyAtHeight0(prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if mst.HeightForKey([]byte(k)) == 0 {
			return k
		}
	}
}

func TestImportBeforeCommitError(t *testing.T) {
	ctx := context.Background()
	src := newTestRepo(t, Options{})
	impFill(t, src, 20)
	good := impExport(t, src)
	boom := errors.New("boom")
	dst := newTestRepoKey(t, testDID, src.key, Options{BeforeCommit: func(*bolt.Tx, *Commit) error { return boom }})
	before := impStateOf(t, dst)
	if _, err := dst.ImportCAR(ctx, bytes.NewReader(good), impPub(t, src.key), ImportOptions{}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	impAssertSame(t, before, impStateOf(t, dst))
}

func TestImportEmptyRepo(t *testing.T) {
	ctx := context.Background()
	src := newTestRepo(t, Options{})
	if _, err := src.Init(ctx); err != nil {
		t.Fatal(err)
	}
	dst := newTestRepoKey(t, testDID, src.key, Options{})
	impFill(t, dst, 5)
	c, err := dst.ImportCAR(ctx, bytes.NewReader(impExport(t, src)), impPub(t, src.key), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	impAssertSameRecords(t, impStateOf(t, src), impStateOf(t, dst))
	verifyCommit(t, mustApply(t, dst, create("app.bsky.feed.post", "a", post("a"))), impPub(t, src.key), c)
}

func TestImportCanceled(t *testing.T) {
	src := newTestRepo(t, Options{})
	impFill(t, src, 5)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.ImportCAR(ctx, bytes.NewReader(impExport(t, src)), impPub(t, src.key), ImportOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzImportCAR(f *testing.F) {
	src := newTestRepo(f, Options{})
	impFill(f, src, 30)
	good := impExport(f, src)
	f.Add(good)
	f.Add(good[:len(good)/3])
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	empty := newTestRepo(f, Options{})
	if _, err := empty.Init(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Add(impExport(f, empty))
	pub := impPub(f, src.key)
	dst := newTestRepoKey(f, testDID, src.key, Options{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := dst.ImportCAR(context.Background(), bytes.NewReader(b), pub, ImportOptions{MaxBytes: 1 << 20})
		if err != nil && !errors.Is(err, ErrInvalidCAR) {
			t.Fatalf("error not ErrInvalidCAR: %v", err)
		}
	})
}

// A reader that fails mid-CAR fails the import, and its error stays visible
// (the api maps a body limit to its own status).
func TestImportReaderError(t *testing.T) {
	src := newTestRepo(t, Options{})
	impFill(t, src, 20)
	good := impExport(t, src)
	dst := newTestRepoKey(t, testDID, src.key, Options{})
	before := impStateOf(t, dst)
	boom := errors.New("connection reset")
	for _, n := range []int{0, 5, 100, len(good) - 1} {
		rd := io.MultiReader(bytes.NewReader(good[:n]), iotest.ErrReader(boom))
		_, err := dst.ImportCAR(context.Background(), rd, impPub(t, src.key), ImportOptions{})
		if !errors.Is(err, ErrInvalidCAR) || !errors.Is(err, boom) {
			t.Fatalf("after %d bytes: err = %v", n, err)
		}
	}
	impAssertSame(t, before, impStateOf(t, dst))
}
