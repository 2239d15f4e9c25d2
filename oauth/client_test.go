package oauth

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/auth/oauth"
)

// TestConfidentialClient: a private_key_jwt client (indigo's, with its key
// in the metadata's jwks) signs in; without its assertion, or with another
// key's, it is refused.
func TestConfidentialClient(t *testing.T) {
	ctx := context.Background()
	p := newTestPDS(t, pdsOptions{})
	scopes := []string{"atproto", "transition:generic"}
	site, cfg := newClientSite(t, scopes)
	priv, _ := atcrypto.GeneratePrivateKeyP256()
	if err := cfg.SetClientSecret(priv, "k1"); err != nil {
		t.Fatal(err)
	}
	meta := cfg.ClientMetadata()
	jwks := cfg.PublicJWKS()
	meta.JWKS = &jwks
	b, _ := json.Marshal(meta)
	site.doc.Store(b)

	app := p.newClientApp(cfg)
	authURL, _ := p.startFlow(app, scopes)
	sd, err := app.ProcessCallback(ctx, newBrowser(t).approve(p, authURL).Query())
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	sess, _ := app.ResumeSession(ctx, testDID, sd.SessionID)
	if _, err := sess.RefreshTokens(ctx); err != nil {
		t.Fatalf("confidential refresh: %v", err)
	}
	ss, _ := p.srv.Sessions(ctx)
	if len(ss) != 1 || !ss[0].Confidential || ss[0].ExpiresAt.Sub(ss[0].CreatedAt) != ConfidentialSessionLifetime {
		t.Fatalf("sessions %+v", ss)
	}

	key := newKey(t)
	base := url.Values{"client_id": {site.ID}, "redirect_uri": {site.Cb}, "response_type": {"code"}, "scope": {"atproto"},
		"code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}
	wantOAuthError(t, p.postForm(t, "/oauth/par", base, key, nil), 401, "invalid_client")

	other, _ := atcrypto.GeneratePrivateKeyP256()
	otherCfg := *cfg
	_ = otherCfg.SetClientSecret(other, "k1")
	assertion, _ := otherCfg.NewClientAssertion(p.URL)
	f := url.Values{}
	for k, v := range base {
		f[k] = v
	}
	f.Set("client_assertion_type", jwtBearer)
	f.Set("client_assertion", assertion)
	wantOAuthError(t, p.postForm(t, "/oauth/par", f, key, nil), 401, "invalid_client")

	// The right key, but the same assertion twice.
	good, _ := cfg.NewClientAssertion(p.URL)
	f.Set("client_assertion", good)
	if a := p.postForm(t, "/oauth/par", f, key, nil); a.Status != 201 {
		t.Fatalf("good assertion: %d %v", a.Status, a.Body)
	}
	wantOAuthError(t, p.postForm(t, "/oauth/par", f, key, nil), 401, "invalid_client")
}

// TestLoopbackClient: the development client http://localhost?... needs no
// metadata document.
func TestLoopbackClient(t *testing.T) {
	ctx := context.Background()
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, []string{"atproto"}) // only for its callback URL
	scopes := []string{"atproto", "transition:generic"}
	cfg := oauth.NewLocalhostConfig(strings.Replace(site.Cb, "localhost", "127.0.0.1", 1), scopes)
	app := p.newClientApp(&cfg)
	authURL, _ := p.startFlow(app, scopes)
	cb := newBrowser(t).approve(p, authURL)
	sd, err := app.ProcessCallback(ctx, cb.Query())
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	sess, _ := app.ResumeSession(ctx, testDID, sd.SessionID)
	if status, out := callResource(t, sess, p.URL, "collection=app.bsky.feed.like&action=delete"); status != 200 || out["repo"] != true {
		t.Fatalf("generic scope: %d %v", status, out)
	}
	if site.hits.Load() != 0 {
		t.Fatal("a loopback client's metadata was fetched")
	}
}

func TestLoopbackClientIDRules(t *testing.T) {
	for id, ok := range map[string]bool{
		"http://localhost":  true,
		"http://localhost/": true,
		"http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcb": true,
		"http://localhost?redirect_uri=http%3A%2F%2F%5B%3A%3A1%5D%2Fcb":    true,
		"http://localhost:8080": false,
		"http://localhost/path": false,
		"http://localhost?redirect_uri=http%3A%2F%2Flocalhost%2Fcb":     false,
		"http://localhost?redirect_uri=https%3A%2F%2Fevil.example%2Fcb": false,
		"http://localhost?other=1":                                      false,
	} {
		_, err := loopbackClient(id)
		if (err == nil) != ok {
			t.Errorf("%s: err = %v", id, err)
		}
	}
}
