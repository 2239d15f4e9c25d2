package mst

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
)

// TestBuilderOracle: for key sets of many sizes and shapes, the Builder's
// root and blocks are exactly indigo's tree (the oracle) and our Tree's, and
// every emitted child precedes its parent.
func TestBuilderOracle(t *testing.T) {
	example := readExampleKeys(t)
	cases := []struct {
		name string
		keys func(rng *rand.Rand) []string
	}{
		{"empty", func(*rand.Rand) []string { return nil }},
		{"one", func(*rand.Rand) []string { return []string{"app.bsky.feed.post/3jzfcijpj2z2a"} }},
		{"interop example keys", func(*rand.Rand) []string { return example }},
		{"tids 1k", func(rng *rand.Rand) []string { return randomKeys(rng, 1000, true) }},
		{"random 5k", func(rng *rand.Rand) []string { return randomKeys(rng, 5000, false) }},
	}
	for i := range 40 {
		n := i * 7
		cases = append(cases, struct {
			name string
			keys func(rng *rand.Rand) []string
		}{fmt.Sprintf("random %d", n), func(rng *rand.Rand) []string { return randomKeys(rng, n, i%2 == 0) }})
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			keys := tc.keys(rng)
			slices.Sort(keys)
			keys = slices.Compact(keys)

			oracle := imst.NewEmptyTree()
			ours := NewTree(memSource{})
			got := map[cid.Cid][]byte{}
			var order []cid.Cid
			b := NewBuilder(func(bl Block) error {
				if _, dup := got[bl.CID]; dup {
					return fmt.Errorf("block %s emitted twice", bl.CID)
				}
				// Every child must have been emitted before its parent.
				nd, err := decodeNode(bl.Data, bl.CID, -1, false)
				if err == nil {
					for _, e := range nd.entries {
						if e.childCID != nil {
							if _, ok := got[*e.childCID]; !ok {
								return fmt.Errorf("node %s emitted before its child %s", bl.CID, e.childCID)
							}
						}
					}
				}
				got[bl.CID] = bl.Data
				order = append(order, bl.CID)
				return nil
			})
			for j, k := range keys {
				v := leafCID(j)
				if _, err := oracle.Insert([]byte(k), v); err != nil {
					t.Fatal(err)
				}
				if _, err := ours.Insert([]byte(k), v); err != nil {
					t.Fatal(err)
				}
				if err := b.Add([]byte(k), v); err != nil {
					t.Fatal(err)
				}
			}
			root, err := b.Finish()
			if err != nil {
				t.Fatal(err)
			}
			col := &collector{got: map[cid.Cid][]byte{}}
			oroot, err := oracle.WriteDiffBlocks(context.Background(), col)
			if err != nil {
				t.Fatal(err)
			}
			if root != *oroot {
				t.Fatalf("root %s, oracle %s", root, oroot)
			}
			if order[len(order)-1] != root {
				t.Fatalf("root emitted before %s", order[len(order)-1])
			}
			diff, err := ours.Commit()
			if err != nil {
				t.Fatal(err)
			}
			if diff.Root != root {
				t.Fatalf("root %s, Tree %s", root, diff.Root)
			}
			if len(got) != len(col.got) || len(got) != len(diff.Blocks) {
				t.Fatalf("%d blocks, oracle %d, Tree %d", len(got), len(col.got), len(diff.Blocks))
			}
			for c, data := range col.got {
				if !slices.Equal(got[c], data) {
					t.Fatalf("block %s differs from the oracle's", c)
				}
			}
		})
	}
}

// randomKeys makes n repo paths: TID-like rkeys (clustered, as records
// written over time are) or random ones, over a few collections.
func randomKeys(rng *rand.Rand, n int, tids bool) []string {
	colls := []string{"app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.graph.follow", "com.example.z"}
	out := make([]string, n)
	t := int64(1_700_000_000_000_000)
	for i := range out {
		if tids {
			t += rng.Int64N(5_000_000)
			out[i] = fmt.Sprintf("%s/%013x", colls[rng.IntN(len(colls))], t)
		} else {
			out[i] = fmt.Sprintf("%s/k%d", colls[rng.IntN(len(colls))], rng.Int64())
		}
	}
	return out
}

// TestBuilderRefuses: keys out of order, repeated, empty or too long, and use
// after Finish are errors; an emit error stops the build.
func TestBuilderRefuses(t *testing.T) {
	v := leafCID(1)
	long := make([]byte, MaxKeyBytes+1)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name string
		keys [][]byte
	}{
		{"descending", [][]byte{[]byte("b/1"), []byte("a/1")}},
		{"repeated", [][]byte{[]byte("a/1"), []byte("a/1")}},
		{"empty", [][]byte{{}}},
		{"too long", [][]byte{long}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder(func(Block) error { return nil })
			var err error
			for _, k := range tc.keys {
				if err = b.Add(k, v); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("got %v, want ErrInvalidKey", err)
			}
		})
	}
	b := NewBuilder(func(Block) error { return nil })
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := b.Add([]byte("a/1"), v); err == nil {
		t.Fatal("Add after Finish accepted")
	}
	if _, err := b.Finish(); err == nil {
		t.Fatal("second Finish accepted")
	}
	boom := errors.New("boom")
	b = NewBuilder(func(Block) error { return boom })
	if err := b.Add([]byte("a/1"), v); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Finish(); !errors.Is(err, boom) {
		t.Fatalf("emit error: got %v", err)
	}
}
