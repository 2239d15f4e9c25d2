package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
)

// dbSnapshot is a deep copy of a whole bbolt file: every bucket (nested ones
// by their path), its sequence, and every key and value.
type dbSnapshot map[string]bucketSnapshot

type bucketSnapshot struct {
	seq uint64
	kv  map[string]string
}

// snapshotDB copies the entire state of db in one read transaction.
func snapshotDB(t testing.TB, db *bolt.DB) dbSnapshot {
	t.Helper()
	snap := dbSnapshot{}
	var walk func(path string, b *bolt.Bucket) error
	walk = func(path string, b *bolt.Bucket) error {
		bs := bucketSnapshot{seq: b.Sequence(), kv: map[string]string{}}
		err := b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return walk(path+"/"+string(k), nb)
				}
			}
			bs.kv[string(k)] = string(v) // string() copies
			return nil
		})
		snap[path] = bs
		return err
	}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk(string(name), b)
		})
	})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return snap
}

// diffSnapshots describes the first few differences between two snapshots,
// "" if they are identical byte for byte.
func diffSnapshots(a, b dbSnapshot) string {
	var out []string
	add := func(format string, args ...any) {
		if len(out) < 10 {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	names := map[string]struct{}{}
	for n := range a {
		names[n] = struct{}{}
	}
	for n := range b {
		names[n] = struct{}{}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		ba, okA := a[n]
		bb, okB := b[n]
		if !okA || !okB {
			add("bucket %q: present before %v, after %v", n, okA, okB)
			continue
		}
		if ba.seq != bb.seq {
			add("bucket %q: sequence %d, then %d", n, ba.seq, bb.seq)
		}
		if len(ba.kv) != len(bb.kv) {
			add("bucket %q: %d keys, then %d", n, len(ba.kv), len(bb.kv))
		}
		for k, v := range ba.kv {
			if w, ok := bb.kv[k]; !ok {
				add("bucket %q: key %x removed", n, k)
			} else if v != w {
				add("bucket %q: key %x changed", n, k)
			}
		}
		for k := range bb.kv {
			if _, ok := ba.kv[k]; !ok {
				add("bucket %q: key %x added", n, k)
			}
		}
	}
	return strings.Join(out, "\n")
}

func assertSnapshot(t testing.TB, db *bolt.DB, want dbSnapshot) {
	t.Helper()
	if d := diffSnapshots(want, snapshotDB(t, db)); d != "" {
		t.Fatalf("database changed:\n%s", d)
	}
}

// checkIntegrity checks the stored repository against its head commit: the
// commit, every reachable MST node and every record block are present and
// hash to their CIDs; the records index is exactly the MST's key→CID map;
// no block is stored that the head does not reach; each block's refcount is
// the number of references to it (one for nodes and the commit, one per path
// for records); each block's rev is a TID no later than the head's.
func checkIntegrity(t testing.TB, db *bolt.DB) {
	t.Helper()
	if err := db.View(func(tx *bolt.Tx) error { return integrityErr(tx) }); err != nil {
		t.Fatalf("integrity: %v", err)
	}
}

func integrityErr(tx *bolt.Tx) error {
	blocks := tx.Bucket(bucketBlocks)
	records := tx.Bucket(bucketRecords)
	if blocks == nil || records == nil || tx.Bucket(bucketMeta) == nil {
		return errors.New("missing bucket")
	}
	h, err := readHead(tx)
	if err != nil {
		return err
	}
	if h == nil {
		if keyCount(blocks) != 0 || keyCount(records) != 0 {
			return errors.New("data stored without a head")
		}
		return nil
	}
	if _, err := syntax.ParseTID(h.rev); err != nil {
		return fmt.Errorf("head rev %q: %v", h.rev, err)
	}
	get := func(c cid.Cid) ([]byte, error) {
		v := blocks.Get(c.Bytes())
		if v == nil {
			return nil, fmt.Errorf("block %s missing", c)
		}
		if len(v) < blockHeaderLen {
			return nil, fmt.Errorf("block %s short", c)
		}
		return v[blockHeaderLen:], nil
	}

	// The commit.
	want := map[cid.Cid]uint32{} // reachable block → expected refcount
	cb, err := get(h.commit)
	if err != nil {
		return fmt.Errorf("head commit: %v", err)
	}
	want[h.commit] = 1
	var sc irepo.Commit
	if err := sc.UnmarshalCBOR(bytes.NewReader(cb)); err != nil {
		return fmt.Errorf("head commit: %v", err)
	}
	if sc.Data != h.data || sc.Rev != h.rev || sc.Version != irepo.ATPROTO_REPO_VERSION || sc.Prev != nil {
		return fmt.Errorf("commit %+v does not match head %+v", sc, h)
	}
	if did := tx.Bucket(bucketMeta).Get(metaDID); string(did) != sc.DID {
		return fmt.Errorf("commit DID %s, stored DID %s", sc.DID, did)
	}

	// Every MST node, decoded independently of package mst.
	queue := []cid.Cid{h.data}
	nodeKeys := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if _, dup := want[c]; dup {
			return fmt.Errorf("node %s reached twice", c)
		}
		data, err := get(c)
		if err != nil {
			return fmt.Errorf("MST node: %v", err)
		}
		want[c] = 1
		nd, err := imst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("MST node %s: %v", c, err)
		}
		if nd.Left != nil {
			queue = append(queue, *nd.Left)
		}
		for _, e := range nd.Entries {
			nodeKeys++
			if e.Right != nil {
				queue = append(queue, *e.Right)
			}
		}
	}

	// The records, through package mst; the index must be the same map.
	tree, err := mst.LoadTree(txSource{blocks}, h.data)
	if err != nil {
		return err
	}
	walked := map[string]cid.Cid{}
	err = tree.Walk(nil, false, func(k []byte, v cid.Cid) error {
		walked[string(k)] = v
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk: %v", err)
	}
	if len(walked) != nodeKeys {
		return fmt.Errorf("walk found %d keys, the nodes hold %d", len(walked), nodeKeys)
	}
	recordRefs := map[cid.Cid]uint32{}
	for k, v := range walked {
		ic := records.Get([]byte(k))
		if ic == nil {
			return fmt.Errorf("record %s in the MST, not in the index", k)
		}
		if !bytes.Equal(ic, v.Bytes()) {
			return fmt.Errorf("record %s: index %x, MST %s", k, ic, v)
		}
		if _, isNode := want[v]; isNode {
			return fmt.Errorf("record %s: CID %s is also a node or commit", k, v)
		}
		recordRefs[v]++
	}
	if n := keyCount(records); n != len(walked) {
		return fmt.Errorf("index holds %d records, the MST %d", n, len(walked))
	}
	for c, n := range recordRefs {
		data, err := get(c)
		if err != nil {
			return fmt.Errorf("record block: %v", err)
		}
		if _, err := atdata.UnmarshalCBOR(data); err != nil {
			return fmt.Errorf("record block %s: %v", c, err)
		}
		want[c] = n
	}

	// The blocks bucket: exactly the reachable set, with the right content,
	// refcounts and revs.
	seen := 0
	err = blocks.ForEach(func(k, v []byte) error {
		_, c, err := cid.CidFromBytes(k)
		if err != nil {
			return fmt.Errorf("block key %x: %v", k, err)
		}
		n, ok := want[c]
		if !ok {
			return fmt.Errorf("block %s is not reachable from the head (garbage)", c)
		}
		seen++
		if len(v) < blockHeaderLen {
			return fmt.Errorf("block %s short", c)
		}
		rev := string(v[:revLen])
		if _, err := syntax.ParseTID(rev); err != nil || rev > h.rev {
			return fmt.Errorf("block %s: rev %q (head %s)", c, rev, h.rev)
		}
		if got := binary.BigEndian.Uint32(v[revLen:blockHeaderLen]); got != n {
			return fmt.Errorf("block %s: refcount %d, %d references", c, got, n)
		}
		sum, err := cidBuilder.Sum(v[blockHeaderLen:])
		if err != nil || sum != c {
			return fmt.Errorf("block %s: content hashes to %s", c, sum)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seen != len(want) {
		return fmt.Errorf("%d blocks stored, %d reachable", seen, len(want))
	}
	return nil
}

// keyCount counts a bucket's keys; unlike Stats it sees uncommitted writes.
func keyCount(b *bolt.Bucket) int {
	n := 0
	_ = b.ForEach(func(_, _ []byte) error { n++; return nil })
	return n
}

// hookRepo is a test repository whose BeforeCommit hook the test sets.
type hookRepo struct {
	*testRepo
	hook func(tx *bolt.Tx, c *Commit) error
}

func newHookRepo(t testing.TB) *hookRepo {
	h := &hookRepo{}
	h.testRepo = newTestRepo(t, Options{BeforeCommit: func(tx *bolt.Tx, c *Commit) error {
		if h.hook == nil {
			return nil
		}
		return h.hook(tx, c)
	}})
	return h
}

func rkeyN(i int) string { return fmt.Sprintf("3k%011d", i) }

const postNSID = "app.bsky.feed.post"

func TestFailedWritesChangeNothing(t *testing.T) {
	r := newHookRepo(t)
	pub, _ := r.key.PublicKey()
	ctx := context.Background()
	var last *Commit
	for i := 0; i < 40; i += 10 {
		var ws []Write
		for j := i; j < i+10; j++ {
			ws = append(ws, create(postNSID, rkeyN(j), post(fmt.Sprint("post ", j))))
		}
		last = mustApply(t, r.testRepo, ws...)
	}
	// A record shared by two paths, so that failed releases would show.
	last = mustApply(t, r.testRepo, create(postNSID, rkeyN(100), post("post 1")))
	checkIntegrity(t, r.db)
	existing, err := r.GetRecord(postNSID, syntax.RecordKey(rkeyN(5)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := r.GetRecord(postNSID, syntax.RecordKey(rkeyN(6)))
	if err != nil {
		t.Fatal(err)
	}
	wrongCID := other.CID
	head := last.CID
	bogusCommit := wrongCID

	// prefix writes valid on their own, so that each failure happens after
	// the batch has already changed the tree and written blocks.
	prefix := func() []Write {
		return []Write{
			create(postNSID, rkeyN(200), post("new 200")),
			update(postNSID, rkeyN(1), post("changed 1")),
			del(postNSID, rkeyN(2)),
			create(postNSID, rkeyN(201), post("post 3")), // shares a block
			update(postNSID, rkeyN(4), post("post 4")),   // no-op
		}
	}
	batch := func(tail ...Write) []Write { return append(prefix(), tail...) }
	hookErr := errors.New("injected")
	withSwap := func(w Write, c cid.Cid) Write { w.SwapRecord = &c; return w }

	cases := []struct {
		name       string
		writes     []Write
		swapCommit *cid.Cid
		hook       func(tx *bolt.Tx, c *Commit) error
		ctx        func() context.Context
		want       error
		panics     bool
	}{
		{name: "float in the middle of a batch", want: ErrInvalidRecord,
			writes: batch(create(postNSID, rkeyN(300), map[string]any{"$type": postNSID, "text": "x", "n": 1.5}), create(postNSID, rkeyN(301), post("y")))},
		{name: "type mismatch", want: ErrInvalidRecord,
			writes: batch(update(postNSID, rkeyN(7), map[string]any{"$type": "app.bsky.feed.like"}), del(postNSID, rkeyN(8)))},
		{name: "missing type", want: ErrInvalidRecord,
			writes: batch(create(postNSID, rkeyN(302), map[string]any{"text": "x"}))},
		{name: "unencodable value", want: ErrInvalidRecord,
			writes: batch(create(postNSID, rkeyN(303), map[string]any{"$type": postNSID, "c": make(chan int)}))},
		{name: "swapCommit mismatch", want: ErrInvalidSwap, swapCommit: &bogusCommit, writes: batch()},
		{name: "swapRecord mismatch mid-batch", want: ErrInvalidSwap,
			writes: batch(withSwap(update(postNSID, rkeyN(5), post("swap")), wrongCID), create(postNSID, rkeyN(304), post("z")))},
		{name: "swapRecord mismatch on delete", want: ErrInvalidSwap,
			writes: batch(withSwap(del(postNSID, rkeyN(5)), wrongCID))},
		{name: "swapRecord on a create", want: ErrInvalidSwap,
			writes: batch(withSwap(create(postNSID, rkeyN(305), post("w")), existing.CID))},
		{name: "create of an existing record, late", want: ErrRecordExists,
			writes: batch(create(postNSID, rkeyN(306), post("v")), create(postNSID, rkeyN(30), post("again")))},
		{name: "create of an existing record with the same content", want: ErrRecordExists,
			writes: batch(create(postNSID, rkeyN(31), post("post 31")))},
		{name: "delete of a missing record", want: ErrRecordNotFound,
			writes: batch(del(postNSID, rkeyN(999)))},
		{name: "update of a missing record", want: ErrRecordNotFound,
			writes: batch(update(postNSID, rkeyN(998), post("u")))},
		{name: "duplicate path", want: ErrInvalidWrite,
			writes: batch(del(postNSID, rkeyN(9)), del(postNSID, rkeyN(9)))},
		{name: "bad record key", want: ErrInvalidWrite,
			writes: batch(create(postNSID, "..", post("k")))},
		{name: "hook error", want: hookErr, writes: batch(),
			hook: func(tx *bolt.Tx, c *Commit) error {
				b, err := tx.CreateBucketIfNotExists([]byte("events"))
				if err != nil {
					return err
				}
				if _, err := b.NextSequence(); err != nil {
					return err
				}
				if err := b.Put([]byte(c.Rev), c.CAR); err != nil {
					return err
				}
				return fmt.Errorf("sequencer: %w", hookErr)
			}},
		{name: "hook error on a full batch", want: hookErr,
			writes: func() []Write {
				var ws []Write
				for i := range MaxWrites {
					ws = append(ws, create(postNSID, rkeyN(1000+i), post(fmt.Sprint(i))))
				}
				return ws
			}(),
			hook: func(tx *bolt.Tx, c *Commit) error { return hookErr }},
		// A panicking hook is a bug: Apply lets the panic through (bbolt's
		// Update rolls the transaction back as it unwinds, and the writer
		// lock is released by a defer) rather than hiding it in an error.
		{name: "hook panic", panics: true, writes: batch(),
			hook: func(tx *bolt.Tx, c *Commit) error {
				if err := tx.Bucket(bucketMeta).Put([]byte("junk"), []byte("x")); err != nil {
					return err
				}
				panic("hook bug")
			}},
		{name: "cancelled context", want: context.Canceled, writes: batch(),
			ctx: func() context.Context {
				c, cancel := context.WithCancel(ctx)
				cancel()
				return c
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotDB(t, r.db)
			r.hook = tc.hook
			defer func() { r.hook = nil }()
			c := ctx
			if tc.ctx != nil {
				c = tc.ctx()
			}
			var (
				res      *Commit
				err      error
				panicked any
			)
			func() {
				defer func() { panicked = recover() }()
				res, err = r.Apply(c, tc.writes, tc.swapCommit)
			}()
			if tc.panics {
				if panicked == nil {
					t.Fatalf("no panic: %v, %v", res, err)
				}
			} else {
				if panicked != nil {
					t.Fatalf("panic: %v", panicked)
				}
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				if res != nil {
					t.Fatalf("a commit with an error: %+v", res)
				}
			}
			assertSnapshot(t, r.db, before)
			if h, _, err := r.Head(); err != nil || h != head {
				t.Fatalf("head %s, %v; want %s", h, err, head)
			}
		})
	}

	// The repository is still writable (the lock was released even after
	// the panic), and the next commit follows the last successful one.
	done := make(chan *Commit, 1)
	go func() {
		c, err := r.Apply(ctx, batch(), &head)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	var c *Commit
	select {
	case c = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Apply blocked: the writer lock was not released")
	}
	if c == nil {
		t.FailNow()
	}
	verifyCommit(t, c, pub, last)
	checkIntegrity(t, r.db)
	got, err := r.GetRecord(postNSID, syntax.RecordKey(rkeyN(1)))
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _ := EncodeRecord(post("changed 1")); got.CID != want {
		t.Fatalf("record %s, want %s", got.CID, want)
	}
}

// TestRandomWorkloadIntegrity applies random batches that share record
// blocks between paths, move them, no-op update them and delete and
// recreate them, and checks the stored state after every commit.
func TestRandomWorkloadIntegrity(t *testing.T) {
	r := newTestRepo(t, Options{})
	pub, _ := r.key.PublicKey()
	rng := rand.New(rand.NewPCG(1, 2))
	colls := []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"}
	rec := func(coll string, v int) map[string]any {
		// Few distinct values, so that many paths share a block.
		return map[string]any{"$type": coll, "v": int64(v)}
	}
	model := map[string]cid.Cid{} // path → record CID
	paths := func() []string {
		ps := make([]string, 0, len(model))
		for p := range model {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		return ps
	}
	var prev *Commit
	ops, noops, moves, shared := 0, 0, 0, 0
	for ops < 2000 {
		n := 1 + rng.IntN(20)
		var ws []Write
		used := map[string]bool{}
		next := map[string]*cid.Cid{}
		existing := paths()
		for len(ws) < n {
			var w Write
			switch k := rng.IntN(10); {
			case k < 4 || len(existing) == 0: // create
				coll := colls[rng.IntN(len(colls))]
				w = create(coll, rkeyN(rng.IntN(400)), rec(coll, rng.IntN(8)))
				if _, ok := model[w.Path()]; ok {
					continue
				}
			case k < 7: // update, a third of them to the identical record
				p := existing[rng.IntN(len(existing))]
				coll, key, _ := strings.Cut(p, "/")
				v := rng.IntN(8)
				if rng.IntN(3) == 0 {
					for v = range 8 {
						if c, _, _ := EncodeRecord(rec(coll, v)); c == model[p] {
							break
						}
					}
				}
				w = update(coll, key, rec(coll, v))
				if rng.IntN(2) == 0 {
					c := model[p]
					w.SwapRecord = &c
				}
			default: // delete, and maybe recreate its content elsewhere
				p := existing[rng.IntN(len(existing))]
				coll, key, _ := strings.Cut(p, "/")
				w = del(coll, key)
				if !used[p] && rng.IntN(2) == 0 {
					for v := range 8 {
						if c, _, _ := EncodeRecord(rec(coll, v)); c == model[p] {
							nw := create(coll, rkeyN(400+rng.IntN(400)), rec(coll, v))
							if _, ok := model[nw.Path()]; !ok && !used[nw.Path()] {
								used[p], used[nw.Path()] = true, true
								ws = append(ws, w, nw)
								moves++
								c := c
								next[p], next[nw.Path()] = nil, &c
							}
							break
						}
					}
					continue
				}
			}
			if used[w.Path()] {
				continue
			}
			used[w.Path()] = true
			if w.Action == ActionDelete {
				next[w.Path()] = nil
			} else {
				c, _, err := EncodeRecord(w.Record)
				if err != nil {
					t.Fatal(err)
				}
				next[w.Path()] = &c
			}
			ws = append(ws, w)
		}
		if len(ws) > MaxWrites {
			ws = ws[:MaxWrites]
		}
		c := mustApply(t, r, ws...)
		verifyCommit(t, c, pub, prev)
		prev = c
		ops += len(ws)
		noops += len(ws) - len(c.Ops)
		for p, c := range next {
			if c == nil {
				delete(model, p)
			} else {
				model[p] = *c
			}
		}
		checkIntegrity(t, r.db)
		// The index equals the model (checkIntegrity equated it with the MST).
		err := r.db.View(func(tx *bolt.Tx) error {
			if n := keyCount(tx.Bucket(bucketRecords)); n != len(model) {
				return fmt.Errorf("%d records, model %d", n, len(model))
			}
			for p, c := range model {
				if v := tx.Bucket(bucketRecords).Get([]byte(p)); !bytes.Equal(v, c.Bytes()) {
					return fmt.Errorf("%s: %x, want %s", p, v, c)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("after %d ops: %v", ops, err)
		}
		shared = max(shared, maxRefcount(t, r.db))
	}
	t.Logf("%d ops, %d no-op updates, %d delete+create pairs, refcounts up to %d", ops, noops, moves, shared)
	if noops == 0 || moves == 0 || shared < 3 {
		t.Fatal("the workload does not exercise no-op updates, moves or shared blocks")
	}
	// Delete everything: only the commit and the empty root node remain.
	for ps := paths(); len(ps) > 0; ps = ps[min(len(ps), MaxWrites):] {
		var ws []Write
		for _, p := range ps[:min(len(ps), MaxWrites)] {
			coll, key, _ := strings.Cut(p, "/")
			ws = append(ws, del(coll, key))
		}
		c := mustApply(t, r, ws...)
		verifyCommit(t, c, pub, prev)
		prev = c
	}
	checkIntegrity(t, r.db)
	if n := blockCount(t, r.db); n != 2 {
		t.Fatalf("%d blocks in an empty repository, want 2", n)
	}
}

func blockCount(t testing.TB, db *bolt.DB) int {
	t.Helper()
	var n int
	_ = db.View(func(tx *bolt.Tx) error {
		n = keyCount(tx.Bucket(bucketBlocks))
		return nil
	})
	return n
}

func maxRefcount(t testing.TB, db *bolt.DB) int {
	t.Helper()
	n := 0
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlocks).ForEach(func(k, v []byte) error {
			n = max(n, int(binary.BigEndian.Uint32(v[revLen:blockHeaderLen])))
			return nil
		})
	})
	return n
}

// A batch of only no-op updates leaves the tree as it was; its commit must
// still carry the MST root, or a relay cannot load the tree from the CAR.
func TestNoopOnlyCommit(t *testing.T) {
	r := newTestRepo(t, Options{})
	pub, _ := r.key.PublicKey()
	a := mustApply(t, r, create(postNSID, rkeyN(1), post("a")), create(postNSID, rkeyN(2), post("b")))
	b := mustApply(t, r, update(postNSID, rkeyN(1), post("a")))
	if len(b.Ops) != 0 || b.Data != a.Data {
		t.Fatalf("no-op update: %d ops, data %s (was %s)", len(b.Ops), b.Data, a.Data)
	}
	verifyCommit(t, b, pub, a)
	checkIntegrity(t, r.db)
}

// checkIntegrity must notice each kind of damage it claims to check.
func TestCheckIntegrityDetectsDamage(t *testing.T) {
	r := newTestRepo(t, Options{})
	var ws []Write
	for i := range 60 {
		ws = append(ws, create(postNSID, rkeyN(i), post(fmt.Sprint(i%7))))
	}
	c := mustApply(t, r, ws...)
	checkIntegrity(t, r.db)
	rec, err := r.GetRecord(postNSID, syntax.RecordKey(rkeyN(3)))
	if err != nil {
		t.Fatal(err)
	}
	setRef := func(tx *bolt.Tx, c cid.Cid, delta int) error {
		b := tx.Bucket(bucketBlocks)
		v := bytes.Clone(b.Get(c.Bytes()))
		binary.BigEndian.PutUint32(v[revLen:], uint32(int(binary.BigEndian.Uint32(v[revLen:]))+delta))
		return b.Put(c.Bytes(), v)
	}
	damage := map[string]func(tx *bolt.Tx) error{
		"garbage block": func(tx *bolt.Tx) error {
			oc, data, _ := EncodeRecord(post("orphan"))
			bw, _ := newBlockWriter(tx, c.Rev)
			return bw.put(oc, data, true)
		},
		"missing record block": func(tx *bolt.Tx) error { return tx.Bucket(bucketBlocks).Delete(rec.CID.Bytes()) },
		"missing root node":    func(tx *bolt.Tx) error { return tx.Bucket(bucketBlocks).Delete(c.Data.Bytes()) },
		"record refcount high": func(tx *bolt.Tx) error { return setRef(tx, rec.CID, 1) },
		"record refcount low":  func(tx *bolt.Tx) error { return setRef(tx, rec.CID, -1) },
		"node refcount":        func(tx *bolt.Tx) error { return setRef(tx, c.Data, 1) },
		"index entry missing": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRecords).Delete([]byte(postNSID + "/" + rkeyN(3)))
		},
		"index entry extra": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRecords).Put([]byte(postNSID+"/"+rkeyN(999)), rec.CID.Bytes())
		},
		"index entry wrong": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRecords).Put([]byte(postNSID+"/"+rkeyN(3)), c.Data.Bytes())
		},
		"block rev after the head": func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketBlocks)
			v := bytes.Clone(b.Get(rec.CID.Bytes()))
			copy(v, "zzzzzzzzzzzzz")
			return b.Put(rec.CID.Bytes(), v)
		},
		"block content": func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketBlocks)
			v := bytes.Clone(b.Get(rec.CID.Bytes()))
			v[len(v)-1] ^= 1
			return b.Put(rec.CID.Bytes(), v)
		},
		"head rev": func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaRev, []byte("3zzzzzzzzzzzz")) },
	}
	rollback := errors.New("rollback")
	for name, f := range damage {
		err := r.db.Update(func(tx *bolt.Tx) error {
			if err := f(tx); err != nil {
				return err
			}
			if err := integrityErr(tx); err == nil {
				return errors.New("not detected")
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Errorf("%s: %v", name, err)
		}
	}
	checkIntegrity(t, r.db)
}
