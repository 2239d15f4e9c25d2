// Package events is the firehose: a sequencer whose events live in bbolt,
// appended inside the write transaction that causes them, and the fan-out of
// those events to com.atproto.sync.subscribeRepos consumers, replaying from a
// cursor and then following the live tail with no gap and no duplicate.
package events

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// Storage: bucket "events", key = seq as 8 big-endian bytes, value = the
// event time (unix nanoseconds, 8 bytes) followed by the complete frame
// (header + body) exactly as sent on the wire. The bucket's bbolt sequence
// is the last seq ever assigned: it is transactional (an aborted write gives
// its number back) and never goes down when old events are pruned.
var bucketEvents = []byte("events")

const valueHeaderLen = 8

// Errors of the sequencer and subscriptions.
var (
	// ErrFutureCursor: the cursor is past the newest event.
	ErrFutureCursor = errors.New("cursor in the future")
	// ErrConsumerTooSlow: the consumer fell too far behind the live stream.
	ErrConsumerTooSlow = errors.New("consumer too slow")
	// ErrClosed: the sequencer is shutting down.
	ErrClosed = errors.New("sequencer closed")
)

// Config configures a Sequencer.
type Config struct {
	// Retention is how long events are kept for replay (default 7 days).
	Retention time.Duration
	// BufferFrames and BufferBytes bound what one live consumer may have
	// queued before it is disconnected (defaults 1000 frames, 32 MiB).
	BufferFrames int
	BufferBytes  int64
	Log          *slog.Logger
	Now          func() time.Time
	// OnPublish, if set, is called (without blocking) after each event
	// reaches live consumers; the crawler hooks in here.
	OnPublish func()
}

// Sequencer assigns sequence numbers, stores frames and fans them out.
type Sequencer struct {
	db  *bolt.DB
	cfg Config

	mu      sync.Mutex
	lastSeq int64            // newest seq delivered to live consumers
	pending map[int64][]byte // committed, waiting for a lower seq
	subs    map[*liveSub]struct{}
	closed  bool
	conns   sync.WaitGroup // consumer connections, for Wait
	pages   *replayPages   // shared replay pages (replay.go)
	sent    atomic.Int64   // event frame bytes handed to consumers (stats.go)
}

// New opens the sequencer over db, creating its bucket.
func New(db *bolt.DB, cfg Config) (*Sequencer, error) {
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.BufferFrames <= 0 {
		cfg.BufferFrames = 1000
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 32 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sequencer{db: db, cfg: cfg, pending: map[int64][]byte{}, subs: map[*liveSub]struct{}{}, pages: newReplayPages(db)}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		s.lastSeq = int64(b.Sequence())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return s, nil
}

// LastSeq is the newest committed seq (0 before the first event).
func (s *Sequencer) LastSeq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// timeString formats event times as the reference does.
func timeString(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func seqKey(seq int64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(seq))
	return k[:]
}

// append stores one event in tx under the next seq and arranges for it to
// reach live consumers once tx commits. body is filled with its seq first.
func (s *Sequencer) append(tx *bolt.Tx, typ string, setSeq func(int64), marshal func(*bytes.Buffer) error) (int64, error) {
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return 0, fmt.Errorf("events: bucket missing")
	}
	n, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	seq := int64(n)
	setSeq(seq)
	var buf bytes.Buffer
	var ts [valueHeaderLen]byte
	binary.BigEndian.PutUint64(ts[:], uint64(s.cfg.Now().UnixNano()))
	buf.Write(ts[:])
	buf.Write(frameHeader(typ))
	if err := marshal(&buf); err != nil {
		return 0, fmt.Errorf("events: encoding %s: %w", typ, err)
	}
	if err := b.Put(seqKey(seq), buf.Bytes()); err != nil {
		return 0, err
	}
	frame := buf.Bytes()[valueHeaderLen:]
	tx.OnCommit(func() { s.publish(seq, frame) })
	return seq, nil
}

// AppendCommit appends the #commit event of c inside tx.
func (s *Sequencer) AppendCommit(tx *bolt.Tx, c *repo.Commit) (int64, error) {
	ev := &comatproto.SyncSubscribeRepos_Commit{
		Repo:   c.DID.String(),
		Commit: lexutil.LexLink(c.CID),
		Rev:    c.Rev,
		Since:  c.Since,
		Blocks: lexutil.LexBytes(c.CAR),
		Ops:    make([]*comatproto.SyncSubscribeRepos_RepoOp, 0, len(c.Ops)),
		Blobs:  make([]lexutil.LexLink, 0, len(c.Blobs)),
		Time:   timeString(s.cfg.Now()),
	}
	if c.PrevData != nil {
		l := lexutil.LexLink(*c.PrevData)
		ev.PrevData = &l
	}
	for _, o := range c.Ops {
		op := &comatproto.SyncSubscribeRepos_RepoOp{Action: string(o.Action), Path: o.Path()}
		if o.CID != nil {
			l := lexutil.LexLink(*o.CID)
			op.Cid = &l
		}
		if o.Prev != nil {
			l := lexutil.LexLink(*o.Prev)
			op.Prev = &l
		}
		ev.Ops = append(ev.Ops, op)
	}
	for _, b := range c.Blobs {
		ev.Blobs = append(ev.Blobs, lexutil.LexLink(b))
	}
	return s.append(tx, "#commit", func(n int64) { ev.Seq = n }, func(b *bytes.Buffer) error { return ev.MarshalCBOR(b) })
}

