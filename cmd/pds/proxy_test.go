package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	iauth "github.com/bluesky-social/indigo/atproto/auth"
	atid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
)

// This file tests service proxying, service auth and preferences against
// fake upstream services on 127.0.0.1 that check every service-auth JWT
// they receive with indigo's validator, resolving our DID through the
// test's mock PLC. Its helpers (fakeSvc, pxFakeNet, pxDo) are shared with
// handle_test.go, appflow_test.go and proxy_bench_test.go.

// Test DIDs of the fake services.
const (
	pxAppViewDID = "did:web:appview.test"
	pxChatDID    = "did:web:chat.test"
	pxFeedgenDID = "did:web:feedgen.test"
	pxReportDID  = "did:web:mod.test"
)

// svcReq is one request a fake service received.
type svcReq struct {
	Method, NSID, RawQuery string
	Header                 http.Header
	Body                   []byte
	JWTHeader, Claims      map[string]any // decoded, unverified
	Iss                    string         // verified issuer
	Err                    error          // why the token was refused; nil if valid
}

// svcExpect is the audience and lxm a method's token must carry.
type svcExpect struct{ aud, lxm string }

// fakeSvc is an XRPC service (AppView, chat, feed generator, moderation) on
// 127.0.0.1. Every request must carry a service-auth JWT, which it verifies
// with indigo's ServiceAuthValidator (audience: its DID, or the expectation
// set for the method; lxm: the method) and records. Routes answer per
// method; the default answers {"served": <nsid>}.
type fakeSvc struct {
	did string
	srv *httptest.Server

	mu     sync.Mutex
	dir    atid.Directory
	got    []svcReq
	routes map[string]http.HandlerFunc
	expect map[string]svcExpect
}

func newFakeSvc(t testing.TB, did string) *fakeSvc {
	f := &fakeSvc{did: did, routes: map[string]http.HandlerFunc{}, expect: map[string]svcExpect{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the service's base URL.
func (f *fakeSvc) URL() string { return f.srv.URL }

// trust makes the service resolve token issuers through the PLC directory
// at plcURL, as a real service resolves them through plc.directory.
func (f *fakeSvc) trust(plcURL string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dir = &atid.BaseDirectory{PLCURL: plcURL, SkipHandleVerification: true}
}

func (f *fakeSvc) route(nsid string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[nsid] = h
}

func (f *fakeSvc) expectToken(nsid, aud, lxm string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expect[nsid] = svcExpect{aud, lxm}
}

// take returns the requests received since the last take.
func (f *fakeSvc) take() []svcReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := f.got
	f.got = nil
	return got
}

func (f *fakeSvc) serve(w http.ResponseWriter, r *http.Request) {
	nsid := strings.TrimPrefix(r.URL.Path, "/xrpc/")
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := svcReq{Method: r.Method, NSID: nsid, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	f.mu.Lock()
	exp, ok := f.expect[nsid]
	h := f.routes[nsid]
	dir := f.dir
	f.mu.Unlock()
	if !ok {
		exp = svcExpect{f.did, nsid}
	}
	tok, hasTok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !hasTok:
		rec.Err = errors.New("no bearer token")
	case dir == nil:
		rec.Err = errors.New("service has no directory")
	default:
		rec.JWTHeader, rec.Claims = decodeJWTParts(tok)
		v := iauth.ServiceAuthValidator{Audience: exp.aud, Dir: dir}
		lxm := syntax.NSID(exp.lxm)
		iss, err := v.Validate(r.Context(), tok, &lxm)
		rec.Iss, rec.Err = iss.String(), err
	}
	f.mu.Lock()
	f.got = append(f.got, rec)
	f.mu.Unlock()
	if rec.Err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "BadJwt", "message": rec.Err.Error()})
		return
	}
	if h != nil {
		h(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"served": nsid})
}

// decodeJWTParts decodes a JWT's header and claims without verifying it.
func decodeJWTParts(tok string) (hdr, claims map[string]any) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil
	}
	for i, dst := range []*map[string]any{&hdr, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err == nil {
			_ = json.Unmarshal(raw, dst)
		}
	}
	return hdr, claims
}

// checkSvcToken asserts that a received request carried a valid service JWT
// as the reference mints it: header {typ: JWT, alg: ES256K}, iss, bare aud,
// lxm, exp = iat + 60 s, iat now, a 16-byte hex jti.
func checkSvcToken(t *testing.T, what string, rec svcReq, iss, aud, lxm string) {
	t.Helper()
	if rec.Err != nil {
		t.Fatalf("%s: the service refused our JWT: %v", what, rec.Err)
	}
	if rec.JWTHeader["typ"] != "JWT" || rec.JWTHeader["alg"] != "ES256K" || len(rec.JWTHeader) != 2 {
		t.Fatalf("%s: JWT header %v", what, rec.JWTHeader)
	}
	c := rec.Claims
	if rec.Iss != iss || c["iss"] != iss || c["aud"] != aud || c["lxm"] != lxm {
		t.Fatalf("%s: claims %v (verified iss %s), want iss %s aud %s lxm %s", what, c, rec.Iss, iss, aud, lxm)
	}
	iat, _ := c["iat"].(float64)
	exp, _ := c["exp"].(float64)
	if exp-iat != 60 || time.Since(time.Unix(int64(iat), 0)).Abs() > 30*time.Second {
		t.Fatalf("%s: iat %v exp %v, want exp = iat + 60 and iat now", what, iat, exp)
	}
	if jti, _ := c["jti"].(string); len(jti) != 32 {
		t.Fatalf("%s: jti %q", what, jti)
	} else if _, err := hex.DecodeString(jti); err != nil {
		t.Fatalf("%s: jti %q is not hex", what, jti)
	}
}

// one asserts that exactly one request arrived, for nsid, and returns it.
func (f *fakeSvc) one(t *testing.T, what, nsid string) svcReq {
	t.Helper()
	got := f.take()
	if len(got) != 1 || got[0].NSID != nsid {
		var names []string
		for _, g := range got {
			names = append(names, g.Method+" "+g.NSID)
		}
		t.Fatalf("%s: %s received %v, want one %s", what, f.did, names, nsid)
	}
	return got[0]
}

// none asserts that nothing arrived.
func (f *fakeSvc) none(t *testing.T, what string) {
	t.Helper()
	if got := f.take(); len(got) != 0 {
		t.Fatalf("%s: %s received %d requests (%s …), want none", what, f.did, len(got), got[0].NSID)
	}
}

// pxFakeNet keeps every lookup the server makes on 127.0.0.1: did:web
// documents, handle well-known files and DNS TXT records come from here.
type pxFakeNet struct {
	srv *httptest.Server

	mu        sync.Mutex
	docs      map[string][]byte // did:web host → did.json
	wellKnown map[string]string // handle → atproto-did body
	txt       map[string][]string
	hits      map[string]int // request path → count
}

