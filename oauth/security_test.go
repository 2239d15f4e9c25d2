package oauth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const postScope = "atproto repo:app.bsky.feed.post?action=create"

func wantOAuthError(t *testing.T, a oauthAnswer, status int, code string) {
	t.Helper()
	if a.Status != status || a.str("error") != code {
		t.Fatalf("got %d %v, want %d %s", a.Status, a.Body, status, code)
	}
	if a.str("access_token") != "" || a.str("refresh_token") != "" {
		t.Fatalf("tokens issued with an error: %v", a.Body)
	}
}

func TestPKCERefused(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	for _, tc := range []struct{ name, verifier string }{
		{"missing", ""},
		{"wrong", strings.Repeat("a", 43)},
		{"too short", "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := p.code(t, site, key, postScope)
			wantOAuthError(t, p.exchange(t, site, key, code, tc.verifier), 400, "invalid_grant")
			// The failed attempt burnt the code: the right verifier is too late.
			wantOAuthError(t, p.exchange(t, site, key, code, testVerifier), 400, "invalid_grant")
			if n := p.sessionCount(t); n != 0 {
				t.Fatalf("%d sessions issued", n)
			}
		})
	}
}

func TestCodeReuseRevokesSession(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	code := p.code(t, site, key, postScope)
	first := p.exchange(t, site, key, code, testVerifier)
	if first.Status != 200 {
		t.Fatalf("first exchange: %v", first.Body)
	}
	if a := p.call(t, first.str("access_token"), key, nil); a.Status != 200 {
		t.Fatalf("first token: %d %v", a.Status, a.Body)
	}
	wantOAuthError(t, p.exchange(t, site, key, code, testVerifier), 400, "invalid_grant")
	if a := p.call(t, first.str("access_token"), key, nil); a.Status != 401 {
		t.Fatalf("token of a reused code still works: %d", a.Status)
	}
	if n := p.sessionCount(t); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

func TestRedirectURIRefused(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	for _, ru := range []string{"https://evil.example/callback", site.Cb + "/../evil", site.Cb + "?x=1", "javascript:alert(1)"} {
		a := p.postForm(t, "/oauth/par", url.Values{"client_id": {site.ID}, "redirect_uri": {ru}, "response_type": {"code"},
			"scope": {postScope}, "code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}, key, nil)
		if a.Status != 400 || a.str("error") != "invalid_request" {
			t.Errorf("PAR with redirect_uri %q: %d %v", ru, a.Status, a.Body)
		}
	}
	// At the token endpoint, the redirect_uri must be the request's.
	code := p.code(t, site, key, postScope)
	a := p.postForm(t, "/oauth/token", url.Values{"client_id": {site.ID}, "grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {"https://evil.example/callback"}, "code_verifier": {testVerifier}}, key, nil)
	wantOAuthError(t, a, 400, "invalid_grant")
}

func TestParRefusals(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	base := func() url.Values {
		return url.Values{"client_id": {site.ID}, "redirect_uri": {site.Cb}, "response_type": {"code"}, "scope": {postScope},
			"code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}
	}
	for _, tc := range []struct {
		name, key, value, code string
	}{
		{"plain PKCE", "code_challenge_method", "plain", "invalid_request"},
		{"no challenge", "code_challenge", "", "invalid_request"},
		{"undeclared scope", "scope", "atproto transition:generic", "invalid_scope"},
		{"no atproto", "scope", "repo:app.bsky.feed.post?action=create", "invalid_scope"},
		{"token response type", "response_type", "token", "unsupported_response_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			f.Set(tc.key, tc.value)
			a := p.postForm(t, "/oauth/par", f, key, nil)
			if a.Status != 400 || a.str("error") != tc.code {
				t.Fatalf("%d %v", a.Status, a.Body)
			}
		})
	}
	t.Run("no DPoP", func(t *testing.T) {
		a := p.postForm(t, "/oauth/par", base(), nil, nil)
		if a.Status != 400 || a.str("error") != "invalid_dpop_proof" {
			t.Fatalf("%d %v", a.Status, a.Body)
		}
	})
	t.Run("no nonce", func(t *testing.T) {
		req := base()
		a := p.postForm(t, "/oauth/par", req, key, func(h, c map[string]any) { delete(c, "nonce") })
		if a.Status != 400 || a.str("error") != "use_dpop_nonce" || a.Header.Get("DPoP-Nonce") == "" {
			t.Fatalf("%d %v %v", a.Status, a.Body, a.Header)
		}
	})
}

func TestDPoPRefusedAtResource(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	tok := p.tokens(t, site, key, postScope).str("access_token")
	if a := p.call(t, tok, key, nil); a.Status != 200 {
		t.Fatalf("good call: %d %v", a.Status, a.Body)
	}
	for _, tc := range []struct {
		name string
		key  *dpopKey
		mut  func(h, c map[string]any)
		want string
	}{
		{"wrong htu", key, func(h, c map[string]any) { c["htu"] = p.URL + "/xrpc/com.example.other" }, "invalid_dpop_proof"},
		{"other host htu", key, func(h, c map[string]any) { c["htu"] = "https://evil.example/xrpc/com.example.check" }, "invalid_dpop_proof"},
		{"wrong htm", key, func(h, c map[string]any) { c["htm"] = "POST" }, "invalid_dpop_proof"},
		{"wrong ath", key, func(h, c map[string]any) { c["ath"] = challenge("another token") }, "invalid_dpop_proof"},
		{"no ath", key, func(h, c map[string]any) { delete(c, "ath") }, "invalid_dpop_proof"},
		{"stale nonce", key, func(h, c map[string]any) { c["nonce"] = p.srv.nonces.forSlot(p.srv.nonces.slot(time.Now()) - 3) }, "use_dpop_nonce"},
		{"no nonce", key, func(h, c map[string]any) { delete(c, "nonce") }, "use_dpop_nonce"},
		{"old iat", key, func(h, c map[string]any) { c["iat"] = time.Now().Add(-10 * time.Minute).Unix() }, "invalid_dpop_proof"},
		{"alg none", key, func(h, c map[string]any) { h["alg"] = "none" }, "invalid_dpop_proof"},
		{"wrong typ", key, func(h, c map[string]any) { h["typ"] = "jwt" }, "invalid_dpop_proof"},
		{"token without its key", newKey(t), nil, "invalid_dpop_proof"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := p.call(t, tok, tc.key, tc.mut)
			if a.Status != 401 || a.str("error") != tc.want {
				t.Fatalf("%d %v", a.Status, a.Body)
			}
			if !strings.Contains(a.Header.Get("WWW-Authenticate"), `error="`+tc.want+`"`) || a.Header.Get("DPoP-Nonce") == "" {
				t.Fatalf("headers %v", a.Header)
			}
		})
	}
	t.Run("replayed jti", func(t *testing.T) {
		u := p.URL + "/xrpc/com.example.check"
		proof := key.proof(t, "GET", u, p.srv.nonces.current(), tok, nil)
		for i, want := range []int{200, 401} {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("Authorization", "DPoP "+tok)
			req.Header.Set("DPoP", proof)
			if a := doReq(t, req); a.Status != want {
				t.Fatalf("use %d: %d %v", i, a.Status, a.Body)
			}
		}
	})
	t.Run("bearer scheme", func(t *testing.T) {
		req, _ := http.NewRequest("GET", p.URL+"/xrpc/com.example.check", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if a := doReq(t, req); a.Status != 401 {
			t.Fatalf("%d %v", a.Status, a.Body)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		p.clock.advance(AccessTokenLifetime + time.Minute)
		defer p.clock.advance(-AccessTokenLifetime - time.Minute)
		a := p.call(t, tok, key, func(h, c map[string]any) { c["iat"] = p.clock.now().Unix() })
		if a.Status != 401 || a.str("error") != "ExpiredToken" || !strings.Contains(a.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("%d %v %v", a.Status, a.Body, a.Header)
		}
	})
}

func TestDPoPRefusedAtTokenEndpoint(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	code := p.code(t, site, key, postScope)
	f := url.Values{"client_id": {site.ID}, "grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {site.Cb}, "code_verifier": {testVerifier}}
	wantOAuthError(t, p.postForm(t, "/oauth/token", f, key, func(h, c map[string]any) { c["htu"] = p.URL + "/oauth/par" }), 400, "invalid_dpop_proof")
	wantOAuthError(t, p.postForm(t, "/oauth/token", f, key, func(h, c map[string]any) { c["htm"] = "GET" }), 400, "invalid_dpop_proof")
	// A key other than the PAR's: the code is burnt.
	wantOAuthError(t, p.postForm(t, "/oauth/token", f, newKey(t), nil), 400, "invalid_dpop_proof")
	wantOAuthError(t, p.postForm(t, "/oauth/token", f, key, nil), 400, "invalid_grant")
	if n := p.sessionCount(t); n != 0 {
		t.Fatalf("%d sessions issued", n)
	}
}

func TestRefreshReuseRevokesFamily(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	first := p.tokens(t, site, key, postScope)
	second := p.refreshWith(t, site, key, first.str("refresh_token"), "")
	if second.Status != 200 || second.str("refresh_token") == first.str("refresh_token") {
		t.Fatalf("rotation: %d %v", second.Status, second.Body)
	}
	// The old refresh token again: refused, and the family is revoked.
	wantOAuthError(t, p.refreshWith(t, site, key, first.str("refresh_token"), ""), 400, "invalid_grant")
	wantOAuthError(t, p.refreshWith(t, site, key, second.str("refresh_token"), ""), 400, "invalid_grant")
	if a := p.call(t, second.str("access_token"), key, nil); a.Status != 401 {
		t.Fatalf("access token of a revoked family: %d", a.Status)
	}
	if n := p.sessionCount(t); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

func TestRefreshRefusals(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	scope := postScope + " repo:app.bsky.feed.like"
	site, _ := newClientSite(t, append(strings.Split(scope, " "), "transition:generic"))
	key := newKey(t)
	tok := p.tokens(t, site, key, scope)
	rt := tok.str("refresh_token")
	// Escalation: a scope the grant does not hold.
	wantOAuthError(t, p.refreshWith(t, site, key, rt, "atproto transition:generic"), 400, "invalid_scope")
	// Another DPoP key.
	wantOAuthError(t, p.refreshWith(t, site, newKey(t), rt, ""), 400, "invalid_dpop_proof")
	// The token still works after the refusals, and may narrow.
	a := p.refreshWith(t, site, key, rt, postScope)
	if a.Status != 200 || a.str("scope") != postScope {
		t.Fatalf("narrowing refresh: %d %v", a.Status, a.Body)
	}
	// Once narrowed, the old scope is an escalation.
	wantOAuthError(t, p.refreshWith(t, site, key, a.str("refresh_token"), scope), 400, "invalid_scope")
	// A refresh token past its lifetime.
	p.clock.advance(PublicRefreshLifetime + time.Hour)
	wantOAuthError(t, p.postForm(t, "/oauth/token", url.Values{"client_id": {site.ID}, "grant_type": {"refresh_token"},
		"refresh_token": {a.str("refresh_token")}}, key, func(h, c map[string]any) {
		c["iat"] = p.clock.now().Unix()
		c["nonce"] = p.srv.nonces.current()
	}), 400, "invalid_grant")
}

func TestClientMetadataPrivateAddress(t *testing.T) {
	// A TLS client-metadata server on 127.0.0.1, reached as "localhost":
	// the guard must refuse to connect (the hit counter stays 0).
	site, _ := newClientSite(t, []string{"atproto"})
	hits := 0
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		w.Header().Set("Content-Type", "application/json")
		w.Write(site.doc.Load().([]byte))
	}))
	defer tlsSrv.Close()
	p := newTestPDS(t, pdsOptions{allowPrivate: true})
	key := newKey(t)
	u, _ := url.Parse(tlsSrv.URL)
	for id, why := range map[string]string{
		"https://localhost:" + u.Port() + "/client-metadata.json": "forbidden outbound target",
		"https://127.0.0.1:" + u.Port() + "/client-metadata.json": "IP address",
		"http://example.com/client-metadata.json":                 "https",
		"https://user@example.com/client-metadata.json":           "credentials",
	} {
		a := p.postForm(t, "/oauth/par", url.Values{"client_id": {id}, "redirect_uri": {"https://example.com/cb"}, "response_type": {"code"},
			"scope": {"atproto"}, "code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}, key, nil)
		if a.Status != 400 || a.str("error") != "invalid_client_metadata" || !strings.Contains(a.str("error_description"), why) {
			t.Errorf("%s: %d %v", id, a.Status, a.Body)
		}
	}
	if hits != 0 {
		t.Fatalf("the guard let %d requests through to a private address", hits)
	}
}

func TestClientMetadataOverSizeBound(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, []string{"atproto"})
	doc := string(site.doc.Load().([]byte))
	big := strings.TrimSuffix(doc, "}") + `,"padding":"` + strings.Repeat("x", maxClientMetadataSize) + `"}`
	site.doc.Store([]byte(big))
	a := p.postForm(t, "/oauth/par", url.Values{"client_id": {site.ID}, "redirect_uri": {site.Cb}, "response_type": {"code"},
		"scope": {"atproto"}, "code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}, newKey(t), nil)
	if a.Status != 400 || a.str("error") != "invalid_client_metadata" || !strings.Contains(a.str("error_description"), "larger") {
		t.Fatalf("%d %v", a.Status, a.Body)
	}
}

func TestConsentCSRF(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	reqURI := p.par(t, site, key, postScope)
	authURL := p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode()
	b := newBrowser(t)
	_, page := b.get(authURL)
	resp, _ := b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {field(t, csrfRE, page)}, "request_uri": {reqURI},
		"identifier": {testHandle.String()}, "password": {testPassword}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	_, page = b.get(resp.Header.Get("Location"))
	good := field(t, csrfRE, page)
	for _, tc := range []struct {
		name string
		csrf string
		hdr  []string
	}{
		{"no token", "", nil},
		{"wrong token", strings.Repeat("A", len(good)), nil},
		{"sign-in token", field(t, csrfRE, page[:0]+signInPage(t, p, b, authURL)), nil},
		{"cross-site origin", good, []string{"Origin", "https://evil.example"}},
		{"cross-site fetch", good, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.post(p.URL+"/oauth/authorize/consent", url.Values{"csrf": {tc.csrf}, "request_uri": {reqURI}, "decision": {"allow"}}, tc.hdr...)
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" || strings.Contains(body, "cod-") {
				t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
	// Another browser (no cookies of the owner) with a valid-looking form.
	other := newBrowser(t)
	other.get(authURL)
	resp, _ = other.post(p.URL+"/oauth/authorize/consent", url.Values{"csrf": {good}, "request_uri": {reqURI}, "decision": {"allow"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign browser: %d", resp.StatusCode)
	}
	// The real form still works, once.
	resp, _ = b.post(p.URL+"/oauth/authorize/consent", url.Values{"csrf": {good}, "request_uri": {reqURI}, "decision": {"allow"}},
		"Origin", p.URL, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "code=cod-") {
		t.Fatalf("real consent: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = b.post(p.URL+"/oauth/authorize/consent", url.Values{"csrf": {good}, "request_uri": {reqURI}, "decision": {"allow"}})
	if resp.StatusCode == http.StatusSeeOther {
		t.Fatal("a request was answered twice")
	}
}

// signInPage returns a sign-in page for a fresh request of another browser
// state (its CSRF token has the wrong purpose for consent).
func signInPage(t *testing.T, p *testPDS, _ *browser, authURL string) string {
	_, page := newBrowser(t).get(authURL)
	return page
}

func TestPagesHeaders(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	reqURI := p.par(t, site, newKey(t), postScope)
	resp, page := newBrowser(t).get(p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode())
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "script-src") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("headers %v", resp.Header)
	}
	if strings.Contains(page, "<script") {
		t.Fatal("page has a script")
	}
	for _, want := range []string{"Test App", "127.0.0.1", `autocomplete="current-password"`, `<label for="password">`} {
		if !strings.Contains(page, want) {
			t.Errorf("sign-in page lacks %q", want)
		}
	}
	// Wrong password: the page again, with the error, no device cookie.
	b := newBrowser(t)
	_, page = b.get(p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode())
	resp, page = b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {field(t, csrfRE, page)}, "request_uri": {reqURI},
		"identifier": {testHandle.String()}, "password": {"wrong"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "Wrong handle or password") {
		t.Fatalf("%d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == cookieDevice {
			t.Fatal("device cookie after a wrong password")
		}
	}
}
