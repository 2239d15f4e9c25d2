package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/auth/oauth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/lexicons"
	bolt "go.etcd.io/bbolt"

	"github.com/bluesky-social/indigo/atproto/lexicon"
)

const (
	testDID      = syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	testHandle   = syntax.Handle("alice.test")
	testPassword = "correct horse battery staple"
)

// testAccount is the one account as the pages see it; CheckPassword
// compares with a fixed password (the real auth store is wired in api).
type testAccount struct{ checks atomic.Int64 }

func (a *testAccount) OAuthAccount(context.Context) (syntax.DID, syntax.Handle, error) {
	return testDID, testHandle, nil
}

func (a *testAccount) CheckPassword(_ context.Context, identifier, password string) error {
	a.checks.Add(1)
	if (identifier == testHandle.String() || identifier == testDID.String()) && password == testPassword {
		return nil
	}
	return auth.ErrInvalidLogin
}

// testPDS is an oauth.Server on a real bbolt file behind a real HTTP
// server on 127.0.0.1, with a resource route that authenticates with it.
type testPDS struct {
	t      testing.TB
	srv    *Server
	http   *httptest.Server
	db     *bolt.DB
	dbPath string
	URL    string
	clock  *testClock
}

type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func catalog(t testing.TB) lexicon.Catalog {
	t.Helper()
	cat := lexicon.NewBaseCatalog()
	if err := cat.LoadEmbedFS(lexicons.FS); err != nil {
		t.Fatal(err)
	}
	return cat
}

type pdsOptions struct {
	allowPrivate bool // default true: the client metadata server is on 127.0.0.1
	factor       SecondFactor
	httpClient   *http.Client
}

func newTestPDS(t testing.TB, opt pdsOptions) *testPDS {
	t.Helper()
	p := &testPDS{t: t, clock: &testClock{}, dbPath: filepath.Join(t.TempDir(), "pds.db")}
	mux := http.NewServeMux()
	p.http = httptest.NewServer(mux)
	t.Cleanup(p.http.Close)
	p.URL = p.http.URL
	p.open(opt)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { p.srv.Handler().ServeHTTP(w, r) })
	mux.HandleFunc("/xrpc/", p.resource)
	return p
}

func (p *testPDS) open(opt pdsOptions) {
	t := p.t
	db, err := bolt.Open(p.dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.db = db
	t.Cleanup(func() { db.Close() })
	s, err := New(Config{Issuer: p.URL, ServiceDID: "did:web:127.0.0.1", Secret: []byte("test secret"),
		AllowPrivateClients: !opt.allowPrivate, Lexicons: catalog(t), Now: p.clock.now, HTTPClient: opt.httpClient},
		Deps{DB: db, Account: &testAccount{}, SecondFactor: opt.factor})
	if err != nil {
		t.Fatal(err)
	}
	p.srv = s
}

// restart closes the database and opens a new Server over the same file,
// as a process restart would.
func (p *testPDS) restart() {
	p.db.Close()
	p.open(pdsOptions{})
}

// resource answers /xrpc/<nsid>: who called, and whether its scope allows
// repo:<collection>?action=<action> from the query.
func (p *testPDS) resource(w http.ResponseWriter, r *http.Request) {
	pr, err := p.srv.Authenticate(w, r)
	var re *ResourceError
	if errors.As(err, &re) {
		w.Header().Set("WWW-Authenticate", re.WWWAuthenticate)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(re.Status)
		json.NewEncoder(w).Encode(map[string]string{"error": re.Name, "message": re.Message})
		return
	}
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	q := r.URL.Query()
	json.NewEncoder(w).Encode(map[string]any{"did": pr.DID.String(), "client": pr.ClientID,
		"repo": pr.Permissions.AllowsRepo(q.Get("collection"), q.Get("action"))})
}

// clientSite serves a client metadata document on 127.0.0.1.
type clientSite struct {
	srv  *httptest.Server
	doc  atomic.Value // []byte
	hits atomic.Int64
	ID   string
	Cb   string
}

func newClientSite(t testing.TB, scopes []string) (*clientSite, *oauth.ClientConfig) {
	t.Helper()
	cs := &clientSite{}
	mux := http.NewServeMux()
	mux.HandleFunc("/client-metadata.json", func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(cs.doc.Load().([]byte))
	})
	cs.srv = httptest.NewServer(mux)
	t.Cleanup(cs.srv.Close)
	cs.ID = cs.srv.URL + "/client-metadata.json"
	cs.Cb = cs.srv.URL + "/callback"
	cfg := oauth.NewPublicConfig(cs.ID, cs.Cb, scopes)
	meta := cfg.ClientMetadata()
	name := "Test App"
	meta.ClientName = &name
	b, _ := json.Marshal(meta)
	cs.doc.Store(b)
	return cs, &cfg
}

