// Package dbprobe tells whether the bbolt database still answers, for the
// health check: a wedged database (a writer waiting on a remap behind a
// stuck reader, with every reader queued behind it) must turn the health
// check red so that a supervisor restarts the server.
package dbprobe

import (
	"errors"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotAnswering: the database did not answer a read within the timeout.
var ErrNotAnswering = errors.New("database not answering")

// Prober runs at most one probe at a time: a hung probe is never joined
// by more goroutines, however often the health check is called.
type Prober struct {
	db      *bolt.DB
	timeout time.Duration

	mu      sync.Mutex
	running chan struct{} // closed when the probe in flight ends; nil if none
	started time.Time
}

// New returns a prober of db that waits at most timeout for an answer.
func New(db *bolt.DB, timeout time.Duration) *Prober {
	return &Prober{db: db, timeout: timeout}
}

// Check opens a read transaction and returns nil if it succeeds within the
// timeout, ErrNotAnswering if not (or if an earlier probe is still stuck
// past the timeout), or the transaction's error.
func (p *Prober) Check() error {
	p.mu.Lock()
	done := p.running
	if done == nil {
		ch := make(chan struct{})
		res := new(error)
		p.running, p.started, done = ch, time.Now(), ch
		go func() {
			*res = p.db.View(func(tx *bolt.Tx) error { return nil })
			p.mu.Lock()
			p.running = nil
			p.mu.Unlock()
			close(ch)
		}()
		p.mu.Unlock()
		t := time.NewTimer(p.timeout)
		defer t.Stop()
		select {
		case <-ch:
			return *res
		case <-t.C:
			return ErrNotAnswering
		}
	}
	started := p.started
	p.mu.Unlock()
	wait := time.Until(started.Add(p.timeout))
	if wait <= 0 {
		return ErrNotAnswering
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		return nil // the probe in flight answered in time
	case <-t.C:
		return ErrNotAnswering
	}
}
