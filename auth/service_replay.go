package auth

import (
	"sync"
	"time"
)

// JTICache refuses a second use of a service-auth token. The atproto spec
// gives service tokens a random jti so that receivers can refuse a replayed
// token; we do for the tokens we accept (uploadBlob from the video
// service), remembering each jti until its token expires (at most
// MaxServiceJWTLifetime). It is safe for concurrent use.
type JTICache struct {
	mu   sync.Mutex
	seen map[string]int64 // iss + " " + jti → exp (unix seconds)
	max  int
}

// maxJTIs bounds the remembered tokens. Only tokens that verified are
// remembered, so filling it takes tokens signed by a key we trust.
const maxJTIs = 10_000

// NewJTICache returns an empty cache.
func NewJTICache() *JTICache { return &JTICache{seen: map[string]int64{}, max: maxJTIs} }

// Use records the token's jti and reports whether it was unused. A token
// without jti is accepted (the claim is optional). When the cache is full
// of unexpired tokens, new ones are refused (failing closed).
func (c *JTICache) Use(claims *ServiceClaims, now time.Time) bool {
	if claims.Jti == "" {
		return true
	}
	key := claims.Iss + " " + claims.Jti
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[key]; ok && exp > now.Unix() {
		return false
	}
	if len(c.seen) >= c.max {
		for k, exp := range c.seen {
			if exp <= now.Unix() {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			return false
		}
	}
	c.seen[key] = claims.Exp
	return true
}
