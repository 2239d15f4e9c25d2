package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// collector is a send callback that checks every frame continues the
// sequence after its cursor, and stops the subscription at target.
type collector struct {
	next   int64 // the seq the next frame must have
	target int64 // stop after this seq (0: never)
	seqs   []int64
	frames [][]byte
	keep   bool // keep the frames
}

func (c *collector) send(f []byte) error {
	seq, err := frameSeq(f)
	if err != nil {
		return err
	}
	if seq != c.next {
		return fmt.Errorf("got seq %d, want %d (after %v)", seq, c.next, c.seqs[max(0, len(c.seqs)-3):])
	}
	c.next++
	c.seqs = append(c.seqs, seq)
	if c.keep {
		c.frames = append(c.frames, f)
	}
	if c.target != 0 && seq >= c.target {
		return errStop
	}
	return nil
}

func noInfo(i Info) error { return fmt.Errorf("unexpected info %+v", i) }

// TestSubscribeEveryCursor reconnects at every cursor 0..N while two
// writers keep appending: each subscription replays from storage, joins the
// live tail at some point of the race, and sees cursor+1 … target with no
// gap and no duplicate. A live consumer started before everything sees all
// events in order, and every frame is byte-identical to the stored one.
func TestSubscribeEveryCursor(t *testing.T) {
	s, db := newSeq(t, Config{})
	const cursors = 300
	mustAppendN(t, s, 3, 1)

	// The live consumer from the start (cursor 3 = the head now).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live := &collector{next: 4, keep: true}
	var liveAt atomic.Int64 // the live consumer's last seq
	liveDone := make(chan error, 1)
	start := int64(3)
	go func() {
		liveDone <- s.Subscribe(ctx, &start, noInfo, func(f []byte) error {
			err := live.send(f)
			liveAt.Store(live.next - 1)
			return err
		})
	}()

	// The writers may run up to allowed; each transaction holds 1–3 events.
	var allowed atomic.Int64
	allowed.Store(3)
	stop := make(chan struct{})
	kicks := []chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	var wg sync.WaitGroup
	writerErr := make(chan error, len(kicks))
	for w, kick := range kicks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				wrote := false
				err := db.Update(func(tx *bolt.Tx) error {
					room := allowed.Load() - int64(tx.Bucket(bucketEvents).Sequence())
					for range min(room, int64(1+rng.IntN(3))) {
						if _, err := s.AppendIdentity(tx, testDID, fmt.Sprintf("w%d.test", w)); err != nil {
							return err
						}
						wrote = true
					}
					return nil
				})
				if err != nil {
					writerErr <- err
					return
				}
				if wrote {
					continue
				}
				select {
				case <-stop:
					return
				case <-kick:
				}
			}
		}()
	}
	setAllowed := func(n int64) {
		allowed.Store(n)
		for _, k := range kicks {
			select {
			case k <- struct{}{}:
			default:
			}
		}
	}

	for c := int64(0); c <= cursors; c++ {
		// LastSeq >= c here (it grows faster than c). The subscription
		// replays c+1 … head from storage and needs 1–4 more events, which
		// the writers append while it runs.
		target := s.LastSeq() + 1 + c%4
		setAllowed(target)
		col := &collector{next: c + 1, target: target}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		cur := c
		err := s.Subscribe(sctx, &cur, noInfo, col.send)
		scancel()
		if !errors.Is(err, errStop) {
			t.Fatalf("cursor %d: %v (got %d frames)", c, err, len(col.seqs))
		}
		if int64(len(col.seqs)) != target-c {
			t.Fatalf("cursor %d: %d frames, want %d", c, len(col.seqs), target-c)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-writerErr:
		t.Fatal(err)
	default:
	}
	final := s.LastSeq()
	if final < cursors+3 {
		t.Fatalf("LastSeq %d", final)
	}
	// The live consumer catches up with the final seq.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := liveAt.Load()
		if n >= final {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live consumer at %d, head %d", n, final)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := waitErr(t, liveDone); !errors.Is(err, context.Canceled) {
		t.Fatalf("live consumer: %v", err)
	}
	for i, f := range live.frames {
		if !bytes.Equal(f, storedFrame(t, s, live.seqs[i])) {
			t.Fatalf("live frame %d differs from the stored one", live.seqs[i])
		}
	}
}

