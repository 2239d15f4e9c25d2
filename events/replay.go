package events

import (
	"bytes"
	"container/list"
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Replay shares its work between subscribers. Stored frames are read in
// pages (consecutive frames of about replayPageBytes, at least one) under
// short read transactions, and a page is read once for every subscriber
// that replays through the same position: a thousand consumers at cursor=0
// share one copy of each page instead of holding a copy each. All pages in
// memory, in use or cached, are bounded by replayBudget: a subscriber that
// needs a new page when the budget is spent by pages others are still
// sending waits for one to be released, so a crowd of consumers that never
// read costs at most replayBudget, not a page each.

const (
	// replayPageBytes is the target size of one page.
	replayPageBytes = 64 << 10
	// replayBudget bounds the bytes of all replay pages in memory.
	replayBudget = 32 << 20
)

// replayPage is a run of stored frames after seq `after`, immutable once
// ready and shared read-only.
type replayPage struct {
	after  int64
	frames [][]byte
	last   int64 // seq of the last frame
	size   int64
	err    error
	ready  chan struct{}
	refs   int           // under replayPages.mu
	idle   *list.Element // in the idle list when refs == 0
}

// replayPages is the page cache of a Sequencer.
type replayPages struct {
	db *bolt.DB

	mu    sync.Mutex
	pages map[int64]*replayPage // by after
	idle  *list.List            // pages nobody holds, least recently used first
	bytes int64                 // of every page in pages, reserved or loaded
	freed chan struct{}         // closed and replaced when a page is released
}

func newReplayPages(db *bolt.DB) *replayPages {
	return &replayPages{db: db, pages: map[int64]*replayPage{}, idle: list.New(), freed: make(chan struct{})}
}

// acquire returns the page of frames after seq `after`, loading it if no
// subscriber has it. An empty page means the stored log ends at after. The
// page must be released.
func (rp *replayPages) acquire(ctx context.Context, after int64) (*replayPage, error) {
	rp.mu.Lock()
	for {
		if p, ok := rp.pages[after]; ok {
			p.refs++
			if p.idle != nil {
				rp.idle.Remove(p.idle)
				p.idle = nil
			}
			rp.mu.Unlock()
			select {
			case <-p.ready:
			case <-ctx.Done():
				rp.release(p)
				return nil, ctx.Err()
			}
			if p.err != nil {
				rp.release(p)
				return nil, p.err
			}
			return p, nil
		}
		// Make room: drop idle pages, oldest first, then wait for one.
		for rp.bytes+replayPageBytes > replayBudget && rp.idle.Len() > 0 {
			rp.drop(rp.idle.Front().Value.(*replayPage))
		}
		if rp.bytes+replayPageBytes <= replayBudget || len(rp.pages) == 0 {
			break
		}
		freed := rp.freed
		rp.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		rp.mu.Lock()
	}
	p := &replayPage{after: after, ready: make(chan struct{}), refs: 1, size: replayPageBytes}
	rp.pages[after] = p
	rp.bytes += p.size
	rp.mu.Unlock()

	p.err = rp.load(p)
	rp.mu.Lock()
	rp.bytes += p.size - replayPageBytes
	if p.err != nil || len(p.frames) == 0 {
		// Errors and the end of the log are not worth keeping: the
		// log grows, and the next asker should look again.
		delete(rp.pages, after)
	}
	rp.mu.Unlock()
	close(p.ready)
	if p.err != nil {
		rp.release(p)
		return nil, p.err
	}
	return p, nil
}

// load reads the page under one short read transaction.
func (rp *replayPages) load(p *replayPage) error {
	var size int64
	err := rp.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seqKey(p.after + 1)); k != nil && (size < replayPageBytes); k, v = c.Next() {
			if len(v) < valueHeaderLen {
				return fmt.Errorf("events: short event %x", k)
			}
			p.frames = append(p.frames, bytes.Clone(v[valueHeaderLen:]))
			p.last = int64(binary.BigEndian.Uint64(k))
			size += int64(len(v) - valueHeaderLen)
		}
		return nil
	})
	p.size = size
	return err
}

// release gives back a page; the last holder leaves it idle in the cache.
func (rp *replayPages) release(p *replayPage) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	p.refs--
	if p.refs > 0 {
		return
	}
	if rp.pages[p.after] == p {
		p.idle = rp.idle.PushBack(p)
	} else {
		rp.bytes -= p.size // already out of the map: its bytes go now
	}
	close(rp.freed)
	rp.freed = make(chan struct{})
}

// drop removes an idle page from the cache. Called with mu held.
func (rp *replayPages) drop(p *replayPage) {
	rp.idle.Remove(p.idle)
	p.idle = nil
	delete(rp.pages, p.after)
	rp.bytes -= p.size
}

// inUse is the bytes of pages in memory (for tests).
func (rp *replayPages) inUse() int64 {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.bytes
}