func newPxFakeNet(t testing.TB) *pxFakeNet {
	n := &pxFakeNet{docs: map[string][]byte{}, wellKnown: map[string]string{}, txt: map[string][]string{}, hits: map[string]int{}}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.hits[r.URL.Path]++
		kind, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		var body []byte
		found := false
		switch kind {
		case "did":
			body, found = n.docs[key]
		case "wk":
			var s string
			s, found = n.wellKnown[key]
			body = []byte(s)
		}
		n.mu.Unlock()
		if !found {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

// install points the server's resolver at the fake network.
func (n *pxFakeNet) install(s *testServer) {
	r := s.app.resolver
	r.DNS = n
	r.DIDWebURL = func(host string) string { return n.srv.URL + "/did/" + host }
	r.WellKnownURL = func(h syntax.Handle) string { return n.srv.URL + "/wk/" + h.String() }
}

// LookupTXT implements identity.TXTResolver.
func (n *pxFakeNet) LookupTXT(_ context.Context, name string) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if v, ok := n.txt[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// addDoc publishes the did:web document of did with the given services
// (fragment → endpoint).
func (n *pxFakeNet) addDoc(t testing.TB, did string, services map[string]string) {
	host, ok := strings.CutPrefix(did, "did:web:")
	if !ok {
		t.Fatalf("addDoc: %s is not a did:web", did)
	}
	var svcs []map[string]string
	for id, ep := range services {
		svcs = append(svcs, map[string]string{"id": "#" + id, "type": "AtprotoService", "serviceEndpoint": ep})
	}
	doc, _ := json.Marshal(map[string]any{"@context": []string{"https://www.w3.org/ns/did/v1"}, "id": did, "service": svcs})
	n.mu.Lock()
	defer n.mu.Unlock()
	n.docs[host] = doc
}

func (n *pxFakeNet) setTXT(name string, records ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.txt[name] = records
}

func (n *pxFakeNet) setWellKnown(handle, body string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wellKnown[handle] = body
}

func (n *pxFakeNet) hitCount(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits[path]
}

// pxClient sends requests exactly as the test builds them: no automatic
// Accept-Encoding, no redirects followed.
var pxClient = &http.Client{
	Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// pxReq is one XRPC request with arbitrary headers.
type pxReq struct {
	method, nsid, query string
	token               string
	header              map[string]string
	body                []byte
}

func (s *testServer) pxDo(t testing.TB, rq pxReq) (int, http.Header, []byte) {
	t.Helper()
	u := s.URL + "/xrpc/" + rq.nsid
	if rq.query != "" {
		u += "?" + rq.query
	}
	var rd io.Reader
	if rq.body != nil {
		rd = bytes.NewReader(rq.body)
	}
	req, err := http.NewRequest(rq.method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rq.token != "" {
		req.Header.Set("Authorization", "Bearer "+rq.token)
	}
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	resp, err := pxClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// pxJSON decodes an answer body, failing on non-JSON.
func pxJSON(t testing.TB, what string, raw []byte) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: non-JSON answer %q", what, raw)
	}
	return out
}

// pxWorld is a server proxying to a fake AppView (the default service), a
// fake report service and, through did:web documents on the fake network,
// a chat service and anything else a test publishes.
type pxWorld struct {
	s                              *testServer
	net                            *pxFakeNet
	appview, chat, feedgen, report *fakeSvc
	did, access                    string
}

func newPxWorld(t *testing.T, extra map[string]string) *pxWorld {
	t.Helper()
	w := &pxWorld{
		appview: newFakeSvc(t, pxAppViewDID),
		chat:    newFakeSvc(t, pxChatDID),
		feedgen: newFakeSvc(t, pxFeedgenDID),
		report:  newFakeSvc(t, pxReportDID),
		net:     newPxFakeNet(t),
	}
	vars := map[string]string{
		"PDS_BSKY_APP_VIEW_URL":           w.appview.URL(),
		"PDS_BSKY_APP_VIEW_DID":           pxAppViewDID,
		"PDS_REPORT_SERVICE_URL":          w.report.URL(),
		"PDS_REPORT_SERVICE_DID":          pxReportDID,
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
	}
	for k, v := range extra {
		vars[k] = v
	}
	w.s = startServer(t, vars)
	w.net.install(w.s)
	for _, f := range []*fakeSvc{w.appview, w.chat, w.feedgen, w.report} {
		f.trust(w.s.plc.URL)
	}
	w.net.addDoc(t, pxChatDID, map[string]string{"bsky_chat": w.chat.URL()})
	w.did, w.access, _ = w.s.createAccount(t)
	return w
}

// appPassword logs in with a new app password and returns its access token.
func (w *pxWorld) appPassword(t *testing.T, name string, privileged bool) string {
	t.Helper()
	st, ap := w.s.call(t, "POST", "com.atproto.server.createAppPassword", w.access, "", map[string]any{"name": name, "privileged": privileged})
	wantStatus(t, "createAppPassword", st, ap, 200, "")
	st, sess := w.s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": ap["password"]})
	wantStatus(t, "createSession (app password)", st, sess, 200, "")
	return sess["accessJwt"].(string)
}

// TestProxyPassthrough checks what crosses the proxy in each direction: the
// query string and body unchanged, only the reference's request and
// response headers, the status and error body of the upstream, 500 as 502
// UpstreamFailure, and a service JWT the upstream verifies.
func TestProxyPassthrough(t *testing.T) {
	w := newPxWorld(t, nil)
	big := make([]byte, 64<<10)
	_, _ = rand.Read(big)
	jsonAnswer := func(status int, body string, hdr map[string]string) http.HandlerFunc {
		return func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "application/json; charset=utf-8")
			for k, v := range hdr {
				rw.Header().Set(k, v)
			}
			rw.WriteHeader(status)
			_, _ = io.WriteString(rw, body)
		}
	}
	labelers := "did:plc:ar7c4by46qjdydhdevvrndac;redact"
	cases := []struct {
		name                string
		method, nsid, query string
		header              map[string]string
		body                []byte
		upstream            http.HandlerFunc
		svc                 *fakeSvc // which service receives it; nil: none
		aud                 string
		wantStatus          int
		wantBody            string            // exact answer body, if set
		wantError, wantMsg  string            // XRPC error, if set
		wantHeader          map[string]string // answer headers
		noHeader            []string          // answer headers that must not cross
		wantFwd             map[string]string // headers the upstream must receive
		noFwd               []string          // headers that must not reach it
	}{
		{
			name: "GET: query, forwarded and dropped headers both ways", method: "GET", nsid: "app.bsky.actor.searchActors",
			query: "q=al%C3%AFce+b&limit=5&cursor=a%2Fb%3D%3D&x=1&x=2",
			header: map[string]string{
				"Accept-Language": "fr-FR, en;q=0.5", "Atproto-Accept-Labelers": labelers, "X-Bsky-Topics": "dev,art", "Accept-Encoding": "gzip, br",
				"Cookie": "session=secret", "X-Custom": "private", "X-Forwarded-For": "203.0.113.9",
				"Atproto-Proxy": pxAppViewDID + "#bsky_appview", "Content-Type": "text/plain",
			},
			upstream: jsonAnswer(200, `{"actors":[{"did":"did:plc:bob","handle":"bob.test"}]}`, map[string]string{
				"Atproto-Repo-Rev": "3lzzzzzzzzz22", "Atproto-Content-Labelers": "did:plc:ar7c4by46qjdydhdevvrndac",
				"Retry-After": "7", "Content-Language": "fr", "Set-Cookie": "upstream=1", "X-Upstream-Secret": "s3cret",
			}),
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
			wantBody: `{"actors":[{"did":"did:plc:bob","handle":"bob.test"}]}`,
			wantHeader: map[string]string{
				"Content-Type": "application/json; charset=utf-8", "Atproto-Repo-Rev": "3lzzzzzzzzz22",
				"Atproto-Content-Labelers": "did:plc:ar7c4by46qjdydhdevvrndac", "Retry-After": "7", "Content-Language": "fr",
			},
			noHeader: []string{"Set-Cookie", "X-Upstream-Secret"},
			wantFwd:  map[string]string{"Accept-Language": "fr-FR, en;q=0.5", "Atproto-Accept-Labelers": labelers, "X-Bsky-Topics": "dev,art", "Accept-Encoding": "gzip, br"},
			noFwd:    []string{"Cookie", "X-Custom", "X-Forwarded-For", "Atproto-Proxy", "Content-Type"},
		},
		{
			name: "POST: JSON body and its content type", method: "POST", nsid: "app.bsky.graph.muteActor",
			header: map[string]string{"Content-Type": "application/json", "Cookie": "a=b"},
			body:   []byte(`{"actor":"did:plc:ewvi7nxzyoun6zhxrhs64oiz"}`),
			svc:    w.appview, aud: pxAppViewDID, wantStatus: 200,
			upstream: func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(200) },
			wantFwd:  map[string]string{"Content-Type": "application/json", "Content-Length": "44"},
			noFwd:    []string{"Cookie"},
		},
		{
			name: "POST: 64 KiB of raw bytes", method: "POST", nsid: "app.bsky.unspecced.uploadSomething",
			header: map[string]string{"Content-Type": "application/octet-stream"}, body: big,
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200, wantBody: `{"served":"app.bsky.unspecced.uploadSomething"}` + "\n",
			wantFwd: map[string]string{"Content-Type": "application/octet-stream", "Content-Length": strconv.Itoa(len(big))},
		},
		{
			name: "non-JSON answer", method: "GET", nsid: "app.bsky.unspecced.getText",
			upstream: func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
				_, _ = io.WriteString(rw, "plain words")
			},
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200, wantBody: "plain words",
			wantHeader: map[string]string{"Content-Type": "text/plain; charset=utf-8"},
		},
		{
			name: "upstream 400 passes through", method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=nobody.test",
			upstream: jsonAnswer(400, `{"error":"InvalidRequest","message":"Profile not found"}`, nil),
			svc:      w.appview, aud: pxAppViewDID, wantStatus: 400,
			wantBody: `{"error":"InvalidRequest","message":"Profile not found"}`,
		},
		{
			name: "upstream 404 passes through", method: "GET", nsid: "app.bsky.feed.getPosts", query: "uris=at%3A%2F%2Fx",
			upstream: jsonAnswer(404, `{"error":"NotFound","message":"gone"}`, nil),
			svc:      w.appview, aud: pxAppViewDID, wantStatus: 404, wantError: "NotFound", wantMsg: "gone",
		},
		{
			name: "upstream 429 with Retry-After", method: "GET", nsid: "app.bsky.feed.searchPosts", query: "q=x",
			upstream: jsonAnswer(429, `{"error":"RateLimitExceeded","message":"slow down"}`, map[string]string{"Retry-After": "30"}),
			svc:      w.appview, aud: pxAppViewDID, wantStatus: 429, wantError: "RateLimitExceeded",
			wantHeader: map[string]string{"Retry-After": "30"},
		},
		{
			name: "upstream 500 is 502 UpstreamFailure", method: "GET", nsid: "app.bsky.feed.getLikes", query: "uri=at%3A%2F%2Fx",
			upstream: jsonAnswer(500, `{"error":"InternalServerError","message":"database on fire"}`, nil),
			svc:      w.appview, aud: pxAppViewDID, wantStatus: 502, wantError: "UpstreamFailure",
			noHeader: []string{"Retry-After"},
		},
		{
			name: "createReport goes to the report service", method: "POST", nsid: "com.atproto.moderation.createReport",
			header: map[string]string{"Content-Type": "application/json"},
			body:   []byte(`{"reasonType":"com.atproto.moderation.defs#reasonSpam","subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:spammer"}}`),
			svc:    w.report, aud: pxReportDID, wantStatus: 200,
		},
		{
			name: "label.queryLabels goes to the AppView, as the reference sends it", method: "GET", nsid: "com.atproto.label.queryLabels", query: "uriPatterns=*",
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
		},
		{
			name: "identity.resolveIdentity goes to the AppView", method: "GET", nsid: "com.atproto.identity.resolveIdentity", query: "identifier=bob.test",
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
		},
		{
			name: "temp.fetchLabels goes to the AppView", method: "GET", nsid: "com.atproto.temp.fetchLabels",
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
		},
		{
			name: "lexicon.resolveLexicon goes to the AppView", method: "GET", nsid: "com.atproto.lexicon.resolveLexicon", query: "nsid=app.bsky.feed.post",
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
		},
		{
			name: "unknown com.atproto.server method is never proxied", method: "POST", nsid: "com.atproto.server.doSomethingNew",
			header: map[string]string{"Content-Type": "application/json"}, body: []byte(`{}`),
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "unknown com.atproto.repo method is never proxied", method: "GET", nsid: "com.atproto.repo.listEverything",
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "relay method sync.requestCrawl is not proxied", method: "POST", nsid: "com.atproto.sync.requestCrawl",
			header: map[string]string{"Content-Type": "application/json"}, body: []byte(`{"hostname":"x.test"}`),
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "admin method is not proxied", method: "GET", nsid: "com.atproto.admin.searchAccounts",
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "unknown com.atproto method with atproto-proxy naming the AppView is not proxied", method: "GET", nsid: "com.atproto.server.getEverything",
			header:     map[string]string{"Atproto-Proxy": pxAppViewDID + "#bsky_appview"},
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "com.atproto.x (a namespace that does not exist) is not proxied", method: "GET", nsid: "com.atproto.x.y",
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "chat.bsky without a header goes to the AppView", method: "GET", nsid: "chat.bsky.convo.getLog",
			svc: w.appview, aud: pxAppViewDID, wantStatus: 200,
		},
		{
			name: "protected method is never proxied", method: "GET", nsid: "com.atproto.server.getAccountInviteCodes",
			wantStatus: 501, wantError: "MethodNotImplemented",
		},
		{
			name: "PUT is refused", method: "PUT", nsid: "app.bsky.actor.getProfile", wantStatus: 405,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.svc != nil && tc.upstream != nil {
				tc.svc.route(tc.nsid, tc.upstream)
			}
			st, hdr, raw := w.s.pxDo(t, pxReq{method: tc.method, nsid: tc.nsid, query: tc.query, token: w.access, header: tc.header, body: tc.body})
			if st != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", st, raw, tc.wantStatus)
			}
			if tc.wantBody != "" && string(raw) != tc.wantBody {
				t.Fatalf("body %q, want %q", raw, tc.wantBody)
			}
			if tc.wantError != "" {
				out := pxJSON(t, tc.name, raw)
				if out["error"] != tc.wantError || (tc.wantMsg != "" && out["message"] != tc.wantMsg) {
					t.Fatalf("error %v, want %s %q", out, tc.wantError, tc.wantMsg)
				}
			}
			for k, v := range tc.wantHeader {
				if got := hdr.Get(k); got != v {
					t.Fatalf("answer header %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tc.noHeader {
				if got := hdr.Values(k); len(got) != 0 {
					t.Fatalf("answer header %s = %q crossed the proxy", k, got)
				}
			}
			for _, f := range []*fakeSvc{w.appview, w.report, w.chat} {
				if f == tc.svc {
					continue
				}
				f.none(t, tc.name)
			}
			if tc.svc == nil {
				return
			}
			rec := tc.svc.one(t, tc.name, tc.nsid)
			checkSvcToken(t, tc.name, rec, w.did, tc.aud, tc.nsid)
			if rec.Method != tc.method || rec.RawQuery != tc.query {
				t.Fatalf("upstream got %s ?%s, want %s ?%s", rec.Method, rec.RawQuery, tc.method, tc.query)
			}
			if tc.body != nil && !bytes.Equal(rec.Body, tc.body) {
				t.Fatalf("upstream body differs (%d bytes, want %d)", len(rec.Body), len(tc.body))
			}
			if rec.Header.Get("Authorization") == "Bearer "+w.access {
				t.Fatal("the user's access token reached the upstream")
			}
			for k, v := range tc.wantFwd {
				if got := rec.Header.Get(k); got != v {
					t.Fatalf("upstream header %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tc.noFwd {
				if got := rec.Header.Values(k); len(got) != 0 {
					t.Fatalf("upstream header %s = %q was forwarded", k, got)
				}
			}
		})
	}

	t.Run("unreachable upstream is 502", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + ln.Addr().String()
		ln.Close()
		w.net.addDoc(t, "did:web:down.test", map[string]string{"svc": closed})
		st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=x", token: w.access,
			header: map[string]string{"Atproto-Proxy": "did:web:down.test#svc"}})
		if out := pxJSON(t, "unreachable", raw); st != 502 || out["error"] != "UpstreamFailure" {
			t.Fatalf("unreachable: %d %v", st, out)
		}
	})

	t.Run("no session, no proxying", func(t *testing.T) {
		st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=x"})
		if out := pxJSON(t, "no session", raw); st != 401 || out["error"] != "AuthMissing" {
			t.Fatalf("no session: %d %v", st, out)
		}
		w.appview.none(t, "no session")
	})
}

