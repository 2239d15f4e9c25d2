package events

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/repo"
	cbg "github.com/whyrusleeping/cbor-gen"
	bolt "go.etcd.io/bbolt"
)

// testDID is the repository every test event is about.
const testDID = syntax.DID("did:plc:eventstest000000000000aa")

// fakeClock is a settable Config.Now, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// openDB opens a fresh bbolt file in a temp directory, closed with the test.
func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newSeq opens a sequencer over a fresh file; quiet unless cfg says otherwise.
func newSeq(t *testing.T, cfg Config) (*Sequencer, *bolt.DB) {
	t.Helper()
	db := openDB(t)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, db
}

// appendN appends n #identity events, per events to a transaction, the way
// a writer does: inside db.Update.
func appendN(t testing.TB, s *Sequencer, n, perTx int) error {
	for n > 0 {
		k := min(n, perTx)
		err := s.db.Update(func(tx *bolt.Tx) error {
			for range k {
				if _, err := s.AppendIdentity(tx, testDID, "alice.test"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func mustAppendN(t *testing.T, s *Sequencer, n, perTx int) {
	t.Helper()
	if err := appendN(t, s, n, perTx); err != nil {
		t.Fatal(err)
	}
}

// splitFrame decodes a frame's header with cbor-gen and returns it with the
// body bytes that follow.
func splitFrame(frame []byte) (op int64, typ string, body []byte, err error) {
	r := bytes.NewReader(frame)
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	if err != nil {
		return 0, "", nil, err
	}
	if maj != cbg.MajMap || n == 0 || n > 2 {
		return 0, "", nil, fmt.Errorf("header is not a small map (major %d, %d entries)", maj, n)
	}
	seenOp := false
	for range n {
		k, err := cbg.ReadString(cr)
		if err != nil {
			return 0, "", nil, err
		}
		switch k {
		case "op":
			maj, v, err := cr.ReadHeader()
			if err != nil {
				return 0, "", nil, err
			}
			switch maj {
			case cbg.MajUnsignedInt:
				op = int64(v)
			case cbg.MajNegativeInt:
				op = -1 - int64(v)
			default:
				return 0, "", nil, fmt.Errorf("op has major type %d", maj)
			}
			seenOp = true
		case "t":
			if typ, err = cbg.ReadString(cr); err != nil {
				return 0, "", nil, err
			}
		default:
			return 0, "", nil, fmt.Errorf("unexpected header key %q", k)
		}
	}
	if !seenOp {
		return 0, "", nil, fmt.Errorf("header without op")
	}
	return op, typ, frame[len(frame)-r.Len():], nil
}

// decoded is one message frame decoded with indigo's types.
type decoded struct {
	typ      string
	seq      int64
	commit   *comatproto.SyncSubscribeRepos_Commit
	sync     *comatproto.SyncSubscribeRepos_Sync
	identity *comatproto.SyncSubscribeRepos_Identity
	account  *comatproto.SyncSubscribeRepos_Account
}

// marshaler is what the indigo body types share.
type marshaler interface{ MarshalCBOR(io.Writer) error }

// decodeFrame decodes a message frame and checks that its body is exactly
// the canonical encoding of what it decodes to, with no trailing bytes.
func decodeFrame(frame []byte) (decoded, error) {
	op, typ, body, err := splitFrame(frame)
	if err != nil {
		return decoded{}, err
	}
	if op != 1 {
		return decoded{}, fmt.Errorf("op %d in a message frame", op)
	}
	d := decoded{typ: typ}
	var m marshaler
	r := bytes.NewReader(body)
	switch typ {
	case "#commit":
		d.commit = &comatproto.SyncSubscribeRepos_Commit{}
		err, m = d.commit.UnmarshalCBOR(r), d.commit
	case "#sync":
		d.sync = &comatproto.SyncSubscribeRepos_Sync{}
		err, m = d.sync.UnmarshalCBOR(r), d.sync
	case "#identity":
		d.identity = &comatproto.SyncSubscribeRepos_Identity{}
		err, m = d.identity.UnmarshalCBOR(r), d.identity
	case "#account":
		d.account = &comatproto.SyncSubscribeRepos_Account{}
		err, m = d.account.UnmarshalCBOR(r), d.account
	default:
		return decoded{}, fmt.Errorf("unexpected message type %q", typ)
	}
	if err != nil {
		return decoded{}, fmt.Errorf("%s body: %w", typ, err)
	}
	if r.Len() != 0 {
		return decoded{}, fmt.Errorf("%s: %d trailing bytes", typ, r.Len())
	}
	var again bytes.Buffer
	if err := m.MarshalCBOR(&again); err != nil {
		return decoded{}, err
	}
	if !bytes.Equal(again.Bytes(), body) {
		return decoded{}, fmt.Errorf("%s body is not canonical", typ)
	}
	switch {
	case d.commit != nil:
		d.seq = d.commit.Seq
	case d.sync != nil:
		d.seq = d.sync.Seq
	case d.identity != nil:
		d.seq = d.identity.Seq
	case d.account != nil:
		d.seq = d.account.Seq
	}
	return d, nil
}

func frameSeq(frame []byte) (int64, error) {
	d, err := decodeFrame(frame)
	return d.seq, err
}

// storedFrame reads the stored frame of seq, nil if there is none.
func storedFrame(t *testing.T, s *Sequencer, seq int64) []byte {
	t.Helper()
	var out []byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketEvents).Get(seqKey(seq)); v != nil {
			out = bytes.Clone(v[valueHeaderLen:])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func storedSeqs(t *testing.T, s *Sequencer) []int64 {
	t.Helper()
	var out []int64
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, _ []byte) error {
			out = append(out, int64(binary.BigEndian.Uint64(k)))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFrameHeader(t *testing.T) {
	for _, typ := range []string{"#commit", "#sync", "#identity", "#account", "#info", "#a-type-name-longer-than-23"} {
		t.Run(typ, func(t *testing.T) {
			h := frameHeader(typ)
			// The canonical DAG-CBOR of {t, op: 1}: "t" sorts before "op".
			want, err := atdata.MarshalCBOR(map[string]any{"op": int64(1), "t": typ})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h, want) {
				t.Fatalf("header %x, want %x", h, want)
			}
			op, got, body, err := splitFrame(append(h, 0xa0))
			if err != nil || op != 1 || got != typ || !bytes.Equal(body, []byte{0xa0}) {
				t.Fatalf("split: op %d t %q body %x err %v", op, got, body, err)
			}
		})
	}
}

func TestErrorFrame(t *testing.T) {
	for _, tc := range []struct{ name, message string }{
		{"FutureCursor", "Cursor in the future."},
		{"ConsumerTooSlow", "Stream consumer too slow"},
		{"OnlyAName", ""},
		{"Long", string(bytes.Repeat([]byte("m"), 300))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ErrorFrame(tc.name, tc.message)
			op, typ, body, err := splitFrame(f)
			if err != nil || op != -1 || typ != "" {
				t.Fatalf("header: op %d t %q err %v", op, typ, err)
			}
			if !bytes.HasPrefix(f, []byte{0xa1, 0x62, 'o', 'p', 0x20}) {
				t.Fatalf("header bytes %x", f[:5])
			}
			m, err := atdata.UnmarshalCBOR(body)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"error": tc.name}
			if tc.message != "" {
				want["message"] = tc.message
			}
			if len(m) != len(want) || m["error"] != want["error"] || m["message"] != want["message"] {
				t.Fatalf("body %v, want %v", m, want)
			}
			canon, err := atdata.MarshalCBOR(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(canon, body) {
				t.Fatalf("body %x is not canonical (%x)", body, canon)
			}
		})
	}
}

func TestInfoFrame(t *testing.T) {
	for _, tc := range []struct{ name, message string }{
		{"OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events"},
		{"Bare", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, typ, body, err := splitFrame(InfoFrame(tc.name, tc.message))
			if err != nil || op != 1 || typ != "#info" {
				t.Fatalf("header: op %d t %q err %v", op, typ, err)
			}
			var info comatproto.SyncSubscribeRepos_Info
			r := bytes.NewReader(body)
			if err := info.UnmarshalCBOR(r); err != nil || r.Len() != 0 {
				t.Fatalf("body: %v, %d trailing", err, r.Len())
			}
			if info.Name != tc.name || (tc.message == "") != (info.Message == nil) || (info.Message != nil && *info.Message != tc.message) {
				t.Fatalf("info %+v", info)
			}
		})
	}
}

func testCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.DagCBOR, h)
}

// TestAppendKinds stores one event of each kind and reads them back as
// indigo decodes them.
func TestAppendKinds(t *testing.T) {
	clock := newFakeClock()
	s, _ := newSeq(t, Config{Now: clock.Now})
	commitCID, data, prevData := testCID(t, "commit"), testCID(t, "data"), testCID(t, "prevData")
	rec1, rec2, blob := testCID(t, "rec1"), testCID(t, "rec2"), testCID(t, "blob")
	since := "3kzzzzzzzzz22"
	c := &repo.Commit{
		DID: testDID, CID: commitCID, Rev: "3m2222222222a", Since: &since, Data: data, PrevData: &prevData,
		Ops: []repo.Op{
			{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", RKey: "a", CID: &rec1, Blobs: []cid.Cid{blob}},
			{Action: repo.ActionUpdate, Collection: "app.bsky.feed.post", RKey: "b", CID: &rec2, Prev: &rec1},
			{Action: repo.ActionDelete, Collection: "app.bsky.feed.post", RKey: "c", Prev: &rec2},
		},
		CAR:   []byte("car bytes"),
		Blobs: []cid.Cid{blob},
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, f := range []func() (int64, error){
			func() (int64, error) { return s.AppendIdentity(tx, testDID, "alice.test") },
			func() (int64, error) { return s.AppendIdentity(tx, testDID, "") },
			func() (int64, error) { return s.AppendAccount(tx, testDID, true, "") },
			func() (int64, error) { return s.AppendAccount(tx, testDID, false, "deactivated") },
			func() (int64, error) { return s.AppendCommit(tx, c) },
			func() (int64, error) { return s.AppendSync(tx, testDID, "3m2222222222a", []byte("sync car")) },
		} {
			seq, err := f()
			if err != nil {
				return err
			}
			if seq != int64(i+1) {
				return fmt.Errorf("append %d got seq %d", i, seq)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.LastSeq() != 6 {
		t.Fatalf("LastSeq %d, want 6", s.LastSeq())
	}
	wantTime := "2026-11-29T12:00:00.000Z"
	var got []decoded
	for seq := int64(1); seq <= 6; seq++ {
		d, err := decodeFrame(storedFrame(t, s, seq))
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if d.seq != seq {
			t.Fatalf("frame %d carries seq %d", seq, d.seq)
		}
		got = append(got, d)
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"identity with handle", got[0].identity != nil && got[0].identity.Did == testDID.String() && str(got[0].identity.Handle) == "alice.test" && got[0].identity.Time == wantTime},
		{"identity without handle", got[1].identity != nil && got[1].identity.Handle == nil},
		{"account active", got[2].account != nil && got[2].account.Active && got[2].account.Status == nil && got[2].account.Did == testDID.String()},
		{"account deactivated", got[3].account != nil && !got[3].account.Active && str(got[3].account.Status) == "deactivated"},
		{"sync", got[5].sync != nil && got[5].sync.Did == testDID.String() && got[5].sync.Rev == "3m2222222222a" && string(got[5].sync.Blocks) == "sync car" && got[5].sync.Time == wantTime},
	} {
		if !tc.ok {
			t.Errorf("%s: %+v", tc.name, got)
		}
	}
	ev := got[4].commit
	if ev == nil {
		t.Fatalf("seq 5 is %s", got[4].typ)
	}
	if ev.Repo != testDID.String() || cid.Cid(ev.Commit) != commitCID || ev.Rev != c.Rev || str(ev.Since) != since ||
		ev.PrevData == nil || cid.Cid(*ev.PrevData) != prevData || string(ev.Blocks) != "car bytes" || ev.TooBig || ev.Rebase ||
		len(ev.Blobs) != 1 || cid.Cid(ev.Blobs[0]) != blob || ev.Time != wantTime {
		t.Fatalf("commit event %+v", ev)
	}
	wantOps := []struct {
		action, path string
		cid, prev    *cid.Cid
	}{
		{"create", "app.bsky.feed.post/a", &rec1, nil},
		{"update", "app.bsky.feed.post/b", &rec2, &rec1},
		{"delete", "app.bsky.feed.post/c", nil, &rec2},
	}
	if len(ev.Ops) != len(wantOps) {
		t.Fatalf("%d ops", len(ev.Ops))
	}
	eq := func(l interface{ String() string }, c *cid.Cid, isNil bool) bool {
		if c == nil {
			return isNil
		}
		return !isNil && l.String() == c.String()
	}
	for i, w := range wantOps {
		op := ev.Ops[i]
		if op.Action != w.action || op.Path != w.path || !eq(op.Cid, w.cid, op.Cid == nil) || !eq(op.Prev, w.prev, op.Prev == nil) {
			t.Fatalf("op %d: %+v", i, op)
		}
	}

	// The first commit has no since and no prevData: since is null, prevData
	// left out.
	first := &repo.Commit{DID: testDID, CID: commitCID, Rev: "3m2222222222a", Data: data, CAR: []byte("x")}
	if err := s.db.Update(func(tx *bolt.Tx) error { _, err := s.AppendCommit(tx, first); return err }); err != nil {
		t.Fatal(err)
	}
	f := storedFrame(t, s, 7)
	if d, err := decodeFrame(f); err != nil || d.commit == nil {
		t.Fatalf("first commit: %v", err)
	}
	_, _, body, _ := splitFrame(f)
	m, err := atdata.UnmarshalCBOR(body)
	if err != nil {
		t.Fatal(err)
	}
	since0, hasSince := m["since"]
	_, hasPrevData := m["prevData"]
	ops, opsOK := m["ops"].([]any)
	blobs, blobsOK := m["blobs"].([]any)
	if !hasSince || since0 != nil || hasPrevData || !opsOK || len(ops) != 0 || !blobsOK || len(blobs) != 0 {
		t.Fatalf("first commit body: %v", m)
	}
}

// TestSeqCounter: the counter survives reopening, pruning never lowers it,
// RaiseSeq only raises it, and new events always get a greater seq.
func TestSeqCounter(t *testing.T) {
	clock := newFakeClock()
	db := openDB(t)
	cfg := Config{Now: clock.Now, Retention: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	open := func() *Sequencer {
		s, err := New(db, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if s.LastSeq() != 0 {
		t.Fatalf("empty LastSeq %d", s.LastSeq())
	}
	mustAppendN(t, s, 10, 3)
	clock.Advance(2 * time.Hour)
	steps := []struct {
		name    string
		do      func(s *Sequencer) error
		wantSeq int64
	}{
		{"prune everything old", func(s *Sequencer) error {
			n, err := s.Prune()
			if err == nil && n != 9 {
				err = fmt.Errorf("pruned %d, want 9 (never the newest)", n)
			}
			return err
		}, 10},
		{"reopen", nil, 10},
		{"raise to 1000", func(s *Sequencer) error { return s.RaiseSeq(1000) }, 1000},
		{"raise to 5 changes nothing", func(s *Sequencer) error { return s.RaiseSeq(5) }, 1000},
		{"reopen", nil, 1000},
		{"append after raise", func(s *Sequencer) error { return appendN(t, s, 2, 2) }, 1002},
		{"prune again", func(s *Sequencer) error { clock.Advance(2 * time.Hour); _, err := s.Prune(); return err }, 1002},
		{"reopen", nil, 1002},
	}
	for _, st := range steps {
		if st.do == nil {
			s.Close()
			s = open()
		} else if err := st.do(s); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.LastSeq(); got != st.wantSeq {
			t.Fatalf("%s: LastSeq %d, want %d", st.name, got, st.wantSeq)
		}
	}
	if got := storedSeqs(t, s); len(got) != 1 || got[0] != 1002 {
		t.Fatalf("stored seqs %v, want [1002]", got)
	}
	// The raised events' seqs and the newest one is what a live consumer sees.
	mustAppendN(t, s, 1, 1)
	if seq, err := frameSeq(storedFrame(t, s, 1003)); err != nil || seq != 1003 {
		t.Fatalf("event after raise: seq %d, %v", seq, err)
	}
}

// TestPruneBatches prunes more events than one batch holds.
func TestPruneBatches(t *testing.T) {
	clock := newFakeClock()
	s, _ := newSeq(t, Config{Now: clock.Now, Retention: 24 * time.Hour})
	const old, kept = 25_003, 7
	mustAppendN(t, s, old, 5000)
	clock.Advance(25 * time.Hour)
	mustAppendN(t, s, kept, 1)
	clock.Advance(time.Hour) // the kept ones are 1 h old: within retention
	n, err := s.Prune()
	if err != nil || n != old {
		t.Fatalf("Prune: %d, %v; want %d", n, err, old)
	}
	seqs := storedSeqs(t, s)
	if len(seqs) != kept || seqs[0] != old+1 || seqs[kept-1] != old+kept {
		t.Fatalf("kept %d events %v…", len(seqs), seqs[:min(3, len(seqs))])
	}
	if n, err := s.Prune(); err != nil || n != 0 {
		t.Fatalf("second Prune: %d, %v", n, err)
	}
	if s.LastSeq() != old+kept {
		t.Fatalf("LastSeq %d", s.LastSeq())
	}
}

// TestOutOfOrderCommitCallbacks: bbolt runs commit callbacks after releasing
// its writer lock, so a later transaction's callback can run first; live
// consumers still get events in seq order, and LastSeq never covers an
// event whose predecessor has not been published.
func TestOutOfOrderCommitCallbacks(t *testing.T) {
	s, db := newSeq(t, Config{})
	var mu sync.Mutex
	var got []int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(ctx, nil, nil, func(f []byte) error {
			seq, err := frameSeq(f)
			if err != nil {
				return err
			}
			mu.Lock()
			got = append(got, seq)
			n := len(got)
			mu.Unlock()
			if n == 2 {
				return errStop
			}
			return nil
		})
	}()
	waitSubs(t, s, 1)

	aInTx, bDone := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- db.Update(func(tx *bolt.Tx) error {
			// Registered before the event's own callback, so it runs first
			// and holds A's publication back until B has committed.
			tx.OnCommit(func() { <-bDone })
			seq, err := s.AppendIdentity(tx, testDID, "a.test")
			if err == nil && seq != 1 {
				err = fmt.Errorf("A got seq %d", seq)
			}
			close(aInTx)
			return err
		})
	}()
	// B starts while A holds the writer lock, and runs once A has released
	// it (A's transaction is committed but its callbacks are held).
	<-aInTx
	err := db.Update(func(tx *bolt.Tx) error {
		seq, err := s.AppendIdentity(tx, testDID, "b.test")
		if err == nil && seq != 2 {
			err = fmt.Errorf("B got seq %d", seq)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.LastSeq(); n != 0 {
		t.Fatalf("LastSeq %d while seq 1 is unpublished", n)
	}
	mu.Lock()
	early := len(got)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d events delivered before seq 1 was published", early)
	}
	close(bDone)
	if err := waitErr(t, aDone); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, done); !errors.Is(err, errStop) {
		t.Fatalf("Subscribe: %v", err)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("delivered %v, want [1 2]", got)
	}
	if s.LastSeq() != 2 {
		t.Fatalf("LastSeq %d", s.LastSeq())
	}
}

// errStop ends a subscription from its send callback.
var errStop = errors.New("stop")

// waitErr waits for one value from c, failing the test after a generous
// deadline (a hang, not a latency goal).
func waitErr(t *testing.T, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting")
		return nil
	}
}

// waitSubs waits until n live consumers are registered.
func waitSubs(t *testing.T, s *Sequencer, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.subs)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d live consumers, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
