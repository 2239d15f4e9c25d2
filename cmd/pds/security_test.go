package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/testpds"
)

// This file holds the security tests and the helpers they share with
// badinput_test.go: a movable clock, raw requests, hand-made JWTs and a
// snapshot of everything a request could change.

// testClock is a clock the test moves; the server's session tokens use it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startServerWith is startServer with a hook that adjusts the configuration
// before the app is opened (a clock, for instance).
func startServerWith(tb testing.TB, extra map[string]string, tweak func(*config)) *testServer {
	tb.Helper()
	plc := testpds.NewMockPLC(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	vars := map[string]string{
		"PDS_HOSTNAME":               "localhost",
		"PDS_PORT":                   strconv.Itoa(ln.Addr().(*net.TCPAddr).Port),
		"PDS_DATA_DIRECTORY":         tb.TempDir(),
		"PDS_DID_PLC_URL":            plc.URL,
		"PDS_SERVICE_HANDLE_DOMAINS": ".test",
		"PDS_ADMIN_PASSWORD":         "admin-secret",
		"LOG_LEVEL":                  "error",
	}
	maps.Copy(vars, extra)
	cfg, err := loadConfig(func(k string) string { return vars[k] }, "", "")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MinLoginDuration = -1
	if tweak != nil {
		tweak(cfg)
	}
	a, err := openApp(context.Background(), cfg, newLogger(io.Discard, "error"), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Close()
			a.Close()
		})
	}
	tb.Cleanup(stop)
	return &testServer{URL: "http://" + ln.Addr().String(), app: a, plc: plc, stop: stop}
}

// rawReq is one request as a client could send it, malformed or not.
type rawReq struct {
	method, nsid, query string
	// authz is the whole Authorization header; "" sends none.
	authz       string
	contentType string
	body        []byte
	// chunked hides the length: the body goes without Content-Length.
	chunked bool
	// headers are set as given (Content-Encoding, ...).
	headers map[string]string
}

