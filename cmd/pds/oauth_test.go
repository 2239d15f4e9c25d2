package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/auth/oauth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// The OAuth flow against the whole server, with indigo's OAuth client as
// the app: sign-in through the real pages, scoped XRPC calls (local and
// proxied), refresh, revoke, and the CLI.

type oauthApp struct {
	t      *testing.T
	s      *testServer
	did    syntax.DID
	app    *oauth.ClientApp
	site   *httptest.Server
	scopes []string
	// code, when set, is the account's email second factor: signIn then
	// expects the code page after the password, tries a wrong code, and
	// enters what code returns (the mailed one).
	code func() string
}

func newOAuthApp(t *testing.T, s *testServer, did string, scopes []string) *oauthApp {
	t.Helper()
	a := &oauthApp{t: t, s: s, did: syntax.DID(did), scopes: scopes}
	var doc []byte
	a.site = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	}))
	t.Cleanup(a.site.Close)
	cfg := oauth.NewPublicConfig(a.site.URL+"/client-metadata.json", a.site.URL+"/callback", scopes)
	doc, _ = json.Marshal(cfg.ClientMetadata())
	a.app = oauth.NewClientApp(&cfg, oauth.NewMemStore())
	a.app.Client = http.DefaultClient
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{DID: a.did, Handle: "alice.test",
		Services: map[string]identity.ServiceEndpoint{"atproto_pds": {Type: "AtprotoPersonalDataServer", URL: s.app.cfg.PublicURL}}})
	a.app.Dir = dir
	return a
}

var (
	pageCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	pageReq  = regexp.MustCompile(`name="request_uri" value="([^"]+)"`)
)