// TestProxyChat reaches the chat service through its did:web document, as
// the app does with atproto-proxy: did:web:api.bsky.chat#bsky_chat, and
// checks the privileged-method rule for app passwords.
func TestProxyChat(t *testing.T) {
	w := newPxWorld(t, nil)
	plain := w.appPassword(t, "plain", false)
	priv := w.appPassword(t, "privileged", true)
	chatHdr := map[string]string{"Atproto-Proxy": pxChatDID + "#bsky_chat"}
	cases := []struct {
		name, method, nsid, query, token string
		body                             []byte
		header                           map[string]string
		proxied                          bool
		wantStatus                       int
		wantError, wantMsg               string
	}{
		{"listConvos, full session", "GET", "chat.bsky.convo.listConvos", "limit=20&readState=unread", w.access, nil, chatHdr, true, 200, "", ""},
		{"getLog, privileged app password", "GET", "chat.bsky.convo.getLog", "cursor=2222", priv, nil, chatHdr, true, 200, "", ""},
		{"sendMessage, privileged app password", "POST", "chat.bsky.convo.sendMessage", "", priv,
			[]byte(`{"convoId":"c1","message":{"text":"hi"}}`), map[string]string{"Atproto-Proxy": pxChatDID + "#bsky_chat", "Content-Type": "application/json"}, true, 200, "", ""},
		{"listConvos, app password", "GET", "chat.bsky.convo.listConvos", "", plain, nil, chatHdr, false, 400, "InvalidToken", "Bad token method"},
		{"sendMessage, app password", "POST", "chat.bsky.convo.sendMessage", "", plain,
			[]byte(`{"convoId":"c1","message":{"text":"hi"}}`), map[string]string{"Atproto-Proxy": pxChatDID + "#bsky_chat", "Content-Type": "application/json"}, false, 400, "InvalidToken", "Bad token method"},
		{"non-privileged chat method, app password", "GET", "chat.bsky.convo.getConvoAvailability", "members=did%3Aplc%3Abob", plain, nil, chatHdr, true, 200, "", ""},
		{"service missing from the document", "GET", "chat.bsky.convo.listConvos", "", w.access, nil,
			map[string]string{"Atproto-Proxy": pxChatDID + "#bsky_notif"}, false, 400, "InvalidRequest", "could not resolve proxy did service url"},
		{"DID without a document", "GET", "chat.bsky.convo.listConvos", "", w.access, nil,
			map[string]string{"Atproto-Proxy": "did:web:nowhere.test#bsky_chat"}, false, 400, "InvalidRequest", "could not resolve proxy did"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, _, raw := w.s.pxDo(t, pxReq{method: tc.method, nsid: tc.nsid, query: tc.query, token: tc.token, header: tc.header, body: tc.body})
			out := pxJSON(t, tc.name, raw)
			if st != tc.wantStatus || (tc.wantError != "" && (out["error"] != tc.wantError || out["message"] != tc.wantMsg)) {
				t.Fatalf("%d %v, want %d %s %q", st, out, tc.wantStatus, tc.wantError, tc.wantMsg)
			}
			w.appview.none(t, tc.name)
			if !tc.proxied {
				w.chat.none(t, tc.name)
				return
			}
			rec := w.chat.one(t, tc.name, tc.nsid)
			checkSvcToken(t, tc.name, rec, w.did, pxChatDID, tc.nsid)
			if rec.RawQuery != tc.query || !bytes.Equal(rec.Body, tc.body) && tc.body != nil {
				t.Fatalf("chat got ?%s %q", rec.RawQuery, rec.Body)
			}
		})
	}
}