// newClientApp is indigo's OAuth client for the test PDS: its directory
// maps the account to the PDS, so no network lookups happen.
func (p *testPDS) newClientApp(cfg *oauth.ClientConfig) *oauth.ClientApp {
	app := oauth.NewClientApp(cfg, oauth.NewMemStore())
	app.Client = http.DefaultClient
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{DID: testDID, Handle: testHandle,
		Services: map[string]identity.ServiceEndpoint{"atproto_pds": {Type: "AtprotoPersonalDataServer", URL: p.URL}}})
	app.Dir = dir
	return app
}

// authMeta fetches the authorization server metadata (indigo's resolver
// insists on https, so the test reads it directly).
func (p *testPDS) authMeta() *oauth.AuthServerMetadata {
	resp, err := http.Get(p.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m oauth.AuthServerMetadata
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		p.t.Fatal(err)
	}
	return &m
}

// startFlow sends the PAR with indigo's client and returns the URL the
// browser is sent to.
func (p *testPDS) startFlow(app *oauth.ClientApp, scopes []string) (string, *oauth.AuthRequestData) {
	p.t.Helper()
	ctx := context.Background()
	info, err := app.SendAuthRequest(ctx, p.authMeta(), scopes, testHandle.String())
	if err != nil {
		p.t.Fatalf("PAR: %v", err)
	}
	did := testDID
	info.AccountDID = &did
	if err := app.Store.SaveAuthRequestInfo(ctx, *info); err != nil {
		p.t.Fatal(err)
	}
	q := url.Values{"client_id": {app.Config.ClientID}, "request_uri": {info.RequestURI}}
	return p.URL + "/oauth/authorize?" + q.Encode(), info
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
type browser struct {
	t testing.TB
	c *http.Client
}

func newBrowser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) get(u string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func (b *browser) post(u string, form url.Values, hdr ...string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

var (
	csrfRE       = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	requestURIRE = regexp.MustCompile(`name="request_uri" value="([^"]+)"`)
)

func field(t testing.TB, re *regexp.Regexp, page string) string {
	t.Helper()
	m := re.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, page)
	}
	return htmlUnescape(m[1])
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&#43;", "+", "&amp;", "&", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}

// approve signs in on the page at authURL and allows the app, returning
// the callback URL the browser is sent back to.
func (b *browser) approve(p *testPDS, authURL string) *url.URL {
	b.t.Helper()
	resp, page := b.get(authURL)
	if resp.StatusCode != 200 || !strings.Contains(page, "Sign in") {
		b.t.Fatalf("sign-in page: %d\n%s", resp.StatusCode, page)
	}
	resp, page = b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {field(b.t, csrfRE, page)},
		"request_uri": {field(b.t, requestURIRE, page)}, "identifier": {testHandle.String()}, "password": {testPassword}})
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign-in: %d\n%s", resp.StatusCode, page)
	}
	return b.consent(p, resp.Header.Get("Location"), "allow")
}

// consent opens the consent page (the browser is signed in) and answers.
func (b *browser) consent(p *testPDS, authURL, decision string) *url.URL {
	b.t.Helper()
	resp, page := b.get(authURL)
	if resp.StatusCode != 200 || !strings.Contains(page, "Allow this app") {
		b.t.Fatalf("consent page: %d\n%s", resp.StatusCode, page)
	}
	resp, page = b.post(p.URL+"/oauth/authorize/consent", url.Values{"csrf": {field(b.t, csrfRE, page)},
		"request_uri": {field(b.t, requestURIRE, page)}, "decision": {decision}})
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("consent: %d\n%s", resp.StatusCode, page)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}
