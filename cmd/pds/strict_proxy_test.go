package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOperatorUpstreamsTrusted: with the SSRF guard on (no test-only
// allowance), the services the operator configured on plain http at a
// loopback address (the AppView, the report service) are reached, as the
// reference trusts its configuration; a service learned from a DID
// document at the same kind of address is still refused, with no
// connection to it.
func TestOperatorUpstreamsTrusted(t *testing.T) {
	w := newPxWorld(t, map[string]string{"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": ""})
	if w.s.app.cfg.AllowPrivateUpstreams {
		t.Fatal("the guard is off")
	}
	if !strings.HasPrefix(w.appview.URL(), "http://127.0.0.1:") {
		t.Fatalf("the AppView is at %s, want plain http on loopback", w.appview.URL())
	}
	// Fetch DID documents from the fake network on 127.0.0.1, so that the
	// proxy's own guard is what refuses the learned endpoint.
	w.s.app.resolver.HTTP = &http.Client{Timeout: 5 * time.Second}

	for _, tc := range []struct {
		name, method, nsid, query string
		header                    map[string]string
		body                      []byte
		svc                       *fakeSvc
		aud                       string
	}{
		{name: "AppView by default", method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=bob.test", svc: w.appview, aud: pxAppViewDID},
		{name: "AppView named in atproto-proxy", method: "GET", nsid: "app.bsky.feed.getTimeline",
			header: map[string]string{"Atproto-Proxy": pxAppViewDID + "#bsky_appview"}, svc: w.appview, aud: pxAppViewDID},
		{name: "report service", method: "POST", nsid: "com.atproto.moderation.createReport",
			header: map[string]string{"Content-Type": "application/json"},
			body:   []byte(`{"reasonType":"com.atproto.moderation.defs#reasonSpam","subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:spammer"}}`),
			svc:    w.report, aud: pxReportDID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, raw := w.s.pxDo(t, pxReq{method: tc.method, nsid: tc.nsid, query: tc.query, token: w.access, header: tc.header, body: tc.body})
			if st != 200 {
				t.Fatalf("status %d (%s), want 200", st, raw)
			}
			rec := tc.svc.one(t, tc.name, tc.nsid)
			checkSvcToken(t, tc.name, rec, w.did, tc.aud, tc.nsid)
		})
	}

	t.Run("public read of a foreign repo goes to the AppView", func(t *testing.T) {
		// Forwarded without credentials; the fake AppView answers that
		// with its own 401, which proves the call reached it.
		st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "com.atproto.repo.getRecord",
			query: "repo=did:plc:ewvi7nxzyoun6zhxrhs64oiz&collection=app.bsky.feed.post&rkey=3jzfcijpj2z2a"})
		if out := pxJSON(t, "foreign getRecord", raw); st != 401 || out["error"] != "BadJwt" {
			t.Fatalf("status %d (%s), want the AppView's own answer", st, raw)
		}
		if rec := w.appview.one(t, "foreign getRecord", "com.atproto.repo.getRecord"); rec.Header.Get("Authorization") != "" {
			t.Fatal("credentials crossed to the AppView")
		}
	})

	t.Run("chat service learned from a DID document stays behind the guard", func(t *testing.T) {
		st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "chat.bsky.convo.listConvos", token: w.access,
			header: map[string]string{"Atproto-Proxy": pxChatDID + "#bsky_chat"}})
		out := pxJSON(t, "chat", raw)
		if msg, _ := out["message"].(string); st != 400 || !strings.HasPrefix(msg, "proxy target refused") {
			t.Fatalf("want the SSRF refusal, got %d %v", st, out)
		}
		w.chat.none(t, "chat behind the guard")
	})
	for _, f := range []*fakeSvc{w.appview, w.report, w.chat, w.feedgen} {
		f.none(t, "after the cases")
	}
}
