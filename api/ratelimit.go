package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/pdsbox/pds/auth"
)

// rateLimit consumes a point from each limiter for its key, setting the
// RateLimit-* headers of the tightest in h (the response's), and answers
// 429 when one is spent.
func rateLimit(h http.Header, checks ...limitCheck) error {
	for _, c := range checks {
		ok, remaining, reset := c.l.Allow(c.key)
		h.Set("RateLimit-Limit", strconv.Itoa(c.l.Limit()))
		h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		h.Set("RateLimit-Policy", fmt.Sprintf("%d;w=%d", c.l.Limit(), int(c.l.Window().Seconds())))
		if !ok {
			return auth.ErrRateLimited
		}
	}
	return nil
}

type limitCheck struct {
	l   *auth.RateLimiter
	key string
}
