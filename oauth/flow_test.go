package oauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/auth/oauth"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// callResource makes a DPoP-bound call with indigo's client session (which
// handles nonces and refreshes itself) and decodes the answer.
func callResource(t *testing.T, sess *oauth.ClientSession, host, query string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, host+"/xrpc/com.example.check?"+query, nil)
	resp, err := sess.DoWithAuth(http.DefaultClient, req, syntax.NSID("com.example.check"))
	if err != nil {
		t.Fatalf("resource call: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// TestFlowWithIndigoClient runs the whole flow with indigo's OAuth client
// as the oracle: PAR → sign-in page → consent → code → token → DPoP-bound
// calls → refresh → revoke, against a real server on 127.0.0.1 and a
// client metadata server the test runs.
func TestFlowWithIndigoClient(t *testing.T) {
	ctx := context.Background()
	p := newTestPDS(t, pdsOptions{})
	scopes := []string{"atproto", "repo:app.bsky.feed.post?action=create"}
	site, cfg := newClientSite(t, scopes)
	app := p.newClientApp(cfg)

	authURL, _ := p.startFlow(app, scopes)
	cb := newBrowser(t).approve(p, authURL)
	if got := cb.Scheme + "://" + cb.Host + cb.Path; got != site.Cb {
		t.Fatalf("redirected to %s, want %s", got, site.Cb)
	}
	if cb.Query().Get("iss") != p.URL {
		t.Fatalf("iss = %q", cb.Query().Get("iss"))
	}
	sd, err := app.ProcessCallback(ctx, cb.Query())
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	if sd.AccountDID != testDID || strings.Join(sd.Scopes, " ") != strings.Join(scopes, " ") {
		t.Fatalf("session %+v", sd)
	}
	sess, err := app.ResumeSession(ctx, testDID, sd.SessionID)
	if err != nil {
		t.Fatal(err)
	}

	// The token allows creating posts, and nothing else.
	status, out := callResource(t, sess, p.URL, "collection=app.bsky.feed.post&action=create")
	if status != 200 || out["did"] != testDID.String() || out["repo"] != true {
		t.Fatalf("create post: %d %v", status, out)
	}
	for _, q := range []string{"collection=app.bsky.feed.post&action=delete", "collection=app.bsky.feed.like&action=create"} {
		if status, out := callResource(t, sess, p.URL, q); status != 200 || out["repo"] != false {
			t.Fatalf("%s: %d %v", q, status, out)
		}
	}

	// Refresh: new tokens, the old access token's session goes on.
	oldRefresh := sess.Data.RefreshToken
	if _, err := sess.RefreshTokens(ctx); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if sess.Data.RefreshToken == oldRefresh {
		t.Fatal("refresh token not rotated")
	}
	if status, _ := callResource(t, sess, p.URL, "collection=app.bsky.feed.post&action=create"); status != 200 {
		t.Fatalf("after refresh: %d", status)
	}

	// State survives a restart.
	p.restart()
	if status, _ := callResource(t, sess, p.URL, "collection=app.bsky.feed.post&action=create"); status != 200 {
		t.Fatalf("after restart: %d", status)
	}
	if _, err := sess.RefreshTokens(ctx); err != nil {
		t.Fatalf("refresh after restart: %v", err)
	}

	// Revoke (logout): both tokens stop working at once.
	access := sess.Data.AccessToken
	if err := app.Logout(ctx, testDID, sd.SessionID); err != nil {
		t.Fatalf("logout: %v", err)
	}
	sess.Data.AccessToken = access
	sess.Data.RefreshToken = "x"
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/xrpc/com.example.check", nil)
	resp, err := sess.DoWithAuth(http.DefaultClient, req, "com.example.check")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("revoked token answered %d", resp.StatusCode)
		}
	}
	if ss, _ := p.srv.Sessions(ctx); len(ss) != 0 {
		t.Fatalf("sessions after revoke: %+v", ss)
	}
}
