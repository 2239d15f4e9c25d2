package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTXT answers TXT lookups from a map.
type fakeTXT map[string][]string

func (f fakeTXT) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := f[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// blackHole accepts connections and never answers.
func blackHole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return "http://" + ln.Addr().String()
}

func findCheck(t *testing.T, rep *statusReport, prefix string) check {
	t.Helper()
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", prefix, rep.Checks)
	return check{}
}

// TestStatusChecks runs every check against 127.0.0.1 fakes: a handle
// served by well-known and DNS, the DID document in the mock PLC, an
// HTTPS health endpoint with a test certificate, and relays that answer,
// disagree or never answer; each verdict and fix is the expected one, and
// a silent network part costs no more than the timeout.
func TestStatusChecks(t *testing.T) {
	relay := newFakeRelay(t)
	var relayRev atomic.Value
	relayRev.Store("")
	relayMux := http.NewServeMux()
	relayMux.HandleFunc("/xrpc/com.atproto.sync.getHostStatus", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"hostname": "localhost", "seq": relay.seq.Load(), "status": "active"})
	})
	relayMux.HandleFunc("/xrpc/com.atproto.sync.getRepoStatus", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"did": r.URL.Query().Get("did"), "active": true, "rev": relayRev.Load()})
	})
	relayMux.HandleFunc("/xrpc/com.atproto.sync.requestCrawl", func(w http.ResponseWriter, r *http.Request) {})
	good := httptest.NewServer(relayMux)
	defer good.Close()
	silent := blackHole(t)

	s := startServer(t, map[string]string{"PDS_CRAWLERS": good.URL + "," + silent})
	did, _, _ := s.createAccount(t)
	_, head := s.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil)
	relayRev.Store(head["rev"].(string))

	wellKnown := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(did)) }))
	defer wellKnown.Close()
	tlsHealth := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"version":"x"}`)) }))
	defer tlsHealth.Close()
	probe := &statusProbe{
		HTTP:         tlsHealth.Client(), // trusts the test certificate only
		DNS:          fakeTXT{"_atproto.alice.test": {"did=" + did}},
		WellKnownURL: func(string) string { return wellKnown.URL },
		HealthURL:    tlsHealth.URL + "/xrpc/_health",
		Timeout:      500 * time.Millisecond,
		MinFree:      1,
	}
	probe.HTTP.Timeout = 0
	// The crawler's first round: the good relay accepts; the silent one
	// has not answered yet.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.app.crawler.Run(ctx)
	deadline := time.Now().Add(40 * time.Second)
	for {
		st := s.app.crawler.Status()
		if !st[0].LastOK.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("crawler: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	start := time.Now()
	rep := s.app.status(context.Background(), probe)
	if took := time.Since(start); took > 3*probe.Timeout {
		t.Fatalf("status took %v with a %v timeout", took, probe.Timeout)
	}
	want := map[string]string{
		"account": verdictOK, "handle": verdictOK, "did-document": verdictOK, "https": verdictOK,
		"crawl " + good.URL: verdictOK, "crawl " + silent: verdictWarn,
		"relay host " + good.URL: verdictOK, "relay repo " + good.URL: verdictOK,
		"relay host " + silent: verdictFail, "relay repo " + silent: verdictFail,
		"disk data": verdictOK, "disk blobs": verdictOK, "firehose": verdictOK,
	}
	for name, v := range want {
		c := findCheck(t, rep, name)
		if c.Name != name || c.Verdict != v {
			t.Errorf("%s: %+v, want %s", name, c, v)
		}
		if v == verdictFail && c.Fix == "" {
			t.Errorf("%s fails without a fix: %+v", name, c)
		}
	}

	// Each failure names its fix.
	for _, tc := range []struct {
		name  string
		setup func()
		check string
		fix   string
	}{
		{"handle pointing elsewhere", func() { probe.DNS = fakeTXT{"_atproto.alice.test": {"did=did:plc:someoneelse"}} }, "handle", "another DID"},
		{"handle resolving nowhere", func() {
			probe.DNS = fakeTXT{}
			probe.WellKnownURL = func(string) string { return silent }
		}, "handle", "TXT record"},
		{"certificate not trusted", func() { probe.HTTP = &http.Client{} }, "https", "valid certificate"},
		{"DID document with another endpoint", func() { s.app.cfg.PublicURL = "https://elsewhere.example" }, "did-document", "PLC operation"},
		{"relay ahead of our seq", func() { relay.seq.Store(1 << 40) }, "relay host " + good.URL, "pds seq raise"},
		{"relay behind our rev", func() { relayRev.Store("2222222222222") }, "relay repo " + good.URL, "catches up"},
		{"disk nearly full", func() { probe.MinFree = 1 << 62 }, "disk data", "free space"},
	} {
		tc.setup()
		rep := s.app.status(context.Background(), probe)
		c := findCheck(t, rep, tc.check)
		if c.Verdict == verdictOK || !strings.Contains(c.Fix, tc.fix) {
			t.Errorf("%s: %+v, want a fix mentioning %q", tc.name, c, tc.fix)
		}
	}
}

// TestStatusPageAndCLI: / is a plain HTML page (no script), the JSON
// report needs the admin password, and `pds status` prints the checks.
func TestStatusPageAndCLI(t *testing.T) {
	s := startServer(t, nil)
	s.createAccount(t)
	s.app.probe.Timeout = 200 * time.Millisecond
	// A visitor at / gets the reference's plain banner, and makes the
	// server probe nothing.
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	banner := body.String()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(banner, "AT Protocol Personal Data Server") || strings.Contains(banner, "did-document") || strings.Contains(banner, "disk") {
		t.Fatalf("/: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), banner)
	}
	s.app.statusCache.mu.Lock()
	probed := s.app.statusCache.last != nil
	s.app.statusCache.mu.Unlock()
	if probed {
		t.Fatal("a visit to / ran the status checks")
	}
	// The operator's page at /_pds/ needs the admin password; a browser
	// is asked for it.
	for _, pass := range []string{"", "wrong"} {
		req, _ := http.NewRequest("GET", s.URL+opsPrefix, nil)
		if pass != "" {
			req.SetBasicAuth("admin", pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("status page with password %q: %d, WWW-Authenticate %q", pass, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	st, page := scrape(t, s.URL+opsPrefix, "admin", "admin-secret")
	if st != 200 || !strings.Contains(page, "alice.test") || !strings.Contains(page, "did-document") || strings.Contains(page, "<script") {
		t.Fatalf("status page: %d\n%s", st, page)
	}
	if st, _ := scrape(t, s.URL+opsPrefix+"status", "", ""); st != 401 {
		t.Fatalf("status JSON without the password: %d", st)
	}
	backupEnv(t, s, t.TempDir())
	var stdout, stderr bytes.Buffer
	code := run([]string{"status"}, &stdout, &stderr)
	out := stdout.String()
	// On localhost the handle and HTTPS checks cannot pass: exit 3.
	if code != 3 || !strings.Contains(out, "[ok  ] account") || !strings.Contains(out, "fix:") {
		t.Fatalf("pds status: exit %d\n%s\n%s", code, out, stderr.String())
	}
}
