package repo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// Exports (getRepo, getCheckout) never hold a bbolt read transaction while
// the network is slow. A reader that never reads must not pin a transaction:
// bbolt's writer waits for every open read transaction when it grows its
// mapping, and every new reader queues behind that writer, so one stalled
// client would stop the whole server.
//
// The choice: the CAR of one commit is copied, under ONE read transaction,
// into a temporary file in the data directory (disk speed, bounded by the
// size of the repository, never by the client), and the file is streamed
// with no transaction held. One transaction gives a consistent snapshot of
// exactly one commit for free; paging the MST in several short transactions
// would not, because a later commit deletes the blocks it unlinks, so a
// paged walk of an old commit can find its blocks gone. The file is unlinked
// as soon as it is created (the open descriptor keeps it), so a crash leaves
// nothing behind. Concurrent exports of the same commit share one file, and
// at most maxLiveSpools distinct files exist at once (further exports wait
// for one, then give up with ErrExportBusy).

// ErrExportBusy: too many distinct exports are being streamed right now.
var ErrExportBusy = errors.New("too many repository exports in progress")

// maxLiveSpools bounds the distinct export files open at once (each up to
// the size of the repository on disk).
const maxLiveSpools = 8

// spoolWait is how long an export waits for a free spool slot.
const spoolWait = 10 * time.Second

// exportSpools shares export files between concurrent readers. The zero
// value is ready to use.
type exportSpools struct {
	mu    sync.Mutex
	m     map[string]*spool
	slots chan struct{}
}

// spool is one export file, shared by refs readers.
type spool struct {
	key   string
	ready chan struct{} // closed when built (or failed)
	f     *os.File
	size  int64
	err   error
	refs  int // under exportSpools.mu
}

// Export is a CAR v1 snapshot of one commit, ready to stream without holding
// any database transaction. It must be closed.
type Export struct {
	s      *spool
	owner  *exportSpools
	once   sync.Once
	Commit cid.Cid
}

// Size is the length of the CAR in bytes.
func (e *Export) Size() int64 { return e.s.size }

// Reader returns a fresh reader over the whole CAR. Readers of one Export
// (or of several sharing a file) may be used concurrently.
func (e *Export) Reader() io.Reader { return io.NewSectionReader(e.s.f, 0, e.s.size) }

// Close releases the export; the file goes away with its last reader.
func (e *Export) Close() error {
	e.once.Do(func() { e.owner.release(e.s) })
	return nil
}

// OpenExport snapshots the repository (everything, or the blocks written
// after rev since) as a CAR rooted at the head commit. It reads the head
// in one short transaction, copies the CAR to disk in one read transaction
// that never waits on a client, and returns a handle to stream it.
func (r *Repo) OpenExport(ctx context.Context, since string) (*Export, error) {
	var commit cid.Cid
	err := r.db.View(func(tx *bolt.Tx) error {
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if h == nil {
			return ErrNoHead
		}
		commit = h.commit
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r.exports.open(ctx, commit.String()+"|"+since, func(f *os.File) (cid.Cid, int64, error) {
		return r.spoolTo(ctx, f, since)
	}, filepath.Dir(r.db.Path()))
}

func (c *exportSpools) open(ctx context.Context, key string, build func(*os.File) (cid.Cid, int64, error), dir string) (*Export, error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*spool{}
		c.slots = make(chan struct{}, maxLiveSpools)
	}
	if s, ok := c.m[key]; ok {
		s.refs++
		c.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			c.release(s)
			return nil, ctx.Err()
		}
		if s.err != nil {
			c.release(s)
			return nil, s.err
		}
		return &Export{s: s, owner: c, Commit: commitOf(key)}, nil
	}
	s := &spool{key: key, ready: make(chan struct{}), refs: 1}
	c.m[key] = s
	c.mu.Unlock()

	s.err = c.build(ctx, s, build, dir)
	close(s.ready)
	if s.err != nil {
		c.release(s)
		return nil, s.err
	}
	return &Export{s: s, owner: c, Commit: commitOf(key)}, nil
}

func commitOf(key string) cid.Cid {
	for i := 0; i < len(key); i++ {
		if key[i] == '|' {
			c, _ := cid.Decode(key[:i])
			return c
		}
	}
	return cid.Undef
}

// build takes a spool slot and fills s.f. On failure the slot is given back.
func (c *exportSpools) build(ctx context.Context, s *spool, build func(*os.File) (cid.Cid, int64, error), dir string) error {
	t := time.NewTimer(spoolWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return ErrExportBusy
	}
	f, err := os.CreateTemp(dir, ".export-*.car")
	if err != nil {
		<-c.slots
		return fmt.Errorf("export spool: %w", err)
	}
	// Unlinked at once: the descriptor keeps the data, a crash leaves nothing.
	_ = os.Remove(f.Name())
	_, n, err := build(f)
	if err != nil {
		f.Close()
		<-c.slots
		return err
	}
	s.f, s.size = f, n
	return nil
}

func (c *exportSpools) release(s *spool) {
	c.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && c.m[s.key] == s {
		delete(c.m, s.key)
	}
	c.mu.Unlock()
	if last && s.f != nil {
		s.f.Close()
		<-c.slots
	}
}

// spoolTo writes the CAR to f under one read transaction and returns its
// root and length.
func (r *Repo) spoolTo(ctx context.Context, f *os.File, since string) (cid.Cid, int64, error) {
	var root cid.Cid
	cw := &spoolCounter{w: f}
	err := r.db.View(func(tx *bolt.Tx) error {
		bw := bufio.NewWriterSize(cw, 64<<10)
		c, err := writeSnapshot(ctx, tx, bw, since)
		if err != nil {
			return err
		}
		root = c
		return bw.Flush()
	})
	if err != nil {
		return cid.Undef, 0, err
	}
	return root, cw.n, nil
}

type spoolCounter struct {
	w io.Writer
	n int64
}

func (c *spoolCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
