package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

func put(coll, rkey string, rec map[string]any) Write {
	return Write{Action: ActionPut, Collection: syntax.NSID(coll), RKey: syntax.RecordKey(rkey), Record: rec}
}

func recordCID(t testing.TB, rec map[string]any) cid.Cid {
	t.Helper()
	c, _, err := EncodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Apply answers one Result per input write, in order, and each changed
// result has the Op the firehose sends for it.
func TestApplyResults(t *testing.T) {
	a, b := post("a"), post("b")
	ca, cb := recordCID(t, a), recordCID(t, b)
	type want struct {
		action    Action
		cid, prev *cid.Cid
		changed   bool
	}
	tests := []struct {
		name   string
		before []Write
		writes []Write
		want   []want
	}{
		{"create", nil, []Write{create(postNSID, rkeyN(1), a)},
			[]want{{ActionCreate, &ca, nil, true}}},
		{"put creates", nil, []Write{put(postNSID, rkeyN(1), a)},
			[]want{{ActionCreate, &ca, nil, true}}},
		{"put updates", []Write{create(postNSID, rkeyN(1), a)}, []Write{put(postNSID, rkeyN(1), b)},
			[]want{{ActionUpdate, &cb, &ca, true}}},
		{"put no-op", []Write{create(postNSID, rkeyN(1), a)}, []Write{put(postNSID, rkeyN(1), a)},
			[]want{{ActionUpdate, &ca, &ca, false}}},
		{"update no-op", []Write{create(postNSID, rkeyN(1), a)}, []Write{update(postNSID, rkeyN(1), a)},
			[]want{{ActionUpdate, &ca, &ca, false}}},
		{"delete", []Write{create(postNSID, rkeyN(1), a)}, []Write{del(postNSID, rkeyN(1))},
			[]want{{ActionDelete, nil, &ca, true}}},
		{"mixed batch keeps input order",
			[]Write{create(postNSID, rkeyN(1), a), create(postNSID, rkeyN(2), a), create(postNSID, rkeyN(3), a)},
			[]Write{
				put(postNSID, rkeyN(4), b),
				update(postNSID, rkeyN(1), a),
				del(postNSID, rkeyN(2)),
				put(postNSID, rkeyN(3), b),
			},
			[]want{
				{ActionCreate, &cb, nil, true},
				{ActionUpdate, &ca, &ca, false},
				{ActionDelete, nil, &ca, true},
				{ActionUpdate, &cb, &ca, true},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRepo(t, Options{})
			pub, _ := r.key.PublicKey()
			var prevCommit *Commit
			if tt.before != nil {
				prevCommit = mustApply(t, r, tt.before...)
			}
			c := mustApply(t, r, tt.writes...)
			if prevCommit != nil {
				verifyCommit(t, c, pub, prevCommit)
			}
			if len(c.Results) != len(tt.writes) {
				t.Fatalf("%d results for %d writes", len(c.Results), len(tt.writes))
			}
			ops := map[string]Op{}
			for _, o := range c.Ops {
				ops[o.Path()] = o
			}
			changed := 0
			for i, res := range c.Results {
				w := tt.want[i]
				if res.Path() != tt.writes[i].Path() {
					t.Fatalf("result %d is for %s, write is %s", i, res.Path(), tt.writes[i].Path())
				}
				if res.Action != w.action || res.Changed != w.changed || !sameCID(res.CID, w.cid) || !sameCID(res.Prev, w.prev) {
					t.Fatalf("result %d = %+v, want %+v", i, res, w)
				}
				op, hasOp := ops[res.Path()]
				if hasOp != res.Changed {
					t.Fatalf("result %d: changed %v, op in commit %v", i, res.Changed, hasOp)
				}
				if hasOp {
					changed++
					if op.Action != res.Action || !sameCID(op.CID, res.CID) || !sameCID(op.Prev, res.Prev) {
						t.Fatalf("result %d = %+v, its op %+v", i, res, op)
					}
				}
				if res.CID != nil {
					got, err := r.GetRecord(res.Collection, res.RKey)
					if err != nil || got.CID != *res.CID {
						t.Fatalf("result %d: stored %v (%v), result says %s", i, got, err, res.CID)
					}
				}
			}
			if changed != len(c.Ops) {
				t.Fatalf("%d ops, %d changed results", len(c.Ops), changed)
			}
			checkIntegrity(t, r.db)
		})
	}
}

func sameCID(a, b *cid.Cid) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// Put's create-or-update and the swaps are decided under the writer lock,
// so they fail or succeed on the state the commit builds on.
func TestApplyPutSwaps(t *testing.T) {
	a, b := post("a"), post("b")
	ca := recordCID(t, a)
	cb := recordCID(t, b)
	tests := []struct {
		name    string
		exists  bool
		swap    *cid.Cid
		wantErr error
	}{
		{"absent, no swap", false, nil, nil},
		{"absent, swap given", false, &ca, ErrInvalidSwap},
		{"present, matching swap", true, &ca, nil},
		{"present, stale swap", true, &cb, ErrInvalidSwap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRepo(t, Options{})
			mustApply(t, r, create(postNSID, rkeyN(9), a))
			if tt.exists {
				mustApply(t, r, create(postNSID, rkeyN(1), a))
			}
			w := put(postNSID, rkeyN(1), b)
			w.SwapRecord = tt.swap
			_, err := r.Apply(context.Background(), []Write{w}, nil)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// Many writers put and delete the same key at once. Every answered write
// must be what its commit's op says (a put answered as an update has a
// prev, a create has none), every put succeeds, and replaying the committed
// ops in order ends at the stored record.
func TestConcurrentPutDelete(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	h := newHookRepo(t)
	var mu sync.Mutex
	byRev := map[string]*Commit{}
	var order []string
	h.hook = func(_ *bolt.Tx, c *Commit) error {
		mu.Lock()
		defer mu.Unlock()
		byRev[c.Rev] = c
		order = append(order, c.Rev)
		return nil
	}
	ctx := context.Background()
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	answers := make(chan *Commit, workers*rounds)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				var w Write
				if (g+i)%2 == 0 {
					w = put(postNSID, rkeyN(1), post(fmt.Sprintf("%d-%d", g, i%3)))
				} else {
					w = del(postNSID, rkeyN(1))
				}
				c, err := h.Apply(ctx, []Write{w}, nil)
				switch {
				case err == nil:
					answers <- c
				case w.Action == ActionDelete && errors.Is(err, ErrRecordNotFound):
				default:
					errs <- fmt.Errorf("%s: %w", w.Action, err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	close(answers)
	for err := range errs {
		t.Fatal(err)
	}
	for c := range answers {
		stored := byRev[c.Rev]
		if stored != c || len(c.Results) != 1 {
			t.Fatalf("answered rev %s not the committed one", c.Rev)
		}
		res := c.Results[0]
		if !res.Changed {
			if len(c.Ops) != 0 || res.Action != ActionUpdate || !sameCID(res.CID, res.Prev) {
				t.Fatalf("no-op %+v with ops %+v", res, c.Ops)
			}
			continue
		}
		op := c.Ops[0]
		if len(c.Ops) != 1 || op.Action != res.Action || !sameCID(op.CID, res.CID) || !sameCID(op.Prev, res.Prev) {
			t.Fatalf("answered %+v, committed %+v", res, c.Ops)
		}
		if (op.Action == ActionCreate) != (op.Prev == nil) {
			t.Fatalf("op %+v: a create has no prev, an update or delete has one", op)
		}
	}
	// Replay: each op's prev is the state the one before it left.
	var cur *cid.Cid
	for _, rev := range order {
		for _, op := range byRev[rev].Ops {
			if !sameCID(op.Prev, cur) {
				t.Fatalf("rev %s: op %s prev %v, state was %v", rev, op.Action, op.Prev, cur)
			}
			cur = op.CID
		}
	}
	got, err := h.GetRecord(postNSID, syntax.RecordKey(rkeyN(1)))
	switch {
	case cur == nil && !errors.Is(err, ErrRecordNotFound):
		t.Fatalf("replay ends deleted, store has %v (%v)", got, err)
	case cur != nil && (err != nil || got.CID != *cur):
		t.Fatalf("replay ends at %s, store has %v (%v)", cur, got, err)
	}
	checkIntegrity(t, h.db)
}
