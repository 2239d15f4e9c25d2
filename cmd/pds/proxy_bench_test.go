package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// BenchmarkProxyOverhead measures what the PDS adds to an AppView call:
// each iteration asks the fake AppView directly, then the same through the
// PDS (session check, service JWT, forwarding), on one keep-alive client.
// It reports both latencies' p50 and p99 and the difference, in µs.
//
//	go test -run '^$' -bench ProxyOverhead -benchtime 5000x ./cmd/pds/
func BenchmarkProxyOverhead(b *testing.B) {
	profile := map[string]any{"did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "handle": "bob.test", "displayName": "Bob",
		"description": "a profile of about a kilobyte, like the AppView's", "avatar": "https://cdn.bsky.app/img/avatar/plain/did:plc:x/bafkrei@jpeg",
		"followersCount": 1200, "followsCount": 300, "postsCount": 4000, "indexedAt": "2026-01-01T00:00:00.000Z",
		"viewer": map[string]any{"muted": false, "blockedBy": false}, "labels": []any{}, "pad": string(make([]byte, 600))}
	body, _ := json.Marshal(profile)
	feed, _ := json.Marshal(map[string]any{"feed": []any{map[string]any{"post": map[string]any{"uri": "at://did:plc:bob/app.bsky.feed.post/1",
		"cid": "bafyreib", "author": map[string]any{"did": "did:plc:bob", "handle": "bob.test"}, "record": map[string]any{"text": "hi"},
		"indexedAt": "2000-01-01T00:00:00.000Z"}}}})
	var rev string
	appview := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if r.URL.Path == "/xrpc/app.bsky.feed.getAuthorFeed" {
			w.Header().Set("Atproto-Repo-Rev", rev)
			_, _ = w.Write(feed)
			return
		}
		_, _ = w.Write(body)
	}))
	b.Cleanup(appview.Close)
	s := startBenchServer(b, map[string]string{
		"PDS_BSKY_APP_VIEW_URL":           appview.URL,
		"PDS_BSKY_APP_VIEW_DID":           "did:web:api.bsky.app",
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
	})
	code, err := s.app.accounts.InviteCode()
	if err != nil {
		b.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"handle": "alice.test", "email": "a@example.com", "password": "hunter2-hunter2", "inviteCode": code})
	st, _, raw := s.pxDo(b, pxReq{method: "POST", nsid: "com.atproto.server.createAccount", header: map[string]string{"Content-Type": "application/json"}, body: in})
	acct := pxJSON(b, "createAccount", raw)
	if st != 200 {
		b.Fatalf("createAccount: %d %v", st, acct)
	}
	did, token := acct["did"].(string), acct["accessJwt"].(string)
	// For the munged case: a post the AppView has not seen.
	rp, err := s.app.accounts.Repo()
	if err != nil {
		b.Fatal(err)
	}
	_, rev, _ = rp.Head()
	rec, _ := json.Marshal(map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": map[string]any{
		"$type": "app.bsky.feed.post", "text": "fresh", "createdAt": time.Now().UTC().Format(time.RFC3339)}})
	if st, _, raw := s.pxDo(b, pxReq{method: "POST", nsid: "com.atproto.repo.createRecord", token: token,
		header: map[string]string{"Content-Type": "application/json"}, body: rec}); st != 200 {
		b.Fatalf("createRecord: %d %s", st, raw)
	}

	if _, hdr, _ := s.pxDo(b, pxReq{method: "GET", nsid: "app.bsky.feed.getAuthorFeed", query: "actor=" + did, token: token}); hdr.Get("Atproto-Upstream-Lag") == "" {
		b.Fatal("the read-after-write case is not munged")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	get := func(u string, auth bool) time.Duration {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Atproto-Proxy", "did:web:api.bsky.app#bsky_appview")
		req.Header.Set("Atproto-Accept-Labelers", "did:plc:ar7c4by46qjdydhdevvrndac;redact")
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %s", u, resp.Status)
		}
		return d
	}
	for _, bc := range []struct{ name, path string }{
		{"passthrough", "/xrpc/app.bsky.actor.getProfile?actor=bob.test"},
		{"read-after-write", "/xrpc/app.bsky.feed.getAuthorFeed?actor=" + did},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for range 50 { // warm the connections and caches
				get(appview.URL+bc.path, false)
				get(s.URL+bc.path, true)
			}
			direct := make([]time.Duration, 0, b.N)
			viaPDS := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				direct = append(direct, get(appview.URL+bc.path, false))
				viaPDS = append(viaPDS, get(s.URL+bc.path, true))
			}
			b.StopTimer()
			dp50, dp99 := pxPercentiles(direct)
			pp50, pp99 := pxPercentiles(viaPDS)
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			b.ReportMetric(us(dp50), "direct-p50-µs")
			b.ReportMetric(us(dp99), "direct-p99-µs")
			b.ReportMetric(us(pp50), "pds-p50-µs")
			b.ReportMetric(us(pp99), "pds-p99-µs")
			b.ReportMetric(us(pp50-dp50), "added-p50-µs")
			b.ReportMetric(us(pp99-dp99), "added-p99-µs")
		})
	}
}

// pxPercentiles returns the p50 and p99 of ds (sorted in place).
func pxPercentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99)
}

// startBenchServer is startServer for benchmarks.
func startBenchServer(tb testing.TB, extra map[string]string) *testServer {
	tb.Helper()
	return startServerWith(tb, extra, nil)
}
