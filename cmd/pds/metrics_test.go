package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func scrape(t *testing.T, u, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue parses Prometheus text and returns the value of the sample
// of name whose labels include want.
func metricValue(t *testing.T, text, name string, want map[string]string) (float64, bool) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("metrics are not Prometheus text: %v", err)
	}
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsOffByDefault(t *testing.T) {
	s := startServer(t, nil)
	if st, _ := scrape(t, s.URL+"/metrics", "admin", "admin-secret"); st == 200 {
		t.Fatal("/metrics is served without PDS_METRICS")
	}
}

// TestMetricsBehindAdmin: with PDS_METRICS=true, /metrics needs the admin
// password and counts requests by method and status, commits, firehose
// events and subscribers, blob bytes, the database size and crawl results.
func TestMetricsBehindAdmin(t *testing.T) {
	relay := newFakeRelay(t)
	s := startServer(t, map[string]string{"PDS_METRICS": "true", "PDS_CRAWLERS": relay.URL})
	if st, _ := scrape(t, s.URL+"/metrics", "", ""); st != 401 {
		t.Fatalf("/metrics without the password: %d", st)
	}
	if st, _ := scrape(t, s.URL+"/metrics", "admin", "nope"); st != 401 {
		t.Fatalf("/metrics with a wrong password: %d", st)
	}
	did, access, _ := s.createAccount(t)
	for range 3 {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("hi")})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	s.call(t, "POST", "com.atproto.repo.createRecord", "", "", map[string]any{}) // 401
	if st, _, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", pngBytes(t, 4096), "image/png"); st != 200 {
		t.Fatal(st)
	}
	u, _ := url.Parse(s.URL)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Let the subscriber join the live stream.
	deadline := time.Now().Add(5 * time.Second)
	for s.app.events.Subscribers() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	st, text := scrape(t, s.URL+"/metrics", "admin", "admin-secret")
	if st != 200 {
		t.Fatalf("/metrics: %d", st)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   func(float64) bool
	}{
		{"pds_http_requests_total", map[string]string{"method": "com.atproto.repo.createRecord", "status": "200"}, func(v float64) bool { return v == 3 }},
		{"pds_http_requests_total", map[string]string{"method": "com.atproto.repo.createRecord", "status": "401"}, func(v float64) bool { return v == 1 }},
		{"pds_http_request_duration_seconds", map[string]string{"method": "com.atproto.repo.createRecord"}, func(v float64) bool { return v == 4 }},
		{"pds_repo_commits_total", nil, func(v float64) bool { return v == 3 }},
		{"pds_firehose_events_total", nil, func(v float64) bool { return v == float64(s.app.events.LastSeq()) }},
		{"pds_firehose_last_seq", nil, func(v float64) bool { return v == float64(s.app.events.LastSeq()) && v > 0 }},
		{"pds_firehose_subscribers", nil, func(v float64) bool { return v == 1 }},
		{"pds_blob_bytes", nil, func(v float64) bool { return v == 4096 }},
		{"pds_bbolt_size_bytes", nil, func(v float64) bool { return v > 0 }},
		{"pds_crawl_requests_total", map[string]string{"relay": relay.URL, "result": "ok"}, func(v float64) bool { return v == 0 }},
		{"go_goroutines", nil, func(v float64) bool { return v > 0 }},
	} {
		v, ok := metricValue(t, text, tc.name, tc.labels)
		if !ok || !tc.want(v) {
			t.Errorf("%s%v = %v (present %v)", tc.name, tc.labels, v, ok)
		}
	}
	// Invented method names do not grow the label set without bound.
	for i := range maxMethodLabels + 50 {
		s.call(t, "GET", "com.example.m"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+strings.Repeat("y", i/26), "", "", nil)
	}
	_, text = scrape(t, s.URL+"/metrics", "admin", "admin-secret")
	if n := strings.Count(text, "pds_http_request_duration_seconds_count{"); n > maxMethodLabels+3 { // + other, other-path, well-known
		t.Fatalf("%d method labels, bound %d", n, maxMethodLabels)
	}
	if _, ok := metricValue(t, text, "pds_http_requests_total", map[string]string{"method": "other"}); !ok {
		t.Fatal("methods past the bound are not counted as other")
	}
}

// TestMetricsSeparateListener: PDS_METRICS_LISTEN serves /metrics on its
// own address without a password, and not on the public one.
func TestMetricsSeparateListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := startServer(t, map[string]string{"PDS_METRICS_LISTEN": addr})
	ctx, cancel := contextWithCancel()
	defer cancel()
	if err := s.app.serveMetricsListener(ctx); err != nil {
		t.Fatal(err)
	}
	s.call(t, "GET", "com.atproto.server.describeServer", "", "", nil)
	st, text := scrape(t, "http://"+addr+"/metrics", "", "")
	if st != 200 {
		t.Fatalf("separate listener: %d", st)
	}
	if v, ok := metricValue(t, text, "pds_http_requests_total", map[string]string{"method": "com.atproto.server.describeServer", "status": "200"}); !ok || v != 1 {
		t.Fatalf("describeServer count %v %v", v, ok)
	}
	if st, _ := scrape(t, s.URL+"/metrics", "admin", "admin-secret"); st == 200 {
		t.Fatal("/metrics is also on the public listener")
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