// TestProxyGetFeed: the PDS asks the AppView for the generator record, then
// proxies getFeed with a token for the feed generator (aud = its DID, lxm =
// getFeedSkeleton), which the AppView hands on to the feed generator.
func TestProxyGetFeed(t *testing.T) {
	w := newPxWorld(t, nil)
	const owner = "did:plc:z72i7hdynmk6r22z27h6tvur"
	feedURI := "at://" + owner + "/app.bsky.feed.generator/hot"
	w.appview.route("com.atproto.repo.getRecord", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rw.Header().Set("Content-Type", "application/json")
		did := pxFeedgenDID
		if q.Get("rkey") == "broken" {
			did = ""
		}
		if q.Get("repo") != owner || q.Get("collection") != "app.bsky.feed.generator" {
			rw.WriteHeader(400)
			_, _ = io.WriteString(rw, `{"error":"RecordNotFound","message":"no"}`)
			return
		}
		_ = json.NewEncoder(rw).Encode(map[string]any{"uri": feedURI, "cid": "bafyreib", "value": map[string]any{
			"$type": "app.bsky.feed.generator", "did": did, "displayName": "Hot", "createdAt": "2026-01-01T00:00:00Z"}})
	})
	w.appview.expectToken("app.bsky.feed.getFeed", pxFeedgenDID, "app.bsky.feed.getFeedSkeleton")
	// The AppView passes the user's token on to the feed generator.
	w.appview.route("app.bsky.feed.getFeed", func(rw http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest("GET", w.feedgen.URL()+"/xrpc/app.bsky.feed.getFeedSkeleton?"+r.URL.RawQuery, nil)
		req.Header.Set("Authorization", r.Header.Get("Authorization"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			rw.WriteHeader(500)
			return
		}
		defer resp.Body.Close()
		var sk struct {
			Feed []struct {
				Post string `json:"post"`
			} `json:"feed"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&sk)
		var feed []any
		for _, it := range sk.Feed {
			feed = append(feed, map[string]any{"post": map[string]any{"uri": it.Post}})
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(resp.StatusCode)
		_ = json.NewEncoder(rw).Encode(map[string]any{"feed": feed, "cursor": "next"})
	})
	w.feedgen.route("app.bsky.feed.getFeedSkeleton", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"feed":[{"post":"at://did:plc:bob/app.bsky.feed.post/1"},{"post":"at://did:plc:bob/app.bsky.feed.post/2"}]}`)
	})

	q := "feed=" + url.QueryEscape(feedURI) + "&limit=2&cursor=abc"
	st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "app.bsky.feed.getFeed", query: q, token: w.access,
		header: map[string]string{"Atproto-Proxy": pxAppViewDID + "#bsky_appview", "Accept-Language": "en"}})
	out := pxJSON(t, "getFeed", raw)
	if st != 200 || len(out["feed"].([]any)) != 2 || out["cursor"] != "next" {
		t.Fatalf("getFeed: %d %v", st, out)
	}
	got := w.appview.take()
	if len(got) != 2 || got[0].NSID != "com.atproto.repo.getRecord" || got[1].NSID != "app.bsky.feed.getFeed" {
		t.Fatalf("AppView received %d requests", len(got))
	}
	if got[0].Err != nil {
		t.Fatalf("getRecord token: %v", got[0].Err)
	}
	checkSvcToken(t, "getFeed", got[1], w.did, pxFeedgenDID, "app.bsky.feed.getFeedSkeleton")
	if got[1].RawQuery != q || got[1].Header.Get("Accept-Language") != "en" {
		t.Fatalf("getFeed upstream: ?%s %v", got[1].RawQuery, got[1].Header)
	}
	sk := w.feedgen.one(t, "feed generator", "app.bsky.feed.getFeedSkeleton")
	checkSvcToken(t, "feed generator", sk, w.did, pxFeedgenDID, "app.bsky.feed.getFeedSkeleton")

	for _, bad := range []struct{ name, query string }{
		{"not a feed URI", "feed=at%3A%2F%2F" + owner + "%2Fapp.bsky.feed.post%2Fhot"},
		{"no feed", ""},
		{"generator without a did", "feed=" + url.QueryEscape("at://"+owner+"/app.bsky.feed.generator/broken")},
	} {
		st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: "app.bsky.feed.getFeed", query: bad.query, token: w.access})
		if out := pxJSON(t, bad.name, raw); st != 400 || out["error"] == nil {
			t.Fatalf("%s: %d %v", bad.name, st, out)
		}
		for _, g := range w.appview.take() {
			if g.NSID != "com.atproto.repo.getRecord" {
				t.Fatalf("%s: AppView received %s", bad.name, g.NSID)
			}
		}
	}
	w.feedgen.none(t, "bad feeds")
}

