package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	carv2 "github.com/ipld/go-car/v2"
)

// diffCollector records what indigo's WriteDiffBlocks writes.
type diffCollector struct {
	blockstore.Blockstore
	got map[cid.Cid]bool
}

func (d *diffCollector) Put(_ context.Context, b blocks.Block) error {
	d.got[b.Cid()] = true
	return nil
}

// carCIDs lists the blocks of a CAR.
func carCIDs(t testing.TB, car []byte) map[cid.Cid]bool {
	t.Helper()
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	out := map[cid.Cid]bool{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[b.Cid()] = true
	}
}

// runRepoDifferential drives Apply with a random workload and checks every
// commit against indigo: same MST root as indigo's tree after the same ops,
// the same MST diff blocks as its WriteDiffBlocks, and a #commit that passes
// VerifyCommitMessage, the signature check and the strict invariants.
func runRepoDifferential(t testing.TB, seed uint64, totalOps, maxBatch int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 0xdecafbad))
	r := newTestRepo(t, Options{})
	pub, err := r.key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	prev, err := r.Init(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oracle := imst.NewEmptyTree()
	if _, err := oracle.WriteDiffBlocks(ctx, &diffCollector{got: map[cid.Cid]bool{}}); err != nil {
		t.Fatal(err)
	}
	colls := []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"}
	live := map[string]struct{}{} // paths present
	var paths []string
	clock := syntax.NewTIDClock(1)
	for done := 0; done < totalOps; {
		n := 1 + rng.IntN(maxBatch)
		var writes []Write
		inBatch := map[string]bool{}
		for len(writes) < n {
			done++
			k := rng.IntN(10)
			if k < 5 || len(paths) == 0 {
				coll := colls[rng.IntN(len(colls))]
				w := create(coll, clock.Next().String(), map[string]any{"$type": coll, "n": int64(rng.IntN(1 << 20))})
				inBatch[w.Path()] = true
				writes = append(writes, w)
				continue
			}
			p := paths[rng.IntN(len(paths))]
			if inBatch[p] {
				continue
			}
			inBatch[p] = true
			nsid, rkey, _ := syntax.ParseRepoPath(p)
			if k < 8 {
				writes = append(writes, update(nsid.String(), rkey.String(), map[string]any{"$type": nsid.String(), "n": int64(rng.IntN(1 << 20))}))
			} else {
				writes = append(writes, del(nsid.String(), rkey.String()))
			}
		}
		c, err := r.Apply(ctx, writes, &prev.CID)
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		verifyCommit(t, c, pub, prev)
		// The same ops on indigo's tree.
		for _, o := range c.Ops {
			if _, err := irepo.ApplyOp(&oracle, o.Path(), o.CID); err != nil {
				t.Fatal(err)
			}
			if o.Action == ActionDelete {
				delete(live, o.Path())
			} else {
				live[o.Path()] = struct{}{}
			}
		}
		want := &diffCollector{got: map[cid.Cid]bool{}}
		root, err := oracle.WriteDiffBlocks(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		if *root != c.Data {
			t.Fatalf("root %s, indigo %s", c.Data, root)
		}
		got := carCIDs(t, c.CAR)
		delete(got, c.CID)
		for _, o := range c.Ops {
			if o.CID != nil {
				delete(got, *o.CID)
			}
		}
		if len(got) != len(want.got) {
			t.Fatalf("rev %s: %d MST diff blocks, indigo %d", c.Rev, len(got), len(want.got))
		}
		for k := range want.got {
			if !got[k] {
				t.Fatalf("rev %s: indigo diff block %s missing", c.Rev, k)
			}
		}
		paths = paths[:0]
		for p := range live {
			paths = append(paths, p)
		}
		prev = c
	}
}

func TestRepoDifferentialAgainstIndigo(t *testing.T) {
	for _, seed := range []uint64{1, 99} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runRepoDifferential(t, seed, 10000, 200)
		})
	}
}

func FuzzRepoDifferential(f *testing.F) {
	f.Add(uint64(5), uint16(300), uint8(50))
	f.Fuzz(func(t *testing.T, seed uint64, ops uint16, batch uint8) {
		runRepoDifferential(t, seed, int(ops%2000)+1, int(batch)%MaxWrites+1)
	})
}
