package mst

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
)

// memSource is a BlockSource over a map, standing in for bbolt in unit tests.
type memSource map[cid.Cid][]byte

func (m memSource) GetBlock(c cid.Cid) ([]byte, error) {
	b, ok := m[c]
	if !ok {
		return nil, fmt.Errorf("%s: %w", c, ErrBlockNotFound)
	}
	return b, nil
}

// collector records the blocks indigo's WriteDiffBlocks writes.
type collector struct {
	blockstore.Blockstore
	got map[cid.Cid][]byte
}

func (c *collector) Put(_ context.Context, b blocks.Block) error {
	c.got[b.Cid()] = b.RawData()
	return nil
}

func leafCID(i int) cid.Cid {
	c, _ := cidBuilder.Sum([]byte(fmt.Sprintf("record-%d", i)))
	return c
}

// runDifferential applies random batches to our lazy tree (reloaded from its
// store after every batch, as the repo does) and to indigo's in-memory tree,
// and checks that roots and diff blocks agree after every batch.
func runDifferential(t testing.TB, seed uint64, totalOps int, maxBatch int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	store := memSource{}
	oracle := imst.NewEmptyTree()
	// The oracle's empty root must be committed once so diffs start clean.
	if _, err := oracle.WriteDiffBlocks(context.Background(), &collector{got: map[cid.Cid][]byte{}}); err != nil {
		t.Fatal(err)
	}
	var root *cid.Cid
	var keys []string
	colls := []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow", "com.example.x"}
	done := 0
	for batch := 0; done < totalOps; batch++ {
		var tree *Tree
		var err error
		if root == nil {
			tree = NewTree(store)
		} else if tree, err = LoadTree(store, *root); err != nil {
			t.Fatal(err)
		}
		n := 1 + rng.IntN(maxBatch)
		seen := map[string]bool{}
		for range n {
			done++
			op := rng.IntN(10)
			var key string
			switch {
			case op < 5 || len(keys) == 0: // create
				key = fmt.Sprintf("%s/%013d", colls[rng.IntN(len(colls))], rng.Int64N(1e13))
			default:
				key = keys[rng.IntN(len(keys))]
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			if op >= 8 && len(keys) > 0 { // delete
				p1, err := tree.Remove([]byte(key))
				if err != nil {
					t.Fatal(err)
				}
				p2, err := oracle.Remove([]byte(key))
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ptrs(p1), ptrs(p2)) {
					t.Fatalf("remove %s: prev %v vs oracle %v", key, p1, p2)
				}
				if i := slices.Index(keys, key); i >= 0 {
					keys = slices.Delete(keys, i, i+1)
				}
				continue
			}
			v := leafCID(rng.Int())
			p1, err := tree.Insert([]byte(key), v)
			if err != nil {
				t.Fatal(err)
			}
			p2, err := oracle.Insert([]byte(key), v)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ptrs(p1), ptrs(p2)) {
				t.Fatalf("insert %s: prev %v vs oracle %v", key, p1, p2)
			}
			if p1 == nil {
				keys = append(keys, key)
			}
		}
		diff, err := tree.Commit()
		if err != nil {
			t.Fatal(err)
		}
		col := &collector{got: map[cid.Cid][]byte{}}
		oroot, err := oracle.WriteDiffBlocks(context.Background(), col)
		if err != nil {
			t.Fatal(err)
		}
		if diff.Root != *oroot {
			t.Fatalf("batch %d: root %s, oracle %s", batch, diff.Root, oroot)
		}
		got := map[cid.Cid][]byte{}
		for _, b := range diff.Blocks {
			if _, dup := got[b.CID]; dup {
				t.Fatalf("batch %d: block %s twice in diff", batch, b.CID)
			}
			got[b.CID] = b.Data
		}
		if len(got) != len(col.got) {
			t.Fatalf("batch %d: %d diff blocks, oracle %d", batch, len(got), len(col.got))
		}
		for c := range col.got {
			if _, ok := got[c]; !ok {
				t.Fatalf("batch %d: oracle diff block %s missing", batch, c)
			}
		}
		for _, b := range diff.Blocks {
			store[b.CID] = b.Data
		}
		for _, c := range diff.Removed {
			delete(store, c)
		}
		r := diff.Root
		root = &r
	}
	// Every node reachable from the final root must still be stored (nothing
	// linked was removed), and nothing unreachable may remain (nothing leaked).
	final, err := LoadTree(store, *root)
	if err != nil {
		t.Fatal(err)
	}
	reach := map[cid.Cid]bool{}
	var visit func(c cid.Cid, h int, isRoot bool)
	visit = func(c cid.Cid, h int, isRoot bool) {
		data, err := store.GetBlock(c)
		if err != nil {
			t.Fatalf("reachable node missing: %v", err)
		}
		n, err := decodeNode(data, c, h, isRoot)
		if err != nil {
			t.Fatal(err)
		}
		reach[c] = true
		for _, e := range n.entries {
			if e.childCID != nil {
				visit(*e.childCID, n.height-1, false)
			}
		}
	}
	visit(*root, -1, true)
	if len(reach) != len(store) {
		t.Fatalf("%d nodes stored, %d reachable", len(store), len(reach))
	}
	var walked []string
	if err := final.Walk(nil, false, func(k []byte, _ cid.Cid) error { walked = append(walked, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	if !slices.Equal(walked, keys) {
		t.Fatalf("walk gave %d keys, want %d", len(walked), len(keys))
	}
}

func ptrs(c *cid.Cid) []cid.Cid {
	if c == nil {
		return nil
	}
	return []cid.Cid{*c}
}

func TestDifferentialAgainstIndigo(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 42} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runDifferential(t, seed, 12000, 200)
		})
	}
}

func TestDifferentialSmallBatches(t *testing.T) {
	runDifferential(t, 7, 3000, 3)
}

func FuzzDifferential(f *testing.F) {
	f.Add(uint64(1), uint16(500), uint8(20))
	f.Fuzz(func(t *testing.T, seed uint64, ops uint16, batch uint8) {
		runDifferential(t, seed, int(ops%4000)+1, int(batch%200)+1)
	})
}
