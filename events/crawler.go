package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// CrawlerConfig configures crawl requests to relays.
type CrawlerConfig struct {
	// Hostname is the PDS's public host name, sent as {hostname}.
	Hostname string
	// URLs are the relays to notify (PDS_CRAWLERS), e.g. https://bsky.network.
	URLs []string
	// MinInterval bounds notifications while events flow (default 20 min);
	// IdleInterval repeats them when nothing happens (default 6 h), so a
	// quiet account is not marked idle by the relay.
	MinInterval, IdleInterval time.Duration
	HTTP                      *http.Client
	Log                       *slog.Logger
}

// Crawler sends com.atproto.sync.requestCrawl to relays: at startup, on the
// first event after startup, at most every MinInterval while events flow,
// and every IdleInterval when idle. It never blocks a writer.
type Crawler struct {
	cfg   CrawlerConfig
	kick  chan struct{}
	mu    sync.Mutex
	last  map[string]time.Time // last attempt per relay
	fails map[string]int
	// stats are the outcomes per relay, for Status.
	stats map[string]*CrawlStatus
}

// NewCrawler returns a crawler; call Run to start it and Notify on events.
func NewCrawler(cfg CrawlerConfig) *Crawler {
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 20 * time.Minute
	}
	if cfg.IdleInterval <= 0 {
		cfg.IdleInterval = 6 * time.Hour
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Crawler{cfg: cfg, kick: make(chan struct{}, 1), last: map[string]time.Time{}, fails: map[string]int{}, stats: map[string]*CrawlStatus{}}
}

// Notify tells the crawler an event was sequenced. It never blocks.
func (c *Crawler) Notify() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run sends crawl requests until ctx is done.
func (c *Crawler) Run(ctx context.Context) {
	if len(c.cfg.URLs) == 0 {
		return
	}
	for _, u := range c.cfg.URLs {
		c.request(ctx, u)
	}
	// Check often enough for the shortest interval.
	tick := time.NewTicker(min(time.Minute, c.cfg.MinInterval, c.cfg.IdleInterval))
	defer tick.Stop()
	// owed holds the relays not yet told about events since their last
	// request: a throttled event is sent once MinInterval has passed, not
	// dropped. The first event after startup goes out at once.
	owed := map[string]bool{}
	firstEvent := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
			for _, u := range c.cfg.URLs {
				owed[u] = true
			}
		case <-tick.C:
		}
		force := firstEvent && len(owed) > 0
		if force {
			firstEvent = false
		}
		for _, u := range c.cfg.URLs {
			every := c.cfg.IdleInterval
			if owed[u] {
				every = c.cfg.MinInterval
			}
			if !force && !c.due(u, every) {
				continue
			}
			if c.request(ctx, u) {
				delete(owed, u)
			}
		}
	}
}

// due reports whether relay u may be asked again: its last attempt is older
// than every, or than its backoff while it fails.
func (c *Crawler) due(u string, every time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	wait := every
	if c.fails[u] > 0 {
		wait = backoff(c.fails[u])
	}
	return time.Since(c.last[u]) >= wait
}

// backoff is 1, 2, 4 … minutes, at most an hour.
func backoff(fails int) time.Duration {
	d := time.Minute << min(fails-1, 6)
	return min(d, time.Hour)
}

func (c *Crawler) request(ctx context.Context, base string) bool {
	err := c.post(ctx, base)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[base] = time.Now()
	c.record(base, err)
	if err != nil {
		c.fails[base]++
		c.cfg.Log.Warn("requestCrawl failed", "relay", base, "err", err, "retry_in", backoff(c.fails[base]))
		return false
	}
	c.fails[base] = 0
	c.cfg.Log.Info("requestCrawl sent", "relay", base, "hostname", c.cfg.Hostname)
	return true
}

func (c *Crawler) post(ctx context.Context, base string) error {
	body, _ := json.Marshal(map[string]string{"hostname": c.cfg.Hostname})
	url := strings.TrimSuffix(base, "/") + "/xrpc/com.atproto.sync.requestCrawl"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