// TestGetServiceAuth checks the aud, lxm and exp rules of getServiceAuth
// and that its tokens validate with indigo's validator.
func TestGetServiceAuth(t *testing.T) {
	w := newPxWorld(t, nil)
	plain := w.appPassword(t, "plain", false)
	priv := w.appPassword(t, "privileged", true)
	dir := &atid.BaseDirectory{PLCURL: w.s.plc.URL, SkipHandleVerification: true}
	now := time.Now().Unix()
	cases := []struct {
		name, token, aud, lxm string
		exp                   int64 // 0: none
		wantStatus            int
		wantError, wantMsg    string
		wantTTL               int64
	}{
		{"default exp", w.access, "did:web:svc.test", "app.bsky.feed.getTimeline", 0, 200, "", "", 60},
		{"30 minutes, for video upload", w.access, "did:web:localhost", "com.atproto.repo.uploadBlob", now + 1800, 200, "", "", 1800},
		{"59 minutes", w.access, "did:web:svc.test", "app.bsky.feed.getTimeline", now + 3540, 200, "", "", 3540},
		{"no lxm, 30 seconds", w.access, "did:web:svc.test", "", now + 30, 200, "", "", 30},
		{"no lxm, default", w.access, "did:web:svc.test", "", 0, 200, "", "", 60},
		{"aud with a service fragment", w.access, "did:web:api.bsky.chat#bsky_chat", "chat.bsky.convo.getLog", 0, 200, "", "", 60},
		{"over an hour", w.access, "did:web:svc.test", "app.bsky.feed.getTimeline", now + 7200, 400, "BadExpiration",
			"cannot request a token with an expiration more than an hour in the future", 0},
		{"no lxm, over a minute", w.access, "did:web:svc.test", "", now + 300, 400, "BadExpiration",
			"cannot request a method-less token with an expiration more than a minute in the future", 0},
		{"in the past", w.access, "did:web:svc.test", "app.bsky.feed.getTimeline", now - 10, 400, "BadExpiration", "expiration is in past", 0},
		{"protected method", w.access, "did:web:svc.test", "com.atproto.server.createAppPassword", 0, 400, "InvalidRequest",
			"cannot request a service auth token for the following protected method: com.atproto.server.createAppPassword", 0},
		{"protected updateHandle", w.access, "did:web:svc.test", "com.atproto.identity.updateHandle", 0, 400, "InvalidRequest",
			"cannot request a service auth token for the following protected method: com.atproto.identity.updateHandle", 0},
		{"privileged method, app password", plain, "did:web:api.bsky.chat", "chat.bsky.convo.sendMessage", 0, 400, "InvalidRequest",
			"insufficient access to request a service auth token for the following method: chat.bsky.convo.sendMessage", 0},
		{"createAccount, app password", plain, "did:web:other-pds.test", "com.atproto.server.createAccount", 0, 400, "InvalidRequest",
			"insufficient access to request a service auth token for the following method: com.atproto.server.createAccount", 0},
		{"privileged method, privileged app password", priv, "did:web:api.bsky.chat", "chat.bsky.convo.sendMessage", 0, 200, "", "", 60},
		{"privileged method, full session", w.access, "did:web:other-pds.test", "com.atproto.server.createAccount", 0, 200, "", "", 60},
		{"ordinary method, app password", plain, "did:web:svc.test", "app.bsky.feed.getTimeline", 0, 200, "", "", 60},
		{"aud not a DID", w.access, "svc.test", "app.bsky.feed.getTimeline", 0, 400, "InvalidRequest", "", 0},
		{"lxm not an NSID", w.access, "did:web:svc.test", "getTimeline", 0, 400, "InvalidRequest", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"aud": {tc.aud}}
			if tc.lxm != "" {
				q.Set("lxm", tc.lxm)
			}
			if tc.exp != 0 {
				q.Set("exp", strconv.FormatInt(tc.exp, 10))
			}
			st, out := w.s.call(t, "GET", "com.atproto.server.getServiceAuth", tc.token, q.Encode(), nil)
			wantStatus(t, tc.name, st, out, tc.wantStatus, tc.wantError)
			if tc.wantMsg != "" && out["message"] != tc.wantMsg {
				t.Fatalf("message %q, want %q", out["message"], tc.wantMsg)
			}
			if st != 200 {
				return
			}
			tok := out["token"].(string)
			v := iauth.ServiceAuthValidator{Audience: tc.aud, Dir: dir}
			var lxm *syntax.NSID
			if tc.lxm != "" {
				n := syntax.NSID(tc.lxm)
				lxm = &n
			}
			iss, err := v.Validate(context.Background(), tok, lxm)
			if err != nil || iss.String() != w.did {
				t.Fatalf("indigo validation: %v (iss %s)", err, iss)
			}
			hdr, c := decodeJWTParts(tok)
			if hdr["alg"] != "ES256K" || hdr["typ"] != "JWT" {
				t.Fatalf("header %v", hdr)
			}
			if got := int64(c["exp"].(float64) - c["iat"].(float64)); got < tc.wantTTL-2 || got > tc.wantTTL+2 {
				t.Fatalf("exp - iat = %d, want %d", got, tc.wantTTL)
			}
			if _, has := c["lxm"]; has != (tc.lxm != "") {
				t.Fatalf("lxm claim %v, want %q", c["lxm"], tc.lxm)
			}
		})
	}
}

