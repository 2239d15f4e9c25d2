package mst

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-multihash"
)

// Fixtures from the atproto interop tests (CC0), see ../testdata/README.md.
const (
	keyHeightsFile   = "../testdata/mst/key_heights.json"
	commonPrefixFile = "../testdata/mst/common_prefix.json"
	exampleKeysFile  = "../testdata/mst/example_keys.txt"
	commitProofFile  = "../testdata/firehose/commit-proof-fixtures.json"
)

// proofStore holds only the blocks a verifier was sent. Its not-found error
// is the one indigo's LoadTreeFromStore treats as "partial tree, go on", like
// indigo's repo.TinyBlockstore (not imported: that package pulls in modules
// this one does not otherwise need).
type proofStore map[cid.Cid]blocks.Block

func (s proofStore) Put(_ context.Context, b blocks.Block) error {
	s[b.Cid()] = b
	return nil
}

func (s proofStore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	if b, ok := s[c]; ok {
		return b, nil
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readExampleKeys(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(exampleKeysFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" {
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no keys", exampleKeysFile)
	}
	return keys
}

func mustCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatalf("decode CID %q: %v", s, err)
	}
	return c
}

// commitDiff stores a diff's blocks in store and drops the nodes it unlinked,
// as the repo does in its write transaction.
func commitDiff(t *testing.T, tree *Tree, store memSource) *Diff {
	t.Helper()
	d, err := tree.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range d.Blocks {
		store[b.CID] = b.Data
	}
	for _, c := range d.Removed {
		delete(store, c)
	}
	return d
}

func TestInteropKeyHeights(t *testing.T) {
	var cases []struct {
		Key    string `json:"key"`
		Height int    `json:"height"`
	}
	readJSON(t, keyHeightsFile, &cases)
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.Key), func(t *testing.T) {
			if got := HeightForKey([]byte(tc.Key)); got != tc.Height {
				t.Errorf("HeightForKey(%q) = %d, want %d", tc.Key, got, tc.Height)
			}
		})
	}
}

// The package encodes nodes with indigo's CountPrefixLen; pin it to the fixture.
func TestInteropCommonPrefix(t *testing.T) {
	var cases []struct {
		Left  string `json:"left"`
		Right string `json:"right"`
		Len   int    `json:"len"`
	}
	readJSON(t, commonPrefixFile, &cases)
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q/%q", tc.Left, tc.Right), func(t *testing.T) {
			if got := imst.CountPrefixLen([]byte(tc.Left), []byte(tc.Right)); got != tc.Len {
				t.Errorf("CountPrefixLen(%q, %q) = %d, want %d", tc.Left, tc.Right, got, tc.Len)
			}
		})
	}
}

type commitProofFixture struct {
	Comment          string   `json:"comment"`
	LeafValue        string   `json:"leafValue"`
	Keys             []string `json:"keys"`
	Adds             []string `json:"adds"`
	Dels             []string `json:"dels"`
	RootBeforeCommit string   `json:"rootBeforeCommit"`
	RootAfterCommit  string   `json:"rootAfterCommit"`
	BlocksInProof    []string `json:"blocksInProof"`
}

