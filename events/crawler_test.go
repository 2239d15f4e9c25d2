package events

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRelay counts com.atproto.sync.requestCrawl calls on 127.0.0.1.
type fakeRelay struct {
	*httptest.Server
	status int
	hold   chan struct{} // if set, requests wait for it to close

	mu    sync.Mutex
	times []time.Time
	bad   []string // malformed requests
}

func newFakeRelay(t *testing.T, status int, hold chan struct{}) *fakeRelay {
	r := &fakeRelay{status: status, hold: hold}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body map[string]string
		err := json.NewDecoder(io.LimitReader(req.Body, 1024)).Decode(&body)
		r.mu.Lock()
		r.times = append(r.times, time.Now())
		if req.Method != http.MethodPost || req.URL.Path != "/xrpc/com.atproto.sync.requestCrawl" ||
			!strings.HasPrefix(req.Header.Get("Content-Type"), "application/json") ||
			err != nil || len(body) != 1 || body["hostname"] != "pds.example.com" {
			r.bad = append(r.bad, req.Method+" "+req.URL.String())
		}
		r.mu.Unlock()
		if r.hold != nil {
			select {
			case <-r.hold:
			case <-req.Context().Done():
			}
		}
		w.WriteHeader(r.status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *fakeRelay) requests() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.times...)
}

// waitCount polls until the relay has had n requests and returns their
// times; a deadline turns a hang into a failure.
func (r *fakeRelay) waitCount(t *testing.T, n int) []time.Time {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.requests()
		if len(got) >= n {
			r.mu.Lock()
			bad := r.bad
			r.mu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("malformed requests: %v", bad)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests, want %d", len(got), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func startCrawler(t *testing.T, cfg CrawlerConfig) *Crawler {
	cfg.Hostname = "pds.example.com"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	c := NewCrawler(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c
}

// wantGaps checks that consecutive requests are at least d apart: the
// crawler's throttle is a lower bound, never a latency goal.
func wantGaps(t *testing.T, times []time.Time, d time.Duration) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < d {
			t.Fatalf("requests %d and %d are %v apart, want at least %v", i-1, i, gap, d)
		}
	}
}

// TestCrawlerEvents: a request at startup, one at once on the first event,
// then at most one per MinInterval while events flow; an event that came
// too soon is sent once the interval has passed, not dropped.
func TestCrawlerEvents(t *testing.T) {
	const minInterval = 50 * time.Millisecond
	relay := newFakeRelay(t, http.StatusOK, nil)
	c := startCrawler(t, CrawlerConfig{URLs: []string{relay.URL + "/"}, MinInterval: minInterval, IdleInterval: time.Hour})
	relay.waitCount(t, 1)
	c.Notify() // the first event: at once, though startup was just now
	relay.waitCount(t, 2)
	for range 100 {
		c.Notify() // within MinInterval of the last request: throttled…
	}
	got := relay.waitCount(t, 3) // …and sent when it has passed
	wantGaps(t, got[1:], minInterval)
	for i := 4; i <= 6; i++ {
		c.Notify()
		got = relay.waitCount(t, i)
	}
	wantGaps(t, got[1:], minInterval)
}

// TestCrawlerIdle: without events, requests repeat every IdleInterval.
func TestCrawlerIdle(t *testing.T) {
	const idle = 60 * time.Millisecond
	relay := newFakeRelay(t, http.StatusOK, nil)
	startCrawler(t, CrawlerConfig{URLs: []string{relay.URL}, MinInterval: time.Hour, IdleInterval: idle})
	wantGaps(t, relay.waitCount(t, 4), idle)
}

// TestCrawlerBackoff: a relay answering 500 is retried with backoff
// (minutes), not on every event or tick, while a healthy relay listed after
// it keeps getting requests: each of those requests shows the crawler has
// just passed over the failing one.
func TestCrawlerBackoff(t *testing.T) {
	const minInterval = 30 * time.Millisecond
	failing := newFakeRelay(t, http.StatusInternalServerError, nil)
	healthy := newFakeRelay(t, http.StatusOK, nil)
	c := startCrawler(t, CrawlerConfig{URLs: []string{failing.URL, healthy.URL}, MinInterval: minInterval, IdleInterval: time.Hour})
	healthy.waitCount(t, 1)
	c.Notify() // the first event goes to both at once
	healthy.waitCount(t, 2)
	if n := len(failing.requests()); n != 2 {
		t.Fatalf("failing relay: %d requests, want 2 (startup, first event)", n)
	}
	for i := 3; i <= 8; i++ {
		c.Notify()
		healthy.waitCount(t, i)
	}
	if n := len(failing.requests()); n != 2 {
		t.Fatalf("failing relay: %d requests during its backoff, want 2", n)
	}
	wantGaps(t, healthy.requests()[1:], minInterval)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour, time.Hour} {
		if got := backoff(i + 1); got != want {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, want)
		}
	}
}

// TestCrawlerNeverBlocks: Notify returns at once even while a relay hangs,
// and Run stops on cancel in the middle of a request.
func TestCrawlerNeverBlocks(t *testing.T) {
	hold := make(chan struct{})
	relay := newFakeRelay(t, http.StatusOK, hold)
	t.Cleanup(func() { close(hold) }) // before the relay closes
	c := startCrawler(t, CrawlerConfig{URLs: []string{relay.URL}, MinInterval: time.Millisecond, IdleInterval: time.Hour})
	relay.waitCount(t, 1) // the startup request is now hanging
	done := make(chan struct{})
	go func() {
		for range 10_000 {
			c.Notify()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Notify blocked")
	}
	// The cleanup cancels Run mid-request and waits for it to return.
}

func TestCrawlerNoRelays(t *testing.T) {
	c := NewCrawler(CrawlerConfig{Hostname: "pds.example.com"})
	done := make(chan struct{})
	go func() { c.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run without relays did not return")
	}
	c.Notify()
	c.Notify()
}