func bearerAuth(tok string) string { return "Bearer " + tok }

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// jsonBody is v as JSON with its content type, for a rawReq.
func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send does rq and returns the status, the JSON answer and the headers. Every
// non-empty answer must be JSON.
func (s *testServer) send(t *testing.T, rq rawReq) (int, map[string]any, http.Header) {
	t.Helper()
	var body io.Reader
	if rq.body != nil {
		body = bytes.NewReader(rq.body)
		if rq.chunked {
			body = struct{ io.Reader }{body} // no Len: the length is unknown
		}
	}
	u := s.URL + "/xrpc/" + rq.nsid
	if rq.query != "" {
		u += "?" + rq.query
	}
	req, err := http.NewRequest(rq.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if rq.chunked {
		req.ContentLength = -1
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	if rq.authz != "" {
		req.Header.Set("Authorization", rq.authz)
	}
	for k, v := range rq.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", rq.nsid, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: non-JSON answer %d: %q", rq.nsid, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// wantXRPCError checks an error answer: its status, error name and, if
// wantMsg is set, that the message contains it. A 5xx is always a failure.
func wantXRPCError(t *testing.T, what string, status int, out map[string]any, wantStatus int, wantName, wantMsg string) {
	t.Helper()
	if status >= 500 {
		t.Errorf("%s: server error %d (%v)", what, status, out)
	}
	if status != wantStatus || out["error"] != wantName {
		t.Errorf("%s: got %d %v (%v), want %d %s", what, status, out["error"], out["message"], wantStatus, wantName)
		return
	}
	if msg, _ := out["message"].(string); wantMsg != "" && !strings.Contains(msg, wantMsg) {
		t.Errorf("%s: message %q does not mention %q", what, msg, wantMsg)
	}
}

// now is the server's clock.
func (s *testServer) now() time.Time {
	if s.app.cfg.Now != nil {
		return s.app.cfg.Now()
	}
	return time.Now()
}

// mintJWT builds a compact JWT by hand: header and claims as given, signed
// with key by alg ("HS256", "HS512"), or unsigned for "none".
func mintJWT(t *testing.T, alg string, key []byte, header, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string { return base64.RawURLEncoding.EncodeToString(jsonBody(t, v)) }
	input := enc(header) + "." + enc(claims)
	var h func() hash.Hash
	switch alg {
	case "none":
		return input + "."
	case "HS256":
		h = sha256.New
	case "HS512":
		h = sha512.New
	default:
		t.Fatalf("mintJWT: unknown alg %s", alg)
	}
	mac := hmac.New(h, key)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// with returns a copy of m with the changes applied; a nil value deletes.
func with(m map[string]any, changes map[string]any) map[string]any {
	out := maps.Clone(m)
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// accessClaims are the claims of a full-access token for did, issued now
// and valid for an hour, as the server issues them.
func (s *testServer) accessClaims(did string) map[string]any {
	now := s.now().Unix()
	return map[string]any{"scope": "com.atproto.access", "aud": s.app.cfg.ServiceDID, "sub": did, "iat": now, "exp": now + 3600}
}

// fullToken mints a valid full-access token with the server's secret.
func (s *testServer) fullToken(t *testing.T, did string) string {
	return mintJWT(t, "HS256", s.app.cfg.JWTSecret, map[string]any{"alg": "HS256", "typ": "at+jwt"}, s.accessClaims(did))
}

// jwtClaims decodes the claims of a JWT without checking it.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// state is everything a request could change, read back over HTTP (and the
// blob directory from disk).
type state struct {
	Head, Rev    string
	Collections  []string
	Records      map[string]string // uri → cid
	AppPasswords []string
	Blobs        []string
	BlobFiles    []string // every file under the blob directory, tmp/ included
	// Seq is the firehose's last seq; Sessions the refresh tokens held.
	Seq      int64
	Sessions int
}

// snapshot reads the state of did's repository. extra names collections to
// list even when describeRepo does not report them.
func (s *testServer) snapshot(t *testing.T, did string, extra ...string) state {
	t.Helper()
	var st state
	rp, err := s.app.accounts.Repo()
	if err != nil {
		t.Fatal(err)
	}
	head, rev, err := rp.Head()
	if err != nil {
		t.Fatal(err)
	}
	st.Head, st.Rev = head.String(), rev

	status, out, _ := s.send(t, rawReq{method: "GET", nsid: "com.atproto.repo.describeRepo", query: "repo=" + did})
	wantStatus(t, "describeRepo", status, out, 200, "")
	for _, c := range out["collections"].([]any) {
		st.Collections = append(st.Collections, c.(string))
	}
	st.Records = map[string]string{}
	for _, coll := range slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(st.Collections), extra...)))) {
		cursor := ""
		for {
			q := url.Values{"repo": {did}, "collection": {coll}, "limit": {"100"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			status, out, _ := s.send(t, rawReq{method: "GET", nsid: "com.atproto.repo.listRecords", query: q.Encode()})
			wantStatus(t, "listRecords "+coll, status, out, 200, "")
			for _, r := range out["records"].([]any) {
				rec := r.(map[string]any)
				st.Records[rec["uri"].(string)] = rec["cid"].(string)
			}
			if cursor, _ = out["cursor"].(string); cursor == "" {
				break
			}
		}
	}

	status, out, _ = s.send(t, rawReq{method: "GET", nsid: "com.atproto.server.listAppPasswords", authz: bearerAuth(s.fullToken(t, did))})
	wantStatus(t, "listAppPasswords", status, out, 200, "")
	for _, p := range out["passwords"].([]any) {
		ap := p.(map[string]any)
		st.AppPasswords = append(st.AppPasswords, fmt.Sprintf("%s privileged=%v", ap["name"], ap["privileged"]))
	}

	status, out, _ = s.send(t, rawReq{method: "GET", nsid: "com.atproto.sync.listBlobs", query: "limit=1000&did=" + did})
	wantStatus(t, "listBlobs", status, out, 200, "")
	for _, c := range out["cids"].([]any) {
		st.Blobs = append(st.Blobs, c.(string))
	}

	err = filepath.WalkDir(s.app.cfg.BlobDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(s.app.cfg.BlobDir, p)
		st.BlobFiles = append(st.BlobFiles, rel)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Seq = s.app.events.LastSeq()
	err = s.app.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("auth_refresh_tokens")); b != nil {
			st.Sessions = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wantUnchanged fails if the state differs from before. It returns the
// state now, so that one failure is not reported again by every later case.
func (s *testServer) wantUnchanged(t *testing.T, what string, before state, did string, extra ...string) state {
	t.Helper()
	after := s.snapshot(t, did, extra...)
	if before.Head != after.Head || before.Rev != after.Rev {
		t.Errorf("%s moved the head from %s (%s) to %s (%s)", what, before.Head, before.Rev, after.Head, after.Rev)
	}
	if before.Seq != after.Seq {
		t.Errorf("%s moved the firehose from seq %d to %d", what, before.Seq, after.Seq)
	}
	if before.Sessions != after.Sessions {
		t.Errorf("%s changed the sessions: %d refresh tokens, now %d", what, before.Sessions, after.Sessions)
	}
	for uri, c := range after.Records {
		if old, ok := before.Records[uri]; !ok {
			t.Errorf("%s created %s", what, uri)
		} else if old != c {
			t.Errorf("%s changed %s", what, uri)
		}
	}
	for uri := range before.Records {
		if _, ok := after.Records[uri]; !ok {
			t.Errorf("%s deleted %s", what, uri)
		}
	}
	for _, l := range []struct {
		name          string
		before, after []string
	}{
		{"collections", before.Collections, after.Collections},
		{"app passwords", before.AppPasswords, after.AppPasswords},
		{"blobs", before.Blobs, after.Blobs},
		{"blob files", before.BlobFiles, after.BlobFiles},
	} {
		if !slices.Equal(l.before, l.after) {
			t.Errorf("%s changed the %s: %v, now %v", what, l.name, l.before, l.after)
		}
	}
	return after
}

// securityFixture is an account with a post, a profile, an image blob and
// two app passwords, and sessions for each credential.
type securityFixture struct {
	did, access, refresh  string
	appAccess, privAccess string
	colls                 []string
}

func setupSecurity(t *testing.T, s *testServer) *securityFixture {
	t.Helper()
	f := &securityFixture{colls: []string{"app.bsky.feed.post", "app.bsky.actor.profile"}}
	f.did, f.access, f.refresh = s.createAccount(t)
	st, out := s.call(t, "POST", "com.atproto.repo.createRecord", f.access, "", map[string]any{
		"repo": f.did, "collection": "app.bsky.feed.post", "record": post("first"),
	})
	wantStatus(t, "createRecord", st, out, 200, "")
	st, out = s.call(t, "POST", "com.atproto.repo.putRecord", f.access, "", map[string]any{
		"repo": f.did, "collection": "app.bsky.actor.profile", "rkey": "self",
		"record": map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Alice"},
	})
	wantStatus(t, "putRecord", st, out, 200, "")
	st, out, _ = s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: bearerAuth(f.access), contentType: "image/png", body: pngBytes(t, 3000)})
	wantStatus(t, "uploadBlob", st, out, 200, "")
	withImage := post("with image")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": out["blob"]}}}
	st, out = s.call(t, "POST", "com.atproto.repo.createRecord", f.access, "", map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "record": withImage})
	wantStatus(t, "createRecord with image", st, out, 200, "")
	for _, ap := range []struct {
		name       string
		privileged bool
		session    *string
	}{{"phone", false, &f.appAccess}, {"laptop", true, &f.privAccess}} {
		st, out := s.call(t, "POST", "com.atproto.server.createAppPassword", f.access, "", map[string]any{"name": ap.name, "privileged": ap.privileged})
		wantStatus(t, "createAppPassword", st, out, 200, "")
		st, out = s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": out["password"]})
		wantStatus(t, "createSession (app password)", st, out, 200, "")
		*ap.session = out["accessJwt"].(string)
	}
	return f
}

func TestSecurity(t *testing.T) {
	clock := newTestClock()
	s := startServerWith(t, nil, func(c *config) { c.Now = clock.Now })
	f := setupSecurity(t, s)
	before := s.snapshot(t, f.did, f.colls...)
	if len(before.Records) != 3 || len(before.Blobs) != 1 || len(before.AppPasswords) != 2 {
		t.Fatalf("fixture: %+v", before)
	}

	t.Run("wrong password", func(t *testing.T) {
		for _, tc := range []struct{ name, identifier, password string }{
			{"wrong password by handle", "alice.test", "hunter2-hunter3"},
			{"wrong password by DID", f.did, "nope"},
			{"wrong password by email", "alice@example.com", "nope"},
			{"password in the wrong case", "alice.test", "HUNTER2-HUNTER2"},
			{"right password, unknown handle", "bob.test", "hunter2-hunter2"},
			{"right password, unknown DID", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "hunter2-hunter2"},
			{"right password, unknown email", "bob@example.com", "hunter2-hunter2"},
			{"over-long password", "alice.test", strings.Repeat("x", 600)},
		} {
			st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.createSession", contentType: "application/json",
				body: jsonBody(t, map[string]any{"identifier": tc.identifier, "password": tc.password})})
			wantXRPCError(t, tc.name, st, out, 401, "AuthenticationRequired", "Invalid identifier or password")
			if out["message"] != "Invalid identifier or password" {
				t.Errorf("%s: message %q tells more than the reference", tc.name, out["message"])
			}
			before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
		}
	})

	// Tokens made by hand: every way an access token can be wrong.
	secret := s.app.cfg.JWTSecret
	hdr := map[string]any{"alg": "HS256", "typ": "at+jwt"}
	good := s.accessClaims(f.did)
	now := s.now().Unix()
	past := map[string]any{"iat": now - 3*3600, "exp": now - 3600}
	tokenCases := []struct {
		name     string
		authz    string
		status   int
		errName  string
		errWords string
	}{
		{"no Authorization header", "", 401, "AuthMissing", ""},
		{"Basic admin credentials", basicAuth("admin", "admin-secret"), 400, "InvalidToken", "Unexpected authorization type"},
		{"garbage", bearerAuth("garbage"), 400, "InvalidToken", ""},
		{"three garbage parts", bearerAuth("a.b.c"), 400, "InvalidToken", ""},
		{"alg none", bearerAuth(mintJWT(t, "none", nil, with(hdr, map[string]any{"alg": "none"}), good)), 400, "InvalidToken", ""},
		{"alg none with a signature", bearerAuth(mintJWT(t, "HS256", secret, with(hdr, map[string]any{"alg": "none"}), good)), 400, "InvalidToken", ""},
		{"HS512 with the right secret", bearerAuth(mintJWT(t, "HS512", secret, with(hdr, map[string]any{"alg": "HS512"}), good)), 400, "InvalidToken", ""},
		{"wrong secret", bearerAuth(mintJWT(t, "HS256", []byte("not the secret"), hdr, good)), 400, "InvalidToken", ""},
		{"wrong secret, expired", bearerAuth(mintJWT(t, "HS256", []byte("not the secret"), hdr, with(good, past))), 400, "InvalidToken", ""},
		{"expired", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, past))), 400, "ExpiredToken", "Token has expired"},
		{"no exp", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"exp": nil}))), 400, "InvalidToken", ""},
		{"no iat", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"iat": nil}))), 400, "InvalidToken", ""},
		{"nbf in the future", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"nbf": now + 600}))), 400, "InvalidToken", ""},
		{"iat in the future", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"iat": now + 600, "exp": now + 4200}))), 400, "InvalidToken", ""},
		{"typ JWT", bearerAuth(mintJWT(t, "HS256", secret, with(hdr, map[string]any{"typ": "JWT"}), good)), 400, "InvalidToken", ""},
		{"no typ", bearerAuth(mintJWT(t, "HS256", secret, with(hdr, map[string]any{"typ": nil}), good)), 400, "InvalidToken", ""},
		{"typ refresh+jwt", bearerAuth(mintJWT(t, "HS256", secret, with(hdr, map[string]any{"typ": "refresh+jwt"}), good)), 400, "InvalidToken", ""},
		{"wrong aud", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"aud": "did:web:evil.example"}))), 400, "InvalidToken", ""},
		{"aud as an array", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"aud": []string{s.app.cfg.ServiceDID}}))), 400, "InvalidToken", ""},
		{"refresh scope", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"scope": "com.atproto.refresh"}))), 400, "InvalidToken", ""},
		{"unknown scope", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"scope": "com.atproto.admin"}))), 400, "InvalidToken", ""},
		{"app password scope without its id", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"scope": "com.atproto.appPass"}))), 400, "InvalidToken", ""},
		{"app password id of no app password", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"scope": "com.atproto.appPass", "apid": "forged"}))), 400, "InvalidToken", ""},
		{"another subject", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"sub": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}))), 400, "InvalidToken", ""},
		{"subject not a DID", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"sub": "alice.test"}))), 400, "InvalidToken", ""},
		{"service-auth lxm claim", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"lxm": "com.atproto.repo.createRecord"}))), 400, "InvalidToken", ""},
		{"proof-of-possession cnf claim", bearerAuth(mintJWT(t, "HS256", secret, hdr, with(good, map[string]any{"cnf": map[string]any{"jkt": "x"}}))), 400, "InvalidToken", ""},
		{"refresh token as access token", bearerAuth(f.refresh), 400, "InvalidToken", ""},
		{"claims swapped under a real signature", bearerAuth(swapClaims(t, f.appAccess, with(good, nil))), 400, "InvalidToken", ""},
	}
	accessRoutes := []struct {
		name string
		rq   rawReq
	}{
		{"getSession", rawReq{method: "GET", nsid: "com.atproto.server.getSession"}},
		{"createRecord", rawReq{method: "POST", nsid: "com.atproto.repo.createRecord", contentType: "application/json",
			body: jsonBody(t, map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "record": post("forged")})}},
		{"deleteRecord", rawReq{method: "POST", nsid: "com.atproto.repo.deleteRecord", contentType: "application/json",
			body: jsonBody(t, map[string]any{"repo": f.did, "collection": "app.bsky.actor.profile", "rkey": "self"})}},
		{"uploadBlob", rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", contentType: "image/png", body: pngBytes(t, 2000)}},
		{"createAppPassword", rawReq{method: "POST", nsid: "com.atproto.server.createAppPassword", contentType: "application/json",
			body: jsonBody(t, map[string]any{"name": "forged"})}},
		{"revokeAppPassword", rawReq{method: "POST", nsid: "com.atproto.server.revokeAppPassword", contentType: "application/json",
			body: jsonBody(t, map[string]any{"name": "phone"})}},
	}
	t.Run("access tokens", func(t *testing.T) {
		for _, tc := range tokenCases {
			for _, rt := range accessRoutes {
				rq := rt.rq
				rq.authz = tc.authz
				st, out, _ := s.send(t, rq)
				wantXRPCError(t, rt.name+" with "+tc.name, st, out, tc.status, tc.errName, tc.errWords)
			}
			before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
		}
	})

	t.Run("refresh tokens", func(t *testing.T) {
		rhdr := map[string]any{"alg": "HS256", "typ": "refresh+jwt"}
		rgood := with(jwtClaims(t, f.refresh), nil)
		for _, tc := range []struct {
			name    string
			authz   string
			status  int
			errName string
			// deleteOK: deleteSession answers 200, as the reference does:
			// it deletes the token's id, stored or not.
			deleteOK bool
		}{
			{"no Authorization header", "", 401, "AuthMissing", false},
			{"access token", bearerAuth(f.access), 400, "InvalidToken", false},
			{"app password access token", bearerAuth(f.appAccess), 400, "InvalidToken", false},
			{"garbage", bearerAuth("garbage"), 400, "InvalidToken", false},
			{"alg none", bearerAuth(mintJWT(t, "none", nil, with(rhdr, map[string]any{"alg": "none"}), rgood)), 400, "InvalidToken", false},
			{"wrong secret", bearerAuth(mintJWT(t, "HS256", []byte("not the secret"), rhdr, rgood)), 400, "InvalidToken", false},
			{"typ at+jwt", bearerAuth(mintJWT(t, "HS256", secret, with(rhdr, map[string]any{"typ": "at+jwt"}), rgood)), 400, "InvalidToken", false},
			{"access scope", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, map[string]any{"scope": "com.atproto.access"}))), 400, "InvalidToken", false},
			{"unknown jti", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, map[string]any{"jti": "forged"}))), 400, "ExpiredToken", true},
			{"no jti", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, map[string]any{"jti": nil}))), 400, "InvalidToken", false},
			{"expired", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, past))), 400, "ExpiredToken", false},
			{"nbf in the future", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, map[string]any{"nbf": now + 600}))), 400, "InvalidToken", false},
			{"iat in the future", bearerAuth(mintJWT(t, "HS256", secret, rhdr, with(rgood, map[string]any{"iat": now + 600}))), 400, "InvalidToken", false},
		} {
			st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.refreshSession", authz: tc.authz})
			wantXRPCError(t, "refreshSession with "+tc.name, st, out, tc.status, tc.errName, "")
			st, out, _ = s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.deleteSession", authz: tc.authz})
			if tc.deleteOK {
				wantStatus(t, "deleteSession with "+tc.name, st, out, 200, "")
			} else {
				wantXRPCError(t, "deleteSession with "+tc.name, st, out, tc.status, tc.errName, "")
			}
			before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
		}
	})

	t.Run("app password limits", func(t *testing.T) {
		for _, sess := range []struct{ name, token string }{{"app password", f.appAccess}, {"privileged app password", f.privAccess}} {
			for _, rq := range []rawReq{
				{method: "POST", nsid: "com.atproto.server.createAppPassword", contentType: "application/json", body: jsonBody(t, map[string]any{"name": "more"})},
				{method: "GET", nsid: "com.atproto.server.listAppPasswords"},
				{method: "POST", nsid: "com.atproto.server.revokeAppPassword", contentType: "application/json", body: jsonBody(t, map[string]any{"name": "phone"})},
				{method: "POST", nsid: "com.atproto.server.revokeAppPassword", contentType: "application/json", body: jsonBody(t, map[string]any{"name": "laptop"})},
			} {
				rq.authz = bearerAuth(sess.token)
				st, out, _ := s.send(t, rq)
				wantXRPCError(t, rq.nsid+" with "+sess.name, st, out, 400, "InvalidToken", "Bad token scope")
				before = s.wantUnchanged(t, rq.nsid+" with "+sess.name, before, f.did, f.colls...)
			}
			// An app password session does not see the email.
			st, out, _ := s.send(t, rawReq{method: "GET", nsid: "com.atproto.server.getSession", authz: bearerAuth(sess.token)})
			wantStatus(t, "getSession with "+sess.name, st, out, 200, "")
			if _, ok := out["email"]; ok {
				t.Errorf("getSession with %s shows the email: %v", sess.name, out)
			}
		}
	})

	t.Run("second createAccount", func(t *testing.T) {
		code, err := s.app.accounts.InviteCode()
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name    string
			authz   string
			input   map[string]any
			errName string
		}{
			{"with the invite code", "", map[string]any{"handle": "bob.test", "email": "bob@example.com", "password": "bob-password", "inviteCode": code}, "InvalidRequest"},
			{"same handle, with the invite code", "", map[string]any{"handle": "alice.test", "email": "alice@example.com", "password": "other-password", "inviteCode": code}, "InvalidRequest"},
			{"as admin", basicAuth("admin", "admin-secret"), map[string]any{"handle": "bob.test", "email": "bob@example.com", "password": "bob-password"}, "InvalidRequest"},
			{"as admin, same handle", basicAuth("admin", "admin-secret"), map[string]any{"handle": "alice.test", "password": "other-password"}, "InvalidRequest"},
			{"wrong invite code", "", map[string]any{"handle": "bob.test", "password": "bob-password", "inviteCode": "localhost-aaaaa-bbbbb"}, "InvalidInviteCode"},
			{"no invite code", "", map[string]any{"handle": "bob.test", "password": "bob-password"}, "InvalidInviteCode"},
			{"wrong admin password", basicAuth("admin", "wrong"), map[string]any{"handle": "bob.test", "password": "bob-password"}, "InvalidInviteCode"},
		} {
			st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.createAccount", authz: tc.authz, contentType: "application/json", body: jsonBody(t, tc.input)})
			wantXRPCError(t, tc.name, st, out, 400, tc.errName, "")
			before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
		}
		if n := len(s.plc.Ops(f.did)); n != 1 {
			t.Errorf("PLC holds %d operations for %s, want the genesis only", n, f.did)
		}
		// The account and its password are as they were.
		st, out := s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
		wantStatus(t, "createSession after the attempts", st, out, 200, "")
		if out["did"] != f.did || out["email"] != "alice@example.com" {
			t.Errorf("account changed: %v", out)
		}
		st, out = s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "other-password"})
		wantStatus(t, "createSession with the second password", st, out, 401, "AuthenticationRequired")
	})

	// Last: it moves the clock.
	t.Run("refresh rotation and grace", func(t *testing.T) {
		refresh := func(tok string) (int, map[string]any) {
			st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.refreshSession", authz: bearerAuth(tok)})
			return st, out
		}
		st, r1 := refresh(f.refresh)
		wantStatus(t, "first refresh", st, r1, 200, "")
		clock.Advance(time.Hour)
		st, r1again := refresh(f.refresh)
		wantStatus(t, "reuse within the grace period", st, r1again, 200, "")
		if a, b := jwtClaims(t, r1["refreshJwt"].(string))["jti"], jwtClaims(t, r1again["refreshJwt"].(string))["jti"]; a != b {
			t.Errorf("reuse within the grace period gave another successor: %v, %v", a, b)
		}
		before.Sessions = s.snapshot(t, f.did).Sessions // the rotation stores the successor
		before = s.wantUnchanged(t, "refresh within the grace period", before, f.did, f.colls...)

		clock.Advance(time.Hour + time.Minute) // 2h01 after the rotation, 2h01 after the first access token
		st, out := refresh(f.refresh)
		wantXRPCError(t, "reuse after the grace period", st, out, 400, "ExpiredToken", "Token has been revoked")
		before.Sessions = s.snapshot(t, f.did).Sessions // the expired token is forgotten
		st, out, _ = s.send(t, rawReq{method: "GET", nsid: "com.atproto.server.getSession", authz: bearerAuth(f.access)})
		wantXRPCError(t, "access token after 2 h", st, out, 400, "ExpiredToken", "Token has expired")
		st, out, _ = s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.createRecord", authz: bearerAuth(f.access), contentType: "application/json",
			body: jsonBody(t, map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "record": post("late")})})
		wantXRPCError(t, "write with an expired access token", st, out, 400, "ExpiredToken", "Token has expired")
		before = s.wantUnchanged(t, "expired tokens", before, f.did, f.colls...)

		// The successor still works, and its access token too.
		st, r2 := refresh(r1["refreshJwt"].(string))
		wantStatus(t, "refresh with the successor", st, r2, 200, "")
		st, out, _ = s.send(t, rawReq{method: "GET", nsid: "com.atproto.server.getSession", authz: bearerAuth(r2["accessJwt"].(string))})
		wantStatus(t, "getSession with the new access token", st, out, 200, "")
		before.Sessions = s.snapshot(t, f.did).Sessions // the successor's successor
		before = s.wantUnchanged(t, "refresh with the successor", before, f.did, f.colls...)
	})
}

