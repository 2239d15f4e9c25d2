package events

import (
	"context"
	"time"
)

// RequestNow asks every relay to crawl at once, outside the throttle of Run
// (an account just activated after migrating in: the relay should come now).
// It returns at once; the requests run in the background, bounded by the
// HTTP client's timeout and by a minute.
func (c *Crawler) RequestNow() {
	if len(c.cfg.URLs) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, u := range c.cfg.URLs {
			c.request(ctx, u)
		}
	}()
}
