package main

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"
)

// TestImportCorruptMST: an importRepo CAR whose commit is validly signed by
// the account's key but whose MST is broken (a node missing, a node that is
// not a node, keys out of order) is the client's fault: 400 InvalidRequest
// (repo.ErrInvalidCAR), never the 500 that mst.ErrBlockNotFound or
// mst.ErrMalformedNode mean when our own storage is damaged, and nothing
// changes. The unbroken CAR then imports (control).
func TestImportCorruptMST(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	for i := range 60 {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{
			"repo": did, "collection": "app.bsky.feed.post", "record": post(fmt.Sprintf("post %d", i)),
		})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	good := fhGetCAR(t, s, "com.atproto.sync.getRepo", "did="+did)
	st, out := s.call(t, "POST", "com.atproto.server.deactivateAccount", access, "", map[string]any{})
	wantStatus(t, "deactivateAccount", st, out, 200, "")
	key, err := s.app.accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}

	roots, blocks, err := fhCARBlocks(good)
	if err != nil || len(roots) != 1 {
		t.Fatalf("reading the export: %v %v", roots, err)
	}
	var commit irepo.Commit
	if err := commit.UnmarshalCBOR(bytes.NewReader(blocks[roots[0]])); err != nil {
		t.Fatal(err)
	}
	var innerNode, record cid.Cid
	for c, data := range blocks {
		m, err := atdata.UnmarshalCBOR(data)
		if err != nil {
			continue
		}
		if _, ok := m["$type"]; ok {
			record = c
		} else if _, ok := m["e"]; ok && c != commit.Data {
			innerNode = c
		}
	}
	if !innerNode.Defined() || !record.Defined() {
		t.Fatal("the export has no node below the root, or no record: too few records")
	}
	block := func(data []byte) (cid.Cid, []byte) {
		c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(data)
		if err != nil {
			t.Fatal(err)
		}
		return c, data
	}
	// build frames a CAR of the export's blocks minus drop, plus extra,
	// under a commit of data signed with the account's key.
	build := func(data cid.Cid, drop cid.Cid, extra map[cid.Cid][]byte) []byte {
		sc := irepo.Commit{DID: did, Version: irepo.ATPROTO_REPO_VERSION, Data: data, Rev: commit.Rev}
		if err := sc.Sign(key); err != nil {
			t.Fatal(err)
		}
		var cb bytes.Buffer
		if err := sc.MarshalCBOR(&cb); err != nil {
			t.Fatal(err)
		}
		root, rootData := block(cb.Bytes())
		var buf bytes.Buffer
		if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, &buf); err != nil {
			t.Fatal(err)
		}
		all := map[cid.Cid][]byte{root: rootData}
		for c, d := range blocks {
			if c != drop && c != roots[0] {
				all[c] = d
			}
		}
		for c, d := range extra {
			all[c] = d
		}
		for c, d := range all {
			if err := carutil.LdWrite(&buf, c.Bytes(), d); err != nil {
				t.Fatal(err)
			}
		}
		return buf.Bytes()
	}
	notANode, notANodeData := block([]byte{0xa1, 0x61, 0x65, 0x05}) // {"e": 5}
	reversed := imst.NodeData{Entries: []imst.EntryData{
		{KeySuffix: []byte("app.bsky.feed.post/3zzzzzzzzzzzz"), Value: record},
		{KeySuffix: []byte("app.bsky.feed.post/3aaaaaaaaaaaa"), Value: record},
	}}
	revData, revCID, err := reversed.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		car  []byte
	}{
		{"missing inner MST node", build(commit.Data, innerNode, nil)},
		{"missing MST root", build(commit.Data, commit.Data, nil)},
		{"MST root is a record", build(record, cid.Undef, nil)},
		{"MST root does not decode as a node", build(notANode, cid.Undef, map[cid.Cid][]byte{notANode: notANodeData})},
		{"MST node with keys out of order", build(*revCID, cid.Undef, map[cid.Cid][]byte{*revCID: revData})},
	}
	head := func() string {
		st, out := s.call(t, "GET", "com.atproto.sync.getLatestCommit", access, "did="+did, nil)
		wantStatus(t, "getLatestCommit", st, out, 200, "")
		return fmt.Sprint(out["cid"], out["rev"])
	}
	before := head()
	for _, tc := range cases {
		st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.importRepo", access, "", tc.car, "application/vnd.ipld.car")
		if st != 400 || !bytes.Contains(raw, []byte(`"InvalidRequest"`)) {
			t.Errorf("%s: %d %s, want 400 InvalidRequest", tc.name, st, raw)
		}
		if h := head(); h != before {
			t.Fatalf("%s changed the head: %s → %s", tc.name, before, h)
		}
	}
	st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.importRepo", access, "", build(commit.Data, cid.Undef, nil), "application/vnd.ipld.car")
	if st != 200 {
		t.Fatalf("control import: %d %s", st, raw)
	}
}
