package auth

import (
	"container/list"
	"sync"
	"time"
)

// RateLimiterMaxKeys is the most keys a RateLimiter tracks at once.
const RateLimiterMaxKeys = 10_000

// RateLimiter counts requests per key in fixed windows: a key's window opens
// at its first request and lasts Window; within it at most Limit requests are
// allowed. It is meant for createSession against password guessing (key: the
// client IP, or the identifier). Memory is bounded: keys whose window has
// ended are dropped, and when RateLimiterMaxKeys keys are tracked the one
// with the oldest window is dropped to admit a new key (which forgets its
// count; someone able to churn that many keys has that much budget anyway).
// It is safe for concurrent use.
type RateLimiter struct {
	limit   int
	window  time.Duration
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	entries map[string]*list.Element // of *rateEntry
	order   *list.List               // *rateEntry, oldest window first
}

type rateEntry struct {
	key   string
	count int
	reset time.Time
}

// NewRateLimiter returns a limiter of limit requests per window and key. now
// is its clock; nil means time.Now. It panics unless limit and window are
// positive.
func NewRateLimiter(limit int, window time.Duration, now func() time.Time) *RateLimiter {
	if limit <= 0 || window <= 0 {
		panic("auth: NewRateLimiter needs a positive limit and window")
	}
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{
		limit:   limit,
		window:  window,
		now:     now,
		maxKeys: RateLimiterMaxKeys,
		entries: map[string]*list.Element{},
		order:   list.New(),
	}
}

// Limit is the number of requests allowed per window (RateLimit-Limit).
func (l *RateLimiter) Limit() int { return l.limit }

// Window is the window length (the w of RateLimit-Policy).
func (l *RateLimiter) Window() time.Duration { return l.window }

// Allow consumes one request for key. ok is false when the key has used up
// its window (nothing is consumed then; the caller answers ErrRateLimited).
// remaining is what is left in the window after this request and reset the
// end of the window (RateLimit-Remaining, RateLimit-Reset).
func (l *RateLimiter) Allow(key string) (ok bool, remaining int, reset time.Time) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	// Windows have one length and open in time order, so expired entries
	// sit at the front.
	for f := l.order.Front(); f != nil && !now.Before(f.Value.(*rateEntry).reset); f = l.order.Front() {
		l.remove(f)
	}
	var e *rateEntry
	if el, found := l.entries[key]; found {
		e = el.Value.(*rateEntry)
		if !now.Before(e.reset) {
			// Expired but not at the front (the clock went backwards).
			l.remove(el)
			e = nil
		}
	}
	if e == nil {
		for len(l.entries) >= l.maxKeys {
			l.remove(l.order.Front())
		}
		e = &rateEntry{key: key, reset: now.Add(l.window)}
		l.entries[key] = l.order.PushBack(e)
	}
	if e.count >= l.limit {
		return false, 0, e.reset
	}
	e.count++
	return true, l.limit - e.count, e.reset
}

func (l *RateLimiter) remove(el *list.Element) {
	delete(l.entries, el.Value.(*rateEntry).key)
	l.order.Remove(el)
}