func TestSubscribeFutureCursor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events int
		cursor int64
		future bool
	}{
		{"empty, cursor 0", 0, 0, false},
		{"empty, cursor 1", 0, 1, true},
		{"at head", 5, 5, false},
		{"one past head", 5, 6, true},
		{"far past head", 5, 1 << 40, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSeq(t, Config{})
			if tc.events > 0 {
				mustAppendN(t, s, tc.events, 2)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sent := 0
			done := make(chan error, 1)
			cur := tc.cursor
			go func() {
				done <- s.Subscribe(ctx, &cur, noInfo, func([]byte) error { sent++; return errStop })
			}()
			if tc.future {
				if err := waitErr(t, done); !errors.Is(err, ErrFutureCursor) || sent != 0 {
					t.Fatalf("Subscribe: %v after %d frames, want ErrFutureCursor", err, sent)
				}
				return
			}
			// A valid cursor at the head: the next event is the first frame.
			waitSubs(t, s, 1)
			mustAppendN(t, s, 1, 1)
			if err := waitErr(t, done); !errors.Is(err, errStop) || sent != 1 {
				t.Fatalf("Subscribe: %v after %d frames", err, sent)
			}
		})
	}
}

// TestSubscribeOutdatedCursor: after pruning, a cursor before the oldest
// kept event gets #info OutdatedCursor first, then the replay starts at the
// oldest kept event.
func TestSubscribeOutdatedCursor(t *testing.T) {
	clock := newFakeClock()
	s, _ := newSeq(t, Config{Now: clock.Now, Retention: 48 * time.Hour})
	mustAppendN(t, s, 10, 3) // seqs 1-10 at T0
	clock.Advance(72 * time.Hour)
	mustAppendN(t, s, 5, 2) // seqs 11-15 at T0+72h
	if n, err := s.Prune(); err != nil || n != 10 {
		t.Fatalf("Prune: %d, %v", n, err)
	}
	if s.LastSeq() != 15 {
		t.Fatalf("LastSeq after prune %d", s.LastSeq())
	}
	for _, tc := range []struct {
		cursor   int64
		outdated bool
		first    int64
	}{
		{0, true, 11},
		{1, true, 11},
		{9, true, 11},
		{10, false, 11},
		{11, false, 12},
		{14, false, 15},
	} {
		t.Run(fmt.Sprint(tc.cursor), func(t *testing.T) {
			var calls []string
			info := func(i Info) error {
				calls = append(calls, "info:"+i.Name)
				if i.Message == "" {
					return errors.New("info without message")
				}
				return nil
			}
			col := &collector{next: tc.first, target: 15}
			send := func(f []byte) error {
				calls = append(calls, "frame")
				return col.send(f)
			}
			cur := tc.cursor
			if err := s.Subscribe(context.Background(), &cur, info, send); !errors.Is(err, errStop) {
				t.Fatalf("Subscribe: %v", err)
			}
			nInfo := 0
			if tc.outdated {
				nInfo = 1
				if calls[0] != "info:OutdatedCursor" {
					t.Fatalf("calls %v: want OutdatedCursor first", calls)
				}
			}
			if len(calls) != nInfo+int(16-tc.first) {
				t.Fatalf("calls %v", calls)
			}
		})
	}

	// Everything is now old: the newest event is kept, the counter stays.
	clock.Advance(72 * time.Hour)
	if n, err := s.Prune(); err != nil || n != 4 {
		t.Fatalf("Prune: %d, %v", n, err)
	}
	var infos int
	col := &collector{next: 15, target: 15}
	cur := int64(0)
	err := s.Subscribe(context.Background(), &cur, func(Info) error { infos++; return nil }, col.send)
	if !errors.Is(err, errStop) || infos != 1 {
		t.Fatalf("Subscribe: %v, %d infos", err, infos)
	}
	// A restored server: RaiseSeq past what relays saw, then new events are
	// above it and a relay's old cursor is neither future nor outdated.
	if err := s.RaiseSeq(100); err != nil {
		t.Fatal(err)
	}
	mustAppendN(t, s, 1, 1)
	for _, c := range []int64{15, 50, 100} {
		col := &collector{next: 101, target: 101}
		cur := c
		if err := s.Subscribe(context.Background(), &cur, noInfo, col.send); !errors.Is(err, errStop) {
			t.Fatalf("cursor %d after raise: %v", c, err)
		}
	}
}

