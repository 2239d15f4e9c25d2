package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestLocalRoutesNotProxied: a local method called with the wrong HTTP
// method is refused here, as the reference does, not sent upstream.
func TestLocalRoutesNotProxied(t *testing.T) {
	w := newPxWorld(t, nil)
	st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "com.atproto.repo.createRecord", token: w.access})
	out := pxJSON(t, "GET createRecord", raw)
	if st != 400 || out["error"] != "InvalidRequest" || out["message"] != "Incorrect HTTP method (GET) expected POST" {
		t.Fatalf("GET createRecord: %d %v", st, out)
	}
	w.appview.none(t, "GET createRecord")
}

// TestForeignGetRecord: a getRecord of a repository hosted elsewhere goes
// to the AppView, as the reference does, without any credentials.
func TestForeignGetRecord(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	appview := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(r.Context()))
		mu.Unlock()
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(`{"uri":"at://did:plc:other/app.bsky.feed.post/x","value":{}}`))
	}))
	defer appview.Close()
	s := startServer(t, map[string]string{
		"PDS_BSKY_APP_VIEW_URL": appview.URL, "PDS_BSKY_APP_VIEW_DID": "did:web:appview.test",
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
	})
	_, access, _ := s.createAccount(t)
	q := "repo=did:plc:ewvi7nxzyoun6zhxrhs64oiz&collection=app.bsky.feed.post&rkey=3jzfcijpj2z2a"
	st, _, raw := s.pxDo(t, pxReq{method: "GET", nsid: "com.atproto.repo.getRecord", query: q, token: access})
	if st != 200 || !strings.Contains(string(raw), "did:plc:other") {
		t.Fatalf("foreign getRecord: %d %s", st, raw)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].URL.RawQuery != q || got[0].URL.Path != "/xrpc/com.atproto.repo.getRecord" || got[0].Header.Get("Authorization") != "" {
		t.Fatalf("AppView received %d requests: %+v", len(got), got)
	}
}
