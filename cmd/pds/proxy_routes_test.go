package main

import (
	"fmt"
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

// TestHeadOfGetRoutes: HEAD of a local GET method answers as GET would,
// without a body (CDNs probe getBlob this way); it is never proxied.
func TestHeadOfGetRoutes(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	img := pngBytes(t, 3000)
	st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", img, "image/png")
	if st != 200 {
		t.Fatalf("uploadBlob: %d %s", st, raw)
	}
	blob := pxJSON(t, "uploadBlob", raw)["blob"].(map[string]any)
	rec := post("with image")
	rec["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": blob}}}
	st2, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": rec})
	wantStatus(t, "createRecord", st2, out, 200, "")
	ref := blob["ref"].(map[string]any)["$link"].(string)
	st, hdr, body := s.pxDo(t, pxReq{method: "HEAD", nsid: "com.atproto.sync.getBlob", query: "did=" + did + "&cid=" + ref})
	if st != 200 || len(body) != 0 || hdr.Get("Content-Length") != "3000" || hdr.Get("Content-Type") != "image/png" {
		t.Fatalf("HEAD getBlob: %d, %d body bytes, headers %v", st, len(body), hdr)
	}
	st, _, _ = s.pxDo(t, pxReq{method: "HEAD", nsid: "_health"})
	if st != 200 {
		t.Fatalf("HEAD _health: %d", st)
	}
}

// TestLoginLimitPerForwardedClient: behind a trusted reverse proxy the
// login limit counts each client named by X-Forwarded-For, not the proxy;
// from an untrusted peer the header is ignored.
func TestLoginLimitPerForwardedClient(t *testing.T) {
	login := func(s *testServer, i int, client string) int {
		body := []byte(fmt.Sprintf(`{"identifier":"nobody%d.test","password":"wrong"}`, i))
		st, _, _ := s.pxDo(t, pxReq{method: "POST", nsid: "com.atproto.server.createSession", body: body,
			header: map[string]string{"Content-Type": "application/json", "X-Forwarded-For": client}})
		return st
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		otherOK bool // a second client is still allowed once the first is limited
	}{
		{"loopback proxy trusted by default", nil, true},
		{"proxy not trusted", map[string]string{"PDS_TRUSTED_PROXIES": "192.0.2.0/24"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.env)
			s.createAccount(t)
			for i := range 30 {
				if st := login(s, i, "198.51.100.1"); st != 401 {
					t.Fatalf("attempt %d: %d", i, st)
				}
			}
			if st := login(s, 30, "198.51.100.1"); st != 429 {
				t.Fatalf("31st attempt from the same client: %d, want 429", st)
			}
			want := 429
			if tc.otherOK {
				want = 401
			}
			if st := login(s, 31, "198.51.100.2"); st != want {
				t.Fatalf("another client: %d, want %d", st, want)
			}
		})
	}
}
