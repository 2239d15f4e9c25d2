package auth

import (
	"context"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// NormalizeIdentifier is the form of a createSession identifier that is
// matched and rate-limited: trimmed and lower-cased, as the reference PDS
// lowercases it. Matching is exact on this form (no Unicode case folding):
// "alice.teſt" used to log in as alice.test through strings.EqualFold's
// folding of ſ to s while counting against its own rate-limit bucket. Now
// every spelling that can log in normalizes to one string; any other
// spelling (non-ASCII look-alikes, NFKC variants) fails without a hash.
func NormalizeIdentifier(identifier string) string {
	return strings.ToLower(strings.TrimSpace(identifier))
}

// LoginKey is the rate-limit key of a login identifier: the account's DID
// when the identifier names the account (its handle, email or DID share
// one budget), else the normalized identifier.
func (s *Store) LoginKey(identifier string) string {
	id := NormalizeIdentifier(identifier)
	var key string
	_ = s.db.View(func(tx *bolt.Tx) error {
		if acct, ok, err := s.getAccount(tx); err == nil && ok && acct.matches(id) {
			key = acct.DID.String()
		}
		return nil
	})
	if key == "" {
		return id
	}
	return key
}

// KnownAddrs remembers the client addresses the owner recently proved to
// be the owner from (a good login, a valid session token). Logins from them
// skip the per-identifier limit and hash with priority, so password
// guessing against the owner's handle from elsewhere cannot lock the owner
// out; the per-address limit still applies to them. Memory is bounded by
// maxKnownAddrs (the oldest is forgotten). It is safe for concurrent use.
type KnownAddrs struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time
}

const maxKnownAddrs = 64

// NewKnownAddrs remembers addresses for ttl after their last good use; now
// is the clock (nil: time.Now).
func NewKnownAddrs(ttl time.Duration, now func() time.Time) *KnownAddrs {
	if now == nil {
		now = time.Now
	}
	return &KnownAddrs{ttl: ttl, now: now, seen: map[string]time.Time{}}
}

// Remember records a good use from addr.
func (k *KnownAddrs) Remember(addr string) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.seen[addr]; !ok && len(k.seen) >= maxKnownAddrs {
		oldest, at := "", now
		for a, t := range k.seen {
			if t.Before(at) || oldest == "" {
				oldest, at = a, t
			}
		}
		delete(k.seen, oldest)
	}
	k.seen[addr] = now
}

// Known reports whether addr had a good use within the ttl.
func (k *KnownAddrs) Known(addr string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.seen[addr]
	return ok && k.now().Sub(t) < k.ttl
}

// WithPriorityIf is WithPriority when cond holds.
func WithPriorityIf(ctx context.Context, cond bool) context.Context {
	if cond {
		return WithPriority(ctx)
	}
	return ctx
}