// TestUploadBlobServiceAuth: uploadBlob accepts a service JWT the account
// signed for this server (aud = did:web:localhost) and this method, as the
// video service uses it, and refuses any other.
func TestUploadBlobServiceAuth(t *testing.T) {
	w := newPxWorld(t, nil)
	serviceToken := func(aud, lxm string) string {
		q := url.Values{"aud": {aud}, "exp": {strconv.FormatInt(time.Now().Unix()+1800, 10)}}
		if lxm != "" {
			q.Set("lxm", lxm)
		} else {
			q.Set("exp", strconv.FormatInt(time.Now().Unix()+50, 10))
		}
		st, out := w.s.call(t, "GET", "com.atproto.server.getServiceAuth", w.access, q.Encode(), nil)
		wantStatus(t, "getServiceAuth", st, out, 200, "")
		return out["token"].(string)
	}
	key, err := w.s.app.accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	lxmUpload := syntax.NSID("com.atproto.repo.uploadBlob")
	indigoToken, err := iauth.SignServiceAuth(syntax.DID(w.did), "did:web:localhost", time.Minute, &lxmUpload, key)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := auth.SignServiceJWT(key, syntax.DID(w.did), "did:web:localhost", "com.atproto.repo.uploadBlob", time.Minute, time.Now().Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.SignServiceJWT(other, syntax.DID(w.did), "did:web:localhost", "com.atproto.repo.uploadBlob", time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, token string
		ok          bool
	}{
		{"getServiceAuth for uploadBlob", serviceToken("did:web:localhost", "com.atproto.repo.uploadBlob"), true},
		{"minted by indigo", indigoToken, true},
		{"another lxm", serviceToken("did:web:localhost", "com.atproto.repo.createRecord"), false},
		{"no lxm", serviceToken("did:web:localhost", ""), false},
		{"another aud", serviceToken("did:web:video.bsky.app", "com.atproto.repo.uploadBlob"), false},
		{"aud with a fragment", serviceToken("did:web:localhost#atproto_pds", "com.atproto.repo.uploadBlob"), false},
		{"expired", expired, false},
		{"signed by another key", forged, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := pngBytes(t, 3000)
			st, _, raw := w.s.pxDo(t, pxReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", token: tc.token,
				header: map[string]string{"Content-Type": "image/png"}, body: img})
			out := pxJSON(t, tc.name, raw)
			if tc.ok {
				if st != 200 || out["blob"].(map[string]any)["size"] != float64(len(img)) {
					t.Fatalf("%d %v", st, out)
				}
				return
			}
			if st < 400 || st >= 500 || out["error"] == nil {
				t.Fatalf("accepted or wrong refusal: %d %v", st, out)
			}
		})
	}
	// A service token is not a session anywhere else.
	tok := serviceToken("did:web:localhost", "com.atproto.repo.createRecord")
	st, out := w.s.call(t, "POST", "com.atproto.repo.createRecord", tok, "", map[string]any{"repo": w.did, "collection": "app.bsky.feed.post", "record": post("x")})
	if st < 400 || st >= 500 {
		t.Fatalf("createRecord with a service token: %d %v", st, out)
	}
}