// swapClaims replaces the claims of a real token and keeps its signature.
func swapClaims(t *testing.T, tok string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString(jsonBody(t, claims))
	return strings.Join(parts, ".")
}

func TestLoginRateLimit(t *testing.T) {
	s := startServer(t, nil)
	did, _, _ := s.createAccount(t)
	before := s.snapshot(t, did)
	login := func(password string) (int, map[string]any, http.Header) {
		return s.send(t, rawReq{method: "POST", nsid: "com.atproto.server.createSession", contentType: "application/json",
			body: jsonBody(t, map[string]any{"identifier": "alice.test", "password": password})})
	}
	for i := range 30 {
		st, out, h := login("wrong")
		wantXRPCError(t, fmt.Sprintf("attempt %d", i+1), st, out, 401, "AuthenticationRequired", "")
		if got, want := h.Get("RateLimit-Remaining"), strconv.Itoa(29-i); got != want {
			t.Errorf("attempt %d: RateLimit-Remaining %q, want %s", i+1, got, want)
		}
	}
	start := time.Now()
	for _, pw := range []string{"wrong", "hunter2-hunter2"} {
		st, out, h := login(pw)
		wantXRPCError(t, "attempt over the limit with password "+pw, st, out, 429, "RateLimitExceeded", "")
		if h.Get("RateLimit-Limit") != "30" || h.Get("RateLimit-Remaining") != "0" || h.Get("RateLimit-Policy") != "30;w=300" {
			t.Errorf("429 headers: %v", h)
		}
		reset, err := strconv.ParseInt(h.Get("RateLimit-Reset"), 10, 64)
		if err != nil || reset < start.Unix() || reset > start.Add(5*time.Minute).Unix()+1 {
			t.Errorf("RateLimit-Reset %q is not a time within the 5 min window", h.Get("RateLimit-Reset"))
		}
	}
	_ = s.wantUnchanged(t, "rate-limited logins", before, did)
}
