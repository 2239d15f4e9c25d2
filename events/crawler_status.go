package events

import "time"

// CrawlStatus is what the crawler knows about one relay.
type CrawlStatus struct {
	URL string
	// LastOK is when the relay last accepted requestCrawl (zero: never
	// since startup).
	LastOK time.Time
	// LastErr is the last failure's message, cleared by a success.
	LastErr    string
	LastErrAt  time.Time
	OK, Failed int64
}

// record notes a request's outcome; c.mu is held.
func (c *Crawler) record(u string, err error) {
	st := c.stats[u]
	if st == nil {
		st = &CrawlStatus{URL: u}
		c.stats[u] = st
	}
	if err != nil {
		st.Failed++
		st.LastErr, st.LastErrAt = err.Error(), time.Now()
		return
	}
	st.OK++
	st.LastOK, st.LastErr = time.Now(), ""
}

// Status returns the outcome so far for each configured relay, in
// configuration order.
func (c *Crawler) Status() []CrawlStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CrawlStatus, 0, len(c.cfg.URLs))
	for _, u := range c.cfg.URLs {
		if st := c.stats[u]; st != nil {
			out = append(out, *st)
		} else {
			out = append(out, CrawlStatus{URL: u})
		}
	}
	return out
}