// TestSubscribeSlowConsumer: a consumer whose send blocks falls behind; the
// writer's transactions all complete regardless, and the consumer is cut
// off with ErrConsumerTooSlow instead of queueing without bound.
func TestSubscribeSlowConsumer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		maxQueued int64
	}{
		{"frame limit", Config{BufferFrames: 8}, 8},
		{"byte limit", Config{BufferBytes: 2000}, 2000 / 50}, // frames are over 50 bytes
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSeq(t, tc.cfg)
			entered, release := make(chan struct{}), make(chan struct{})
			var sent atomic.Int64
			done := make(chan error, 1)
			go func() {
				done <- s.Subscribe(context.Background(), nil, noInfo, func([]byte) error {
					if sent.Add(1) == 1 {
						close(entered)
						<-release
					}
					return nil
				})
			}()
			waitSubs(t, s, 1)
			mustAppendN(t, s, 1, 1)
			<-entered // the consumer is now stuck in send, in the live phase

			const writes = 200
			writer := make(chan error, 1)
			go func() { writer <- appendN(t, s, writes, 1) }()
			if err := waitErr(t, writer); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				t.Fatalf("consumer returned %v while blocked in send", err)
			default:
			}
			if s.LastSeq() != writes+1 {
				t.Fatalf("LastSeq %d: the writer's events were not all published", s.LastSeq())
			}
			close(release)
			if err := waitErr(t, done); !errors.Is(err, ErrConsumerTooSlow) {
				t.Fatalf("Subscribe: %v, want ErrConsumerTooSlow", err)
			}
			if n := sent.Load(); n > 1+tc.maxQueued {
				t.Fatalf("%d frames sent: the queue was not bounded", n)
			}
			waitSubs(t, s, 0)
		})
	}
}

// TestSubscribeManySubscribers: 100 live consumers each get every event, in
// order, from writers with transactions of different sizes.
func TestSubscribeManySubscribers(t *testing.T) {
	s, _ := newSeq(t, Config{})
	const subs, events = 100, 300
	errs := make(chan error, subs)
	for range subs {
		go func() {
			col := &collector{next: 1, target: events}
			errs <- s.Subscribe(context.Background(), nil, noInfo, col.send)
		}()
	}
	waitSubs(t, s, subs)
	for _, perTx := range []int{1, 7, 50} {
		mustAppendN(t, s, 100, perTx)
	}
	for range subs {
		if err := waitErr(t, errs); !errors.Is(err, errStop) {
			t.Fatal(err)
		}
	}
}

// TestSubscribeEnds: cancelling the context, a failing send and Close end
// a subscription with their error, and it leaves the live set.
func TestSubscribeEnds(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		end  func(s *Sequencer, cancel context.CancelFunc)
		send func([]byte) error
		want error
	}{
		{"cancel", func(_ *Sequencer, cancel context.CancelFunc) { cancel() }, func([]byte) error { return nil }, context.Canceled},
		{"send fails", func(s *Sequencer, _ context.CancelFunc) { mustAppendN(t, s, 1, 1) }, func([]byte) error { return boom }, boom},
		{"close", func(s *Sequencer, _ context.CancelFunc) { s.Close() }, func([]byte) error { return nil }, ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSeq(t, Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Subscribe(ctx, nil, noInfo, tc.send) }()
			waitSubs(t, s, 1)
			tc.end(s, cancel)
			if err := waitErr(t, done); !errors.Is(err, tc.want) {
				t.Fatalf("Subscribe: %v, want %v", err, tc.want)
			}
			waitSubs(t, s, 0)
		})
	}
	// After Close, a new subscription ends at once.
	s, _ := newSeq(t, Config{})
	mustAppendN(t, s, 2, 1)
	s.Close()
	cur := int64(0)
	col := &collector{next: 1}
	if err := s.Subscribe(context.Background(), &cur, noInfo, col.send); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// TestSubscribeWhilePublishPending: an event committed but not yet handed to
// live consumers (its commit callback has not run) is already in storage.
// A consumer that joins then gets it once, from storage, and may even use
// it as its cursor; its late publication is not sent again.
func TestSubscribeWhilePublishPending(t *testing.T) {
	s, db := newSeq(t, Config{})
	mustAppendN(t, s, 3, 1)
	inTx, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- db.Update(func(tx *bolt.Tx) error {
			tx.OnCommit(func() { <-release })
			_, err := s.AppendIdentity(tx, testDID, "held.test")
			close(inTx)
			return err
		})
	}()
	<-inTx
	// Seq 4 is committed once the writer lock is free again.
	if err := db.Update(func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if s.LastSeq() != 3 || storedFrame(t, s, 4) == nil {
		t.Fatalf("LastSeq %d, stored 4: %v", s.LastSeq(), storedFrame(t, s, 4) != nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type sub struct {
		cursor *int64
		first  int64
	}
	c2, c4 := int64(2), int64(4)
	subs := []sub{{nil, 4}, {&c2, 3}, {&c4, 5}}
	done := make(chan error, len(subs))
	for _, sb := range subs {
		col := &collector{next: sb.first, target: 6}
		go func() { done <- s.Subscribe(ctx, sb.cursor, noInfo, col.send) }()
	}
	waitSubs(t, s, len(subs))
	close(release)
	if err := waitErr(t, held); err != nil {
		t.Fatal(err)
	}
	mustAppendN(t, s, 2, 1)
	for range subs {
		if err := waitErr(t, done); !errors.Is(err, errStop) {
			t.Fatal(err)
		}
	}
}