func TestInteropCommitProofs(t *testing.T) {
	var fixtures []commitProofFixture
	readJSON(t, commitProofFile, &fixtures)
	if len(fixtures) == 0 {
		t.Fatal("no fixtures")
	}
	ctx := context.Background()
	for _, f := range fixtures {
		t.Run(f.Comment, func(t *testing.T) {
			leaf := mustCID(t, f.LeafValue)
			store := memSource{}

			// Before: build from scratch and commit.
			tree := NewTree(store)
			for _, k := range f.Keys {
				if _, err := tree.Insert([]byte(k), leaf); err != nil {
					t.Fatalf("insert %s: %v", k, err)
				}
			}
			before := commitDiff(t, tree, store)
			if got := before.Root.String(); got != f.RootBeforeCommit {
				t.Fatalf("root before commit = %s, want %s", got, f.RootBeforeCommit)
			}

			// The commit: reload lazily from the store, as the repo does.
			tree, err := LoadTree(store, before.Root)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range f.Adds {
				prev, err := tree.Insert([]byte(k), leaf)
				if err != nil {
					t.Fatalf("add %s: %v", k, err)
				}
				if prev != nil {
					t.Fatalf("add %s: key already present (%s)", k, prev)
				}
			}
			for _, k := range f.Dels {
				prev, err := tree.Remove([]byte(k))
				if err != nil {
					t.Fatalf("del %s: %v", k, err)
				}
				if prev == nil || !prev.Equals(leaf) {
					t.Fatalf("del %s: prev = %v, want %s", k, prev, leaf)
				}
			}
			after := commitDiff(t, tree, store)
			if got := after.Root.String(); got != f.RootAfterCommit {
				t.Fatalf("root after commit = %s, want %s", got, f.RootAfterCommit)
			}

			got := map[string]bool{}
			for _, b := range after.Blocks {
				if got[b.CID.String()] {
					t.Errorf("block %s twice in diff", b.CID)
				}
				got[b.CID.String()] = true
			}
			want := map[string]bool{}
			for _, s := range f.BlocksInProof {
				want[mustCID(t, s).String()] = true
			}
			for c := range want {
				if !got[c] {
					t.Errorf("diff lacks proof block %s", c)
				}
			}
			for c := range got {
				if !want[c] {
					t.Errorf("diff has extra block %s", c)
				}
			}

			// The diff alone must let a verifier invert the commit (sync 1.1):
			// load it as a partial indigo tree, undo the ops, get the old root.
			bs := proofStore{}
			for _, b := range after.Blocks {
				blk, err := blocks.NewBlockWithCid(b.Data, b.CID)
				if err != nil {
					t.Fatal(err)
				}
				if err := bs.Put(ctx, blk); err != nil {
					t.Fatal(err)
				}
			}
			inv, err := imst.LoadTreeFromStore(ctx, bs, after.Root)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range f.Adds {
				if _, err := inv.Remove([]byte(k)); err != nil {
					t.Fatalf("invert add %s: %v", k, err)
				}
			}
			for _, k := range f.Dels {
				if _, err := inv.Insert([]byte(k), leaf); err != nil {
					t.Fatalf("invert del %s: %v", k, err)
				}
			}
			r, err := inv.RootCID()
			if err != nil {
				t.Fatal(err)
			}
			if r.String() != f.RootBeforeCommit {
				t.Fatalf("inverted root = %s, want %s", r, f.RootBeforeCommit)
			}
		})
	}
}

