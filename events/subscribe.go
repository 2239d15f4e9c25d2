package events

import (
	"context"
	"encoding/binary"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// liveSub is a consumer following the live tail through a bounded queue.
type liveSub struct {
	mu     sync.Mutex
	queue  [][]byte
	seqs   []int64
	bytes  int64
	wake   chan struct{} // signalled on new frames or death
	err    error         // set when the consumer is cut off
	after  int64         // frames at or below this seq were already sent
	limitN int
	limitB int64
}

// offer queues a frame without ever blocking the writer; a consumer whose
// queue is full is cut off instead.
func (l *liveSub) offer(seq int64, frame []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || seq <= l.after {
		return
	}
	if len(l.queue) >= l.limitN || l.bytes+int64(len(frame)) > l.limitB {
		l.err = ErrConsumerTooSlow
		l.queue, l.seqs = nil, nil
	} else {
		l.queue = append(l.queue, frame)
		l.seqs = append(l.seqs, seq)
		l.bytes += int64(len(frame))
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *liveSub) kill(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// take returns the queued frames, or the error that ended the subscription.
func (l *liveSub) take() ([][]byte, []int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, nil, l.err
	}
	q, s := l.queue, l.seqs
	l.queue, l.seqs, l.bytes = nil, nil, 0
	return q, s, nil
}

// Info is an informational message sent before events (OutdatedCursor).
type Info struct{ Name, Message string }

// Subscribe streams events to send until ctx is done, send fails, or the
// consumer falls too far behind (ErrConsumerTooSlow). Without a cursor it
// starts with the next event; with one, it first replays every stored event
// after it, then follows the live tail, with no gap and no duplicate.
//
// A cursor past the newest event gives ErrFutureCursor before anything is
// sent. A cursor older than the oldest kept event gets info (OutdatedCursor)
// and the replay starts at the oldest kept event. send is called from one
// goroutine at a time; frames must not be modified.
func (s *Sequencer) Subscribe(ctx context.Context, cursor *int64, info func(Info) error, send func(frame []byte) error) error {
	send = s.countSent(send)
	var pos int64
	if cursor == nil {
		pos = s.LastSeq()
	} else {
		pos = *cursor
		if pos < 0 {
			pos = 0
		}
		if pos > s.LastSeq() {
			// Committed events may not have reached live consumers yet;
			// a consumer may have read them from storage.
			head, err := s.committedSeq()
			if err != nil {
				return err
			}
			if pos > head {
				return ErrFutureCursor
			}
		}
		oldest, err := s.oldestSeq()
		if err != nil {
			return err
		}
		if oldest > 0 && pos < oldest-1 {
			if err := info(Info{Name: "OutdatedCursor", Message: "Requested cursor exceeded limit. Possibly missing events"}); err != nil {
				return err
			}
			pos = oldest - 1
		}
	}
	// Replay from storage until caught up with the committed tail, then
	// join the live stream at exactly that point.
	var sub *liveSub
	for sub == nil {
		next, err := s.replay(ctx, pos, send)
		if err != nil {
			return err
		}
		pos = next
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.lastSeq <= pos {
			sub = &liveSub{wake: make(chan struct{}, 1), after: pos, limitN: s.cfg.BufferFrames, limitB: s.cfg.BufferBytes}
			s.subs[sub] = struct{}{}
		}
		s.mu.Unlock()
	}
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.wake:
		}
		frames, seqs, err := sub.take()
		if err != nil {
			return err
		}
		for i, f := range frames {
			if seqs[i] <= pos {
				continue // already replayed from storage
			}
			if err := send(f); err != nil {
				return err
			}
			pos = seqs[i]
		}
	}
}

// replay sends stored events after pos, page by page from the shared page
// cache (replay.go), so that a slow consumer never pins a transaction and
// consumers at the same position share one copy, and returns the seq of
// the last event sent.
func (s *Sequencer) replay(ctx context.Context, pos int64, send func([]byte) error) (int64, error) {
	for {
		p, err := s.pages.acquire(ctx, pos)
		if err != nil {
			return pos, err
		}
		if len(p.frames) == 0 {
			s.pages.release(p)
			return pos, nil
		}
		for _, f := range p.frames {
			if err = ctx.Err(); err == nil {
				err = send(f)
			}
			if err != nil {
				s.pages.release(p)
				return pos, err
			}
		}
		pos = p.last
		s.pages.release(p)
	}
}

// committedSeq is the last seq assigned by a committed transaction.
func (s *Sequencer) committedSeq() (int64, error) {
	var seq int64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = int64(tx.Bucket(bucketEvents).Sequence())
		return nil
	})
	return seq, err
}

// oldestSeq is the seq of the oldest kept event, 0 if there is none.
func (s *Sequencer) oldestSeq() (int64, error) {
	var seq int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			seq = int64(binary.BigEndian.Uint64(k))
		}
		return nil
	})
	return seq, err
}