// signIn runs PAR, the sign-in and consent pages with password, and the
// callback; it returns the app's session.
func (a *oauthApp) signIn(password string) *oauth.ClientSession {
	t := a.t
	t.Helper()
	ctx := context.Background()
	resp, err := http.Get(a.s.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	var meta oauth.AuthServerMetadata
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta.Issuer != a.s.app.cfg.PublicURL {
		t.Fatalf("issuer %q", meta.Issuer)
	}
	info, err := a.app.SendAuthRequest(ctx, &meta, a.scopes, "alice.test")
	if err != nil {
		t.Fatalf("PAR: %v", err)
	}
	info.AccountDID = &a.did
	a.app.Store.SaveAuthRequestInfo(ctx, *info)

	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page := func(resp *http.Response, err error) (*http.Response, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	unesc := func(s string) string { return strings.NewReplacer("&amp;", "&", "&#43;", "+").Replace(s) }
	field := func(re *regexp.Regexp, p string) string {
		m := re.FindStringSubmatch(p)
		if m == nil {
			t.Fatalf("no %s in\n%s", re, p)
		}
		return unesc(m[1])
	}
	authURL := meta.AuthorizationEndpoint + "?" + url.Values{"client_id": {a.app.Config.ClientID}, "request_uri": {info.RequestURI}}.Encode()
	_, p := page(b.Get(authURL))
	resp, p = page(b.PostForm(a.s.app.cfg.PublicURL+"/oauth/authorize/sign-in", url.Values{"csrf": {field(pageCSRF, p)},
		"request_uri": {field(pageReq, p)}, "identifier": {"alice.test"}, "password": {password}}))
	if a.code != nil {
		if resp.StatusCode != http.StatusOK || !strings.Contains(p, "Check your email") {
			t.Fatalf("after the password: %d, not the code page\n%s", resp.StatusCode, p)
		}
		// The password alone does not reach the consent page.
		if _, p2 := page(b.Get(authURL)); strings.Contains(p2, "Allow this app") {
			t.Fatal("consent page before the second factor")
		}
		form := url.Values{"csrf": {field(pageCSRF, p)}, "request_uri": {field(pageReq, p)}}
		form.Set("code", "AAAAA-BBBBB")
		if resp, p = page(b.PostForm(a.s.app.cfg.PublicURL+"/oauth/authorize/sign-in", form)); resp.StatusCode != http.StatusUnauthorized ||
			!strings.Contains(p, "not right") {
			t.Fatalf("a wrong code: %d\n%s", resp.StatusCode, p)
		}
		form.Set("code", a.code())
		resp, p = page(b.PostForm(a.s.app.cfg.PublicURL+"/oauth/authorize/sign-in", form))
	}
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d\n%s", resp.StatusCode, p)
	}
	_, p = page(b.Get(resp.Header.Get("Location")))
	resp, p = page(b.PostForm(a.s.app.cfg.PublicURL+"/oauth/authorize/consent", url.Values{"csrf": {field(pageCSRF, p)},
		"request_uri": {field(pageReq, p)}, "decision": {"allow"}}))
	cb, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil {
		t.Fatalf("consent: %d %s", resp.StatusCode, p)
	}
	sd, err := a.app.ProcessCallback(ctx, cb.Query())
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	sess, err := a.app.ResumeSession(ctx, a.did, sd.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

// oauthCall makes a DPoP-bound XRPC call with the session.
func oauthCall(t *testing.T, sess *oauth.ClientSession, method, nsid, query string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	u := sess.Data.HostURL + "/xrpc/" + nsid
	if query != "" {
		u += "?" + query
	}
	var req *http.Request
	if body != nil {
		b, _ := json.Marshal(body)
		req, _ = http.NewRequest(method, u, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	} else {
		req, _ = http.NewRequest(method, u, nil)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := sess.DoWithAuth(http.DefaultClient, req, syntax.NSID(nsid))
	if err != nil {
		t.Fatalf("%s: %v", nsid, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func TestOAuthScopedCalls(t *testing.T) {
	w := newPxWorld(t, nil)
	s := w.s
	fh := fhSubscribe(t, strings.TrimPrefix(s.URL, "http://"), "")
	a := newOAuthApp(t, s, w.did, []string{"atproto", "repo:app.bsky.feed.post?action=create",
		"rpc:app.bsky.feed.getTimeline?aud=" + pxAppViewDID + "%23bsky_appview"})
	sess := a.signIn("hunter2-hunter2")

	// A post: allowed, committed, on the firehose.
	st, out := oauthCall(t, sess, "POST", "com.atproto.repo.createRecord", "", map[string]any{
		"repo": w.did, "collection": "app.bsky.feed.post", "record": post("posted by an OAuth app")})
	if st != 200 {
		t.Fatalf("createRecord: %d %v", st, out)
	}
	uri := out["uri"].(string)
	fh.waitUntil(t, "the post's commit", func(fs []fhFrame) bool {
		for _, f := range fs {
			if f.Commit != nil {
				for _, op := range f.Commit.Ops {
					if op.Action == "create" && strings.HasSuffix(uri, op.Path) {
						return true
					}
				}
			}
		}
		return false
	})
	rkey := uri[strings.LastIndex(uri, "/")+1:]

	// Nothing else.
	for _, c := range []struct {
		method, nsid string
		body         any
	}{
		{"POST", "com.atproto.repo.createRecord", map[string]any{"repo": w.did, "collection": "app.bsky.feed.like",
			"record": map[string]any{"$type": "app.bsky.feed.like", "subject": map[string]any{"uri": uri, "cid": out["cid"]}, "createdAt": "2026-11-29T12:00:00.000Z"}}},
		{"POST", "com.atproto.repo.deleteRecord", map[string]any{"repo": w.did, "collection": "app.bsky.feed.post", "rkey": rkey}},
		{"POST", "com.atproto.repo.putRecord", map[string]any{"repo": w.did, "collection": "app.bsky.feed.post", "rkey": rkey, "record": post("edited")}},
		{"POST", "com.atproto.repo.applyWrites", map[string]any{"repo": w.did, "writes": []any{map[string]any{
			"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey}}}},
		{"GET", "app.bsky.actor.getPreferences", nil},
		{"GET", "app.bsky.feed.getAuthorFeed", nil},
		{"POST", "com.atproto.server.createAppPassword", map[string]any{"name": "x"}},
		{"POST", "com.atproto.identity.updateHandle", map[string]any{"handle": "bob.test"}},
	} {
		if st, out := oauthCall(t, sess, c.method, c.nsid, "", c.body); st != 403 || out["error"] != "ScopeMissingError" {
			t.Errorf("%s: %d %v", c.nsid, st, out)
		}
	}
	if got := w.appview.take(); len(got) != 0 {
		t.Fatalf("refused calls reached the AppView: %+v", got)
	}
	// The post is still there, unchanged.
	if st, out := s.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+w.did+"&collection=app.bsky.feed.post&rkey="+rkey, nil); st != 200 ||
		out["value"].(map[string]any)["text"] != "posted by an OAuth app" {
		t.Fatalf("getRecord: %d %v", st, out)
	}

	// The allowed proxied method, with a service token the AppView accepts.
	if st, out := oauthCall(t, sess, "GET", "app.bsky.feed.getTimeline", "limit=1", nil); st != 200 {
		t.Fatalf("getTimeline: %d %v", st, out)
	}
	got := w.appview.take()
	if len(got) != 1 || got[0].Err != nil || got[0].Iss != w.did {
		t.Fatalf("AppView saw %+v", got)
	}
	// Service tokens: only for the allowed method and service.
	if st, out := oauthCall(t, sess, "GET", "com.atproto.server.getServiceAuth", "aud="+url.QueryEscape(pxAppViewDID+"#bsky_appview")+"&lxm=app.bsky.feed.getTimeline", nil); st != 200 || out["token"] == nil {
		t.Fatalf("getServiceAuth allowed: %d %v", st, out)
	}
	for _, q := range []string{"aud=" + url.QueryEscape(pxAppViewDID+"#bsky_appview") + "&lxm=app.bsky.feed.getAuthorFeed",
		"aud=" + url.QueryEscape("did:web:evil.test#bsky_appview") + "&lxm=app.bsky.feed.getTimeline",
		"aud=" + url.QueryEscape(pxAppViewDID+"#bsky_appview")} {
		if st, out := oauthCall(t, sess, "GET", "com.atproto.server.getServiceAuth", q, nil); st != 403 {
			t.Errorf("getServiceAuth %s: %d %v", q, st, out)
		}
	}
	// getSession works, without the email (no email scope).
	if st, out := oauthCall(t, sess, "GET", "com.atproto.server.getSession", "", nil); st != 200 || out["did"] != w.did || out["email"] != nil {
		t.Fatalf("getSession: %d %v", st, out)
	}

	// Refresh, then revoke: the tokens stop working.
	ctx := context.Background()
	if _, err := sess.RefreshTokens(ctx); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if st, _ := oauthCall(t, sess, "GET", "com.atproto.server.getSession", "", nil); st != 200 {
		t.Fatalf("after refresh: %d", st)
	}
	if err := sess.RevokeSession(ctx); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	sess.Data.RefreshToken = "ref-gone.gone"
	req, _ := http.NewRequest("GET", sess.Data.HostURL+"/xrpc/com.atproto.server.getSession", nil)
	if resp, err := sess.DoWithAuth(http.DefaultClient, req, "com.atproto.server.getSession"); err == nil {
		resp.Body.Close()
		t.Fatalf("revoked session answered %d", resp.StatusCode)
	}

	// The legacy logins are untouched: a password session still works.
	st, out = s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	if st != 200 {
		t.Fatalf("createSession: %d %v", st, out)
	}
	access := out["accessJwt"].(string)
	if st, out := s.call(t, "GET", "com.atproto.server.getSession", access, "", nil); st != 200 || out["email"] == nil {
		t.Fatalf("password session: %d %v", st, out)
	}
}

// TestOAuthCLI: pds oauth list|revoke, with the server stopped.
func TestOAuthCLI(t *testing.T) {
	s := startServer(t, map[string]string{"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true"})
	did, _, _ := s.createAccount(t)
	a := newOAuthApp(t, s, did, []string{"atproto", "transition:generic"})
	sess := a.signIn("hunter2-hunter2")
	if st, _ := oauthCall(t, sess, "GET", "com.atproto.server.getSession", "", nil); st != 200 {
		t.Fatalf("getSession: %d", st)
	}
	dataDir := s.app.cfg.DataDir
	s.stop()
	t.Setenv("PDS_DATA_DIRECTORY", dataDir)
	t.Setenv("PDS_HOSTNAME", "localhost")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"oauth", "list"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), a.app.Config.ClientID) {
		t.Fatalf("list: %d %s %s", code, stdout.String(), stderr.String())
	}
	id := strings.Fields(strings.Split(stdout.String(), "\n")[1])[0]
	stdout.Reset()
	if code := run([]string{"oauth", "revoke", id}, &stdout, &stderr); code != 0 {
		t.Fatalf("revoke: %d %s", code, stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"oauth", "list"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "no app") {
		t.Fatalf("list after revoke: %s", stdout.String())
	}
	if code := run([]string{"oauth", "revoke", id}, &stdout, &stderr); code != 1 {
		t.Fatalf("second revoke: %d", code)
	}
	if code := run([]string{"oauth"}, &stdout, &stderr); code != 2 {
		t.Fatalf("usage: %d", code)
	}
}