// exampleTree commits a tree of the example keys (value: leafCID of the
// key's index) and returns it reloaded lazily, with the sorted keys and the
// expected key → value map.
func exampleTree(t *testing.T) (*Tree, memSource, cid.Cid, []string, map[string]cid.Cid) {
	t.Helper()
	keys := readExampleKeys(t)
	store := memSource{}
	tree := NewTree(store)
	vals := map[string]cid.Cid{}
	for i, k := range keys {
		v := leafCID(i)
		vals[k] = v
		if _, err := tree.Insert([]byte(k), v); err != nil {
			t.Fatalf("insert %s: %v", k, err)
		}
	}
	d := commitDiff(t, tree, store)
	tree, err := LoadTree(store, d.Root)
	if err != nil {
		t.Fatal(err)
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	if len(sorted) != len(vals) {
		t.Fatalf("%d sorted keys, %d values", len(sorted), len(vals))
	}
	return tree, store, d.Root, sorted, vals
}

func TestWalk(t *testing.T) {
	tree, _, _, sorted, vals := exampleTree(t)
	first, last := sorted[0], sorted[len(sorted)-1]
	mid := sorted[len(sorted)/2]
	cases := []struct {
		name    string
		from    []byte
		reverse bool
	}{
		{"nil", nil, false},
		{"nil reverse", nil, true},
		{"present", []byte(mid), false},
		{"present reverse", []byte(mid), true},
		{"absent", []byte(mid + "0"), false},
		{"absent reverse", []byte(mid + "0"), true},
		{"absent between prefixes", []byte("B"), false},
		{"absent between prefixes reverse", []byte("B"), true},
		{"first", []byte(first), false},
		{"first reverse", []byte(first), true},
		{"last", []byte(last), false},
		{"last reverse", []byte(last), true},
		{"before all", []byte("0"), false},
		{"before all reverse", []byte("0"), true},
		{"after all", []byte("zzz"), false},
		{"after all reverse", []byte("zzz"), true},
		{"empty from", []byte{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for _, k := range sorted {
				if tc.from == nil || (!tc.reverse && k >= string(tc.from)) || (tc.reverse && k <= string(tc.from)) {
					want = append(want, k)
				}
			}
			if tc.reverse {
				slices.Reverse(want)
			}
			var got []string
			err := tree.Walk(tc.from, tc.reverse, func(k []byte, v cid.Cid) error {
				if !v.Equals(vals[string(k)]) {
					t.Errorf("%s: value %s, want %s", k, v, vals[string(k)])
				}
				got = append(got, string(k))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("walk(%q, reverse=%v) gave %d keys %v,\nwant %d keys %v", tc.from, tc.reverse, len(got), got, len(want), want)
			}
		})
	}

	t.Run("stop early", func(t *testing.T) {
		var got []string
		err := tree.Walk(nil, false, func(k []byte, _ cid.Cid) error {
			got = append(got, string(k))
			if len(got) == 3 {
				return errStopWalk
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Walk with errStopWalk: %v", err)
		}
		if !slices.Equal(got, sorted[:3]) {
			t.Fatalf("got %v, want %v", got, sorted[:3])
		}
	})
	t.Run("callback error", func(t *testing.T) {
		boom := errors.New("boom")
		if err := tree.Walk(nil, true, func([]byte, cid.Cid) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("Walk = %v, want %v", err, boom)
		}
	})
	t.Run("empty tree", func(t *testing.T) {
		for _, rev := range []bool{false, true} {
			err := NewTree(memSource{}).Walk(nil, rev, func(k []byte, _ cid.Cid) error {
				t.Errorf("unexpected key %s", k)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestProof(t *testing.T) {
	tree, _, root, sorted, vals := exampleTree(t)
	ctx := context.Background()
	type tc struct {
		key     string
		present bool
	}
	var cases []tc
	for i, k := range sorted {
		if i%7 == 0 || i == len(sorted)-1 {
			cases = append(cases, tc{k, true})
		}
	}
	for _, k := range []string{"0", "A0/000000", "A0/374913a", "B", "C5/5", "M0/999999", "zzz", sorted[len(sorted)/2] + "~"} {
		if _, ok := vals[k]; ok {
			t.Fatalf("absent key %s is present", k)
		}
		cases = append(cases, tc{k, false})
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			proof, err := tree.Proof([]byte(c.key))
			if err != nil {
				t.Fatal(err)
			}
			if len(proof) == 0 || !proof[0].CID.Equals(root) {
				t.Fatalf("proof does not start at the root %s", root)
			}
			bs := proofStore{}
			for _, b := range proof {
				sum, err := b.CID.Prefix().Sum(b.Data)
				if err != nil {
					t.Fatal(err)
				}
				if !sum.Equals(b.CID) {
					t.Fatalf("block %s holds data hashing to %s", b.CID, sum)
				}
				blk, err := blocks.NewBlockWithCid(b.Data, b.CID)
				if err != nil {
					t.Fatal(err)
				}
				if err := bs.Put(ctx, blk); err != nil {
					t.Fatal(err)
				}
			}
			partial, err := imst.LoadTreeFromStore(ctx, bs, root)
			if err != nil {
				t.Fatal(err)
			}
			got, err := partial.Get([]byte(c.key))
			if err != nil {
				t.Fatalf("indigo Get on proof (%d blocks): %v", len(proof), err)
			}
			switch {
			case c.present && (got == nil || !got.Equals(vals[c.key])):
				t.Fatalf("proved value %v, want %s", got, vals[c.key])
			case !c.present && got != nil:
				t.Fatalf("proved value %s for an absent key", got)
			}
		})
	}

	t.Run("uncommitted", func(t *testing.T) {
		tree, _, _, _, _ := exampleTree(t)
		if _, err := tree.Insert([]byte("Q0/000001"), leafCID(-1)); err != nil {
			t.Fatal(err)
		}
		if _, err := tree.Proof([]byte("Q0/000001")); err == nil {
			t.Fatal("Proof on a dirty tree: no error")
		}
	})
}

func TestInvalidKeys(t *testing.T) {
	tree, _, _, _, _ := exampleTree(t)
	v := leafCID(0)
	for _, key := range [][]byte{nil, {}, bytes.Repeat([]byte("a"), MaxKeyBytes+1)} {
		t.Run(fmt.Sprintf("len %d", len(key)), func(t *testing.T) {
			if _, err := tree.Insert(key, v); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Insert: %v, want ErrInvalidKey", err)
			}
			if _, err := tree.Get(key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Get: %v, want ErrInvalidKey", err)
			}
			if _, err := tree.Remove(key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Remove: %v, want ErrInvalidKey", err)
			}
			if _, err := tree.Proof(key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Proof: %v, want ErrInvalidKey", err)
			}
		})
	}
	// The longest valid key is accepted.
	long := bytes.Repeat([]byte("a"), MaxKeyBytes)
	if _, err := tree.Insert(long, v); err != nil {
		t.Fatalf("Insert of a %d-byte key: %v", len(long), err)
	}
	if got, err := tree.Get(long); err != nil || got == nil || !got.Equals(v) {
		t.Fatalf("Get of a %d-byte key = %v, %v", len(long), got, err)
	}
}

// nodeBlock encodes nd and returns its bytes and CID.
func nodeBlock(t *testing.T, nd imst.NodeData) ([]byte, cid.Cid) {
	t.Helper()
	var buf bytes.Buffer
	if err := nd.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), rawBlock(t, buf.Bytes())
}

func rawBlock(t *testing.T, data []byte) cid.Cid {
	t.Helper()
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// keysAtHeight returns n sorted keys of the given height.
func keysAtHeight(t *testing.T, h, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := 0; len(out) < n && i < 1_000_000; i++ {
		k := []byte(fmt.Sprintf("com.example.x/%06d", i))
		if HeightForKey(k) == h {
			out = append(out, k)
		}
	}
	if len(out) < n {
		t.Fatalf("found only %d keys at height %d", len(out), h)
	}
	return out
}

// noPanic runs fn and fails the test, instead of crashing, if it panics.
func noPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	}()
	fn()
}

func TestLoadMalformed(t *testing.T) {
	v := leafCID(0)
	h0 := keysAtHeight(t, 0, 2)
	h1 := keysAtHeight(t, 1, 1)
	valid, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
		{KeySuffix: h0[0], Value: v},
		{PrefixLen: int64(imst.CountPrefixLen(h0[0], h0[1])), KeySuffix: h0[1][imst.CountPrefixLen(h0[0], h0[1]):], Value: v},
	}})
	pl := int64(imst.CountPrefixLen(h0[0], h0[1]))
	if pl == 0 {
		t.Fatal("test keys share no prefix")
	}
	someCID := rawBlock(t, []byte("elsewhere"))

	cases := []struct {
		name string
		data []byte
	}{
		{"garbage", []byte{0xff, 0x00, 0x13, 0x37}},
		{"empty bytes", []byte{}},
		{"cbor string", []byte{0x63, 'a', 'b', 'c'}},
		{"truncated", valid[:len(valid)-3]},
		{"truncated header", valid[:2]},
		{"out of order", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[1], Value: v},
				{KeySuffix: h0[0], Value: v},
			}})
			return b
		}()},
		{"duplicate key", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[0], Value: v},
				{PrefixLen: int64(len(h0[0])), Value: v},
			}})
			return b
		}()},
		{"prefix longer than previous key", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[0], Value: v},
				{PrefixLen: int64(len(h0[0]) + 5), KeySuffix: []byte("x"), Value: v},
			}})
			return b
		}()},
		{"negative prefix", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[0], Value: v},
				{PrefixLen: -1, KeySuffix: h0[1], Value: v},
			}})
			return b
		}()},
		{"non-canonical prefix", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[0], Value: v},
				{PrefixLen: 0, KeySuffix: h0[1], Value: v},
			}})
			return b
		}()},
		{"mixed heights", func() []byte {
			a, b := h0[0], h1[0]
			if bytes.Compare(a, b) > 0 {
				a, b = b, a
			}
			p := imst.CountPrefixLen(a, b)
			d, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: a, Value: v},
				{PrefixLen: int64(p), KeySuffix: b[p:], Value: v},
			}})
			return d
		}()},
		{"empty first key", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{{Value: v}}})
			return b
		}()},
		{"root with only a left pointer", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Left: &someCID, Entries: []imst.EntryData{}})
			return b
		}()},
		{"child pointer at height 0", func() []byte {
			b, _ := nodeBlock(t, imst.NodeData{Entries: []imst.EntryData{
				{KeySuffix: h0[0], Value: v, Right: &someCID},
			}})
			return b
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawBlock(t, tc.data)
			store := memSource{c: tc.data}
			noPanic(t, "LoadTree", func() {
				_, err := LoadTree(store, c)
				if !errors.Is(err, ErrMalformedNode) {
					t.Fatalf("LoadTree = %v, want ErrMalformedNode", err)
				}
			})
		})
	}

	t.Run("valid control", func(t *testing.T) {
		c := rawBlock(t, valid)
		tree, err := LoadTree(memSource{c: valid}, c)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tree.Get(h0[1]); err != nil || got == nil || !got.Equals(v) {
			t.Fatalf("Get = %v, %v", got, err)
		}
	})

	t.Run("missing root", func(t *testing.T) {
		_, err := LoadTree(memSource{}, someCID)
		if !errors.Is(err, ErrBlockNotFound) {
			t.Fatalf("LoadTree = %v, want ErrBlockNotFound", err)
		}
	})

	// A corrupt or missing inner node surfaces as an error from the operation
	// that reaches it, not a panic.
	for _, corrupt := range []struct {
		name  string
		data  []byte
		isErr error
	}{
		{"corrupt inner node", []byte{0xff, 0xfe}, ErrMalformedNode},
		{"inner node replaced by a leaf node", valid, ErrMalformedNode},
		{"missing inner node", nil, ErrBlockNotFound},
	} {
		t.Run(corrupt.name, func(t *testing.T) {
			_, store, root, sorted, _ := exampleTree(t)
			for c := range store {
				if c.Equals(root) {
					continue
				}
				if corrupt.data == nil {
					delete(store, c)
				} else {
					store[c] = corrupt.data
				}
			}
			tree, err := LoadTree(store, root)
			if err != nil {
				t.Fatal(err)
			}
			noPanic(t, "Walk", func() {
				for _, rev := range []bool{false, true} {
					if err := tree.Walk(nil, rev, func([]byte, cid.Cid) error { return nil }); !errors.Is(err, corrupt.isErr) {
						t.Errorf("Walk(reverse=%v) = %v, want %v", rev, err, corrupt.isErr)
					}
				}
			})
			noPanic(t, "Get/Insert/Remove", func() {
				var sawErr bool
				for _, k := range sorted {
					if _, err := tree.Get([]byte(k)); err != nil {
						sawErr = true
						if !errors.Is(err, corrupt.isErr) {
							t.Errorf("Get(%s) = %v, want %v", k, err, corrupt.isErr)
						}
					}
				}
				if !sawErr {
					t.Error("no Get reached a broken node")
				}
				// A tree is to be discarded after a failed mutation, so use a
				// fresh one for each.
				for _, k := range sorted[:10] {
					tr, err := LoadTree(store, root)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tr.Remove([]byte(k)); err != nil && !errors.Is(err, corrupt.isErr) {
						t.Errorf("Remove(%s) = %v, want %v", k, err, corrupt.isErr)
					}
					tr, err = LoadTree(store, root)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tr.Insert([]byte(k+"x"), leafCID(1)); err != nil && !errors.Is(err, corrupt.isErr) {
						t.Errorf("Insert(%sx) = %v, want %v", k, err, corrupt.isErr)
					}
				}
			})
		})
	}
}