// TestPreferences: stored locally unless atproto-proxy names another
// AppView; app.bsky items with $type only; app passwords neither see nor
// set personal details.
func TestPreferences(t *testing.T) {
	w := newPxWorld(t, nil)
	plain := w.appPassword(t, "plain", false)
	other := newFakeSvc(t, "did:web:otherview.test")
	other.trust(w.s.plc.URL)
	w.net.addDoc(t, "did:web:otherview.test", map[string]string{"bsky_appview": other.URL()})
	other.route("app.bsky.actor.getPreferences", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"preferences":[{"$type":"app.bsky.actor.defs#adultContentPref","enabled":true}]}`)
	})

	adult := map[string]any{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": false}
	saved := map[string]any{"$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": []any{map[string]any{"id": "3l", "type": "timeline", "value": "following", "pinned": true}}}
	birth := map[string]any{"$type": "app.bsky.actor.defs#personalDetailsPref", "birthDate": "1990-01-01T00:00:00.000Z"}
	types := func(out map[string]any) []string {
		var ts []string
		for _, p := range out["preferences"].([]any) {
			ts = append(ts, p.(map[string]any)["$type"].(string))
		}
		return ts
	}
	appviewHdr := map[string]string{"Atproto-Proxy": pxAppViewDID + "#bsky_appview"}
	steps := []struct {
		name, method, token string
		header              map[string]string
		prefs               []any // put body; nil for get
		wantStatus          int
		wantError           string
		wantTypes           []string // for gets
	}{
		{"empty at first", "GET", w.access, nil, nil, 200, "", nil},
		{"put three", "POST", w.access, nil, []any{adult, saved, birth}, 200, "", nil},
		{"get them back", "GET", w.access, appviewHdr, nil, 200, "", []string{"app.bsky.actor.defs#adultContentPref", "app.bsky.actor.defs#savedFeedsPrefV2", "app.bsky.actor.defs#personalDetailsPref"}},
		{"app password does not see personal details", "GET", plain, nil, nil, 200, "", []string{"app.bsky.actor.defs#adultContentPref", "app.bsky.actor.defs#savedFeedsPrefV2"}},
		{"missing $type", "POST", w.access, nil, []any{map[string]any{"enabled": true}}, 400, "InvalidRequest", nil},
		{"not app.bsky", "POST", w.access, nil, []any{map[string]any{"$type": "com.example.pref", "x": 1}}, 400, "InvalidRequest", nil},
		{"app password cannot set personal details", "POST", plain, nil, []any{adult, birth}, 400, "InvalidRequest", nil},
		{"app password replaces the rest", "POST", plain, nil, []any{saved}, 200, "", nil},
		{"personal details kept", "GET", w.access, nil, nil, 200, "", []string{"app.bsky.actor.defs#personalDetailsPref", "app.bsky.actor.defs#savedFeedsPrefV2"}},
		{"proxied to another AppView", "GET", w.access, map[string]string{"Atproto-Proxy": "did:web:otherview.test#bsky_appview"}, nil, 200, "", []string{"app.bsky.actor.defs#adultContentPref"}},
	}
	for _, st := range steps {
		var body []byte
		nsid := "app.bsky.actor.getPreferences"
		hdr := map[string]string{}
		for k, v := range st.header {
			hdr[k] = v
		}
		if st.method == "POST" {
			nsid = "app.bsky.actor.putPreferences"
			body, _ = json.Marshal(map[string]any{"preferences": st.prefs})
			hdr["Content-Type"] = "application/json"
		}
		code, _, raw := w.s.pxDo(t, pxReq{method: st.method, nsid: nsid, token: st.token, header: hdr, body: body})
		var out map[string]any
		if len(raw) > 0 {
			out = pxJSON(t, st.name, raw)
		}
		wantStatus(t, st.name, code, out, st.wantStatus, st.wantError)
		if st.method == "GET" && st.wantStatus == 200 {
			got := types(out)
			if strings.Join(got, ",") != strings.Join(st.wantTypes, ",") {
				t.Fatalf("%s: preferences %v, want %v", st.name, got, st.wantTypes)
			}
		}
		if strings.Contains(st.name, "proxied") {
			rec := other.one(t, st.name, "app.bsky.actor.getPreferences")
			checkSvcToken(t, st.name, rec, w.did, "did:web:otherview.test", "app.bsky.actor.getPreferences")
		} else {
			other.none(t, st.name)
		}
		w.appview.none(t, st.name)
	}
}

// TestProxyHeaderErrors: malformed atproto-proxy headers get the
// reference's messages, and nothing is sent anywhere.
func TestProxyHeaderErrors(t *testing.T) {
	w := newPxWorld(t, nil)
	cases := []struct{ header, msg string }{
		{"did:web:x", "no service id specified in proxy header"},
		{"#svc", "no did specified in proxy header"},
		{"#", "no did specified in proxy header"},
		{"did:web:x#", "no service id specified in proxy header"},
		{"did:web:x #", "no service id specified in proxy header"},
		{"did:web:x#a#b", "invalid proxy header format"},
		{"did:web:x #a#b", "invalid proxy header format"},
		{"did:web:x #svc", "proxy header cannot contain spaces"},
		{"did:web:x#svc x", "proxy header cannot contain spaces"},
		{"foo#bar", "Poorly formatted DID: foo"},
		{"did:web:x#svc", "could not resolve proxy did"},
	}
	for _, tc := range cases {
		t.Run(tc.header, func(t *testing.T) {
			for _, nsid := range []string{"app.bsky.actor.getProfile", "app.bsky.feed.getTimeline"} {
				st, _, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: nsid, query: "actor=x", token: w.access,
					header: map[string]string{"Atproto-Proxy": tc.header}})
				out := pxJSON(t, tc.header, raw)
				if st != 400 || out["error"] != "InvalidRequest" || out["message"] != tc.msg {
					t.Fatalf("%s: %d %v, want 400 InvalidRequest %q", nsid, st, out, tc.msg)
				}
			}
			w.appview.none(t, tc.header)
			w.chat.none(t, tc.header)
		})
	}
}

// TestProxySSRF: without the test-only allowance, a DID document naming a
// loopback, private, link-local or plain-http endpoint is refused, and the
// listener behind it receives no connection. Literal addresses are refused
// before any connection is attempted; names are refused at dial time, on
// the resolved address.
func TestProxySSRF(t *testing.T) {
	s := startServer(t, nil) // PDS_DEV_ALLOW_PRIVATE_UPSTREAMS unset
	fnet := newPxFakeNet(t)
	fnet.install(s)
	// The documents themselves come from 127.0.0.1: let the resolver fetch
	// them, so that the proxy client is what enforces the guard.
	s.app.resolver.HTTP = &http.Client{Timeout: 5 * time.Second}
	_, access, _ := s.createAccount(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	cases := []struct {
		name, endpoint string
		literal        bool // refused before connecting, by address
	}{
		{"loopback IPv4", "https://127.0.0.1:" + port, true},
		{"loopback by name", "https://localhost:" + port, false},
		{"plain http", "http://example.com", true},
		{"plain http loopback", "http://127.0.0.1:" + port, true},
		{"private 10/8", "https://10.1.2.3", true},
		{"private 192.168/16", "https://192.168.1.1", true},
		{"private 172.16/12", "https://172.16.0.1:" + port, true},
		{"link-local metadata", "https://169.254.169.254/latest/meta-data", true},
		{"this host", "https://0.0.0.0:" + port, true},
		{"loopback IPv6", "https://[::1]:" + port, true},
		{"IPv4-mapped loopback", "https://[::ffff:127.0.0.1]:" + port, true},
		{"link-local IPv6", "https://[fe80::1]:" + port, true},
		{"unique local IPv6", "https://[fd00::1]:" + port, true},
		{"CGNAT", "https://100.64.0.1", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			did := fmt.Sprintf("did:web:target%d.test", i)
			fnet.addDoc(t, did, map[string]string{"svc": tc.endpoint})
			start := time.Now()
			st, _, raw := s.pxDo(t, pxReq{method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=x", token: access,
				header: map[string]string{"Atproto-Proxy": did + "#svc"}})
			out := pxJSON(t, tc.name, raw)
			if st < 400 || out["error"] == nil {
				t.Fatalf("not refused: %d %v", st, out)
			}
			msg, _ := out["message"].(string)
			if tc.literal && (st != 400 || !strings.HasPrefix(msg, "proxy target refused")) {
				t.Fatalf("want a refusal before connecting, got %d %v", st, out)
			}
			if !tc.literal && (st != 502 || out["error"] != "UpstreamFailure") {
				t.Fatalf("want a dial-time refusal, got %d %v", st, out)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("refusal took %v", d)
			}
			if fnet.hitCount("/did/target"+strconv.Itoa(i)+".test") != 1 {
				t.Fatal("the DID document was not fetched")
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the target listener accepted %d connections", n)
	}
}

// TestReadAfterWrite: the account's own records newer than the AppView's
// Atproto-Repo-Rev appear at once in the six munged reads, marked by
// Atproto-Upstream-Lag; when the AppView is current, its answer crosses
// byte for byte.
func TestReadAfterWrite(t *testing.T) {
	w := newPxWorld(t, nil)
	now := func() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }
	create := func(coll, rkey string, rec map[string]any) (uri, cid string) {
		t.Helper()
		in := map[string]any{"repo": w.did, "collection": coll, "record": rec}
		nsid := "com.atproto.repo.createRecord"
		if rkey != "" {
			in["rkey"] = rkey
			nsid = "com.atproto.repo.putRecord"
		}
		st, out := w.s.call(t, "POST", nsid, w.access, "", in)
		wantStatus(t, nsid, st, out, 200, "")
		return out["uri"].(string), out["cid"].(string)
	}
	head := func() string {
		t.Helper()
		st, out := w.s.call(t, "GET", "com.atproto.sync.getLatestCommit", "", "did="+w.did, nil)
		wantStatus(t, "getLatestCommit", st, out, 200, "")
		return out["rev"].(string)
	}
	create("app.bsky.actor.profile", "self", map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Old name"})
	oldURI, oldCID := create("app.bsky.feed.post", "", map[string]any{"$type": "app.bsky.feed.post", "text": "indexed long ago", "createdAt": now()})
	indexedRev := head() // what the AppView has seen
	time.Sleep(5 * time.Millisecond)
	newURI, newCID := create("app.bsky.feed.post", "", map[string]any{"$type": "app.bsky.feed.post", "text": "fresh post", "createdAt": now()})
	ref := map[string]any{"uri": oldURI, "cid": oldCID}
	replyURI, _ := create("app.bsky.feed.post", "", map[string]any{"$type": "app.bsky.feed.post", "text": "a reply", "createdAt": now(),
		"reply": map[string]any{"root": ref, "parent": ref}})
	create("app.bsky.actor.profile", "self", map[string]any{"$type": "app.bsky.actor.profile", "displayName": "New name"})
	currentRev := head()

	me := map[string]any{"did": w.did, "handle": "alice.test", "displayName": "Old name"}
	oldPost := map[string]any{"uri": oldURI, "cid": oldCID, "author": me, "indexedAt": "2000-01-01T00:00:00.000Z",
		"record": map[string]any{"$type": "app.bsky.feed.post", "text": "indexed long ago", "createdAt": "2026-01-01T00:00:00.000Z"}}
	bobPost := map[string]any{"uri": "at://did:plc:bob/app.bsky.feed.post/1", "cid": oldCID, "indexedAt": "2026-01-01T00:00:00.000Z",
		"author": map[string]any{"did": "did:plc:bob", "handle": "bob.test"}, "record": map[string]any{"text": "bob"}}
	answers := map[string]any{
		"app.bsky.feed.getAuthorFeed": map[string]any{"feed": []any{map[string]any{"post": oldPost}}},
		"app.bsky.feed.getTimeline":   map[string]any{"feed": []any{map[string]any{"post": bobPost}}, "cursor": "c"},
		"app.bsky.actor.getProfile":   map[string]any{"did": w.did, "handle": "alice.test", "displayName": "Old name", "followersCount": 3},
		"app.bsky.actor.getProfiles":  map[string]any{"profiles": []any{me, map[string]any{"did": "did:plc:bob", "handle": "bob.test"}}},
		"app.bsky.feed.getPostThread": map[string]any{"thread": map[string]any{"$type": "app.bsky.feed.defs#threadViewPost", "post": oldPost, "replies": []any{}}},
		"app.bsky.feed.getActorLikes": map[string]any{"feed": []any{map[string]any{"post": oldPost}}},
	}
	var rev atomic.Value
	for nsid, body := range answers {
		raw, _ := json.Marshal(body)
		w.appview.route(nsid, func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "application/json; charset=utf-8")
			if v := rev.Load().(string); v != "" {
				rw.Header().Set("Atproto-Repo-Rev", v)
			}
			_, _ = rw.Write(raw)
		})
	}
	// posts returns the post URIs of a feed answer.
	posts := func(out map[string]any) map[string]map[string]any {
		got := map[string]map[string]any{}
		feed, _ := out["feed"].([]any)
		for _, it := range feed {
			p := it.(map[string]any)["post"].(map[string]any)
			got[p["uri"].(string)] = p
		}
		return got
	}
	cases := []struct {
		name, nsid, query string
		rev               string // the AppView's Atproto-Repo-Rev
		munged            bool
		check             func(t *testing.T, out map[string]any)
	}{
		{"author feed gains the new post", "app.bsky.feed.getAuthorFeed", "actor=" + url.QueryEscape(w.did) + "&limit=30", indexedRev, true, func(t *testing.T, out map[string]any) {
			got := posts(out)
			p := got[newURI]
			if p == nil || got[oldURI] == nil || p["cid"] != newCID || p["record"].(map[string]any)["text"] != "fresh post" {
				t.Fatalf("feed %v", out)
			}
			if a := p["author"].(map[string]any); a["did"] != w.did || a["displayName"] != "New name" {
				t.Fatalf("author %v", a)
			}
			if first := out["feed"].([]any)[0].(map[string]any)["post"].(map[string]any); first["uri"] == oldURI {
				t.Fatal("the old post comes first")
			}
			if oldAuthor := got[oldURI]["author"].(map[string]any); oldAuthor["displayName"] != "New name" {
				t.Fatalf("old post author not refreshed: %v", oldAuthor)
			}
		}},
		{"author feed by handle", "app.bsky.feed.getAuthorFeed", "actor=alice.test", indexedRev, true, func(t *testing.T, out map[string]any) {
			if posts(out)[newURI] == nil {
				t.Fatalf("feed %v", out)
			}
		}},
		{"someone else's feed is not touched", "app.bsky.feed.getAuthorFeed", "actor=bob.test", indexedRev, false, nil},
		{"timeline gains the new post", "app.bsky.feed.getTimeline", "limit=50", indexedRev, true, func(t *testing.T, out map[string]any) {
			got := posts(out)
			if got[newURI] == nil || got[replyURI] == nil || got[bobPost["uri"].(string)] == nil || out["cursor"] != "c" {
				t.Fatalf("timeline %v", out)
			}
		}},
		{"profile shows the newer record", "app.bsky.actor.getProfile", "actor=" + url.QueryEscape(w.did), indexedRev, true, func(t *testing.T, out map[string]any) {
			if out["displayName"] != "New name" || out["followersCount"] != float64(3) {
				t.Fatalf("profile %v", out)
			}
		}},
		{"profiles show the newer record", "app.bsky.actor.getProfiles", "actors=" + url.QueryEscape(w.did) + "&actors=bob.test", indexedRev, true, func(t *testing.T, out map[string]any) {
			ps := out["profiles"].([]any)
			if len(ps) != 2 || ps[0].(map[string]any)["displayName"] != "New name" || ps[1].(map[string]any)["displayName"] != nil {
				t.Fatalf("profiles %v", out)
			}
		}},
		{"thread gains the local reply", "app.bsky.feed.getPostThread", "uri=" + url.QueryEscape(oldURI), indexedRev, true, func(t *testing.T, out map[string]any) {
			replies := out["thread"].(map[string]any)["replies"].([]any)
			if len(replies) != 1 || replies[0].(map[string]any)["post"].(map[string]any)["uri"] != replyURI {
				t.Fatalf("thread %v", out)
			}
		}},
		{"likes refresh the author", "app.bsky.feed.getActorLikes", "actor=" + url.QueryEscape(w.did), indexedRev, true, nil},
		{"current AppView: author feed as is", "app.bsky.feed.getAuthorFeed", "actor=" + url.QueryEscape(w.did), currentRev, false, nil},
		{"current AppView: profile as is", "app.bsky.actor.getProfile", "actor=" + url.QueryEscape(w.did), currentRev, false, nil},
		{"no rev: timeline as is", "app.bsky.feed.getTimeline", "", "", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rev.Store(tc.rev)
			want, _ := json.Marshal(answers[tc.nsid])
			st, hdr, raw := w.s.pxDo(t, pxReq{method: "GET", nsid: tc.nsid, query: tc.query, token: w.access,
				header: map[string]string{"Atproto-Proxy": pxAppViewDID + "#bsky_appview", "Accept-Encoding": "gzip, br"}})
			if st != 200 {
				t.Fatalf("%d %s", st, raw)
			}
			rec := w.appview.one(t, tc.name, tc.nsid)
			checkSvcToken(t, tc.name, rec, w.did, pxAppViewDID, tc.nsid)
			if tc.rev != "" && hdr.Get("Atproto-Repo-Rev") != tc.rev {
				t.Fatalf("Atproto-Repo-Rev %q", hdr.Get("Atproto-Repo-Rev"))
			}
			lag := hdr.Get("Atproto-Upstream-Lag")
			if !tc.munged {
				if lag != "" || !bytes.Equal(raw, want) {
					t.Fatalf("changed: lag %q, body %s", lag, raw)
				}
				return
			}
			if ms, err := strconv.ParseInt(lag, 10, 64); err != nil || ms < 0 || ms > 60_000 {
				t.Fatalf("Atproto-Upstream-Lag %q", lag)
			}
			if hdr.Get("Content-Length") != strconv.Itoa(len(raw)) || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Fatalf("headers %v", hdr)
			}
			out := pxJSON(t, tc.name, raw)
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
}
