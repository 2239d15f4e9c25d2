package auth

import (
	"context"
	"errors"
	"runtime"
)

// ErrHashBusy: every password-hashing worker is busy and the queue is full.
// The API answers 429 (try again shortly).
var ErrHashBusy = errors.New("password hashing is saturated")

// A scrypt hash takes 16 MiB and tens of milliseconds of one core. Thirty
// parallel wrong logins used to run sixty of them at once (776 MiB, 2.2 GiB
// with spoofed addresses). HashPool runs them on a few workers behind a
// short queue, so memory is workers × 16 MiB whatever the load, and work
// beyond the queue is refused at once instead of piling up.
const (
	// hashQueue bounds the callers waiting for a worker.
	hashQueue = 32
	// maxHashWorkers caps the workers (default: GOMAXPROCS up to this).
	maxHashWorkers = 4
)

// HashPool bounds concurrent password hashing. One worker is kept for
// priority work (logins from the owner's known addresses, app password
// creation by a signed-in owner), so a flood of guesses cannot keep the
// owner out. It is safe for concurrent use.
type HashPool struct {
	workers  chan struct{}
	priority chan struct{}
	waiting  chan struct{}
}

// NewHashPool returns a pool of workers (0: GOMAXPROCS, at most 4) plus one
// priority worker, with a queue of hashQueue.
func NewHashPool(workers int) *HashPool {
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), maxHashWorkers)
	}
	return &HashPool{
		workers:  make(chan struct{}, workers),
		priority: make(chan struct{}, 1),
		waiting:  make(chan struct{}, hashQueue),
	}
}

type priorityKey struct{}

// WithPriority marks ctx as priority work for the HashPool: the caller has
// shown it is the owner (a known-good address, a valid session).
func WithPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, priorityKey{}, true)
}

func isPriority(ctx context.Context) bool {
	v, _ := ctx.Value(priorityKey{}).(bool)
	return v
}

// Do runs f on a worker. Without priority it returns ErrHashBusy at once
// when the queue is full; with it, it may also use the priority worker and
// never counts against the queue. It returns ctx's error if ctx ends first.
func (p *HashPool) Do(ctx context.Context, f func()) error {
	prio := isPriority(ctx)
	queued := false
	if !prio {
		select {
		case p.waiting <- struct{}{}:
			queued = true
		default:
			return ErrHashBusy
		}
	}
	// The queue slot is held only while waiting for a worker.
	leave := func() {
		if queued {
			<-p.waiting
			queued = false
		}
	}
	defer leave()
	var slot chan struct{}
	if prio {
		select {
		case p.priority <- struct{}{}:
			slot = p.priority
		case p.workers <- struct{}{}:
			slot = p.workers
		case <-ctx.Done():
			return ctx.Err()
		}
	} else {
		select {
		case p.workers <- struct{}{}:
			slot = p.workers
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	leave()
	defer func() { <-slot }()
	f()
	return nil
}

// hashPassword hashes a new account password on the pool.
func (s *Store) hashPassword(ctx context.Context, password string) (hash string, err error) {
	if perr := s.hashes.Do(ctx, func() { hash, err = hashPassword(password) }); perr != nil {
		return "", perr
	}
	return hash, err
}