// AppendSync appends a #sync event: the repository is now at the commit in
// car (a CAR holding just the commit block), whatever came before.
func (s *Sequencer) AppendSync(tx *bolt.Tx, did syntax.DID, rev string, car []byte) (int64, error) {
	ev := &comatproto.SyncSubscribeRepos_Sync{Did: did.String(), Rev: rev, Blocks: lexutil.LexBytes(car), Time: timeString(s.cfg.Now())}
	return s.append(tx, "#sync", func(n int64) { ev.Seq = n }, func(b *bytes.Buffer) error { return ev.MarshalCBOR(b) })
}

// AppendIdentity appends an #identity event (handle may be empty).
func (s *Sequencer) AppendIdentity(tx *bolt.Tx, did syntax.DID, handle string) (int64, error) {
	ev := &comatproto.SyncSubscribeRepos_Identity{Did: did.String(), Time: timeString(s.cfg.Now())}
	if handle != "" {
		ev.Handle = &handle
	}
	return s.append(tx, "#identity", func(n int64) { ev.Seq = n }, func(b *bytes.Buffer) error { return ev.MarshalCBOR(b) })
}

// AppendAccount appends an #account event; status is empty when active.
func (s *Sequencer) AppendAccount(tx *bolt.Tx, did syntax.DID, active bool, status string) (int64, error) {
	ev := &comatproto.SyncSubscribeRepos_Account{Did: did.String(), Active: active, Time: timeString(s.cfg.Now())}
	if status != "" {
		ev.Status = &status
	}
	return s.append(tx, "#account", func(n int64) { ev.Seq = n }, func(b *bytes.Buffer) error { return ev.MarshalCBOR(b) })
}

// publish hands a committed event to live consumers, in seq order: bbolt
// runs commit callbacks after releasing its writer lock, so two writers'
// callbacks may arrive out of order, but committed seqs have no holes.
func (s *Sequencer) publish(seq int64, frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.lastSeq {
		return
	}
	s.pending[seq] = frame
	for {
		f, ok := s.pending[s.lastSeq+1]
		if !ok {
			return
		}
		delete(s.pending, s.lastSeq+1)
		s.lastSeq++
		for sub := range s.subs {
			sub.offer(s.lastSeq, f)
		}
		if s.cfg.OnPublish != nil {
			s.cfg.OnPublish()
		}
	}
}

// RaiseSeq makes the next seq greater than min, for a server restored from a
// backup that relays have already seen further than.
func (s *Sequencer) RaiseSeq(min int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if int64(b.Sequence()) >= min {
			return nil
		}
		if err := b.SetSequence(uint64(min)); err != nil {
			return err
		}
		tx.OnCommit(func() {
			s.mu.Lock()
			if s.lastSeq < min {
				s.lastSeq = min
			}
			s.mu.Unlock()
		})
		return nil
	})
}

// Prune deletes events older than the retention, never the newest one, and
// returns how many it deleted. The seq counter is untouched. It works in
// batches so that no transaction grows large.
func (s *Sequencer) Prune() (int, error) {
	cutoff := uint64(s.cfg.Now().Add(-s.cfg.Retention).UnixNano())
	total := 0
	for {
		var keys [][]byte
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			lastK, _ := c.Last()
			for k, v := c.First(); k != nil && !bytes.Equal(k, lastK) && len(keys) < 10000; k, v = c.Next() {
				if len(v) < valueHeaderLen || binary.BigEndian.Uint64(v) >= cutoff {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return total, err
		}
		err = s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEvents)
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += len(keys)
	}
}

// RunPrune prunes every interval until done is closed.
func (s *Sequencer) RunPrune(done <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if n, err := s.Prune(); err != nil {
				s.cfg.Log.Error("pruning events", "err", err)
			} else if n > 0 {
				s.cfg.Log.Info("pruned old events", "count", n)
			}
		}
	}
}

// Close disconnects every live consumer.
func (s *Sequencer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		sub.kill(ErrClosed)
	}
}

// Track registers a consumer connection; call done once it has said
// goodbye (its close frame is written), so that Wait can let a shutdown
// finish cleanly.
func (s *Sequencer) Track() (done func()) {
	s.conns.Add(1)
	var once sync.Once
	return func() { once.Do(s.conns.Done) }
}

// Wait blocks until every tracked connection is done or ctx ends.
func (s *Sequencer) Wait(ctx context.Context) {
	ch := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(ch)
	}()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}
