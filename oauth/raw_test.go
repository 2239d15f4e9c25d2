package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

// A hand-rolled OAuth client, so that the security tests can get every
// part of a request wrong on purpose.

type dpopKey struct {
	priv *atcrypto.PrivateKeyP256
	jwk  *atcrypto.JWK
}

func newKey(t testing.TB) *dpopKey {
	t.Helper()
	priv, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := priv.PublicKey()
	j, _ := pub.JWK()
	return &dpopKey{priv: priv, jwk: j}
}

func b64json(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign makes a compact ES256 JWS of header and claims.
func (k *dpopKey) sign(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	signed := b64json(header) + "." + b64json(claims)
	sig, err := k.priv.HashAndSign([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// proof is a DPoP proof; mut may change the header and claims first.
func (k *dpopKey) proof(t testing.TB, method, htu, nonce, accessToken string, mut func(h, c map[string]any)) string {
	h := map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": k.jwk}
	c := map[string]any{"jti": randomToken(12), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if nonce != "" {
		c["nonce"] = nonce
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if mut != nil {
		mut(h, c)
	}
	return k.sign(t, h, c)
}

type oauthAnswer struct {
	Status int
	Body   map[string]any
	Header http.Header
}

func (a oauthAnswer) str(k string) string { s, _ := a.Body[k].(string); return s }

func doReq(t testing.TB, req *http.Request) oauthAnswer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := oauthAnswer{Status: resp.StatusCode, Header: resp.Header}
	_ = json.Unmarshal(b, &a.Body)
	return a
}

// postForm posts f to path with a proof by key (nil: no proof).
func (p *testPDS) postForm(t testing.TB, path string, f url.Values, key *dpopKey, mut func(h, c map[string]any)) oauthAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.URL+path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if key != nil {
		req.Header.Set("DPoP", key.proof(t, "POST", p.URL+path, p.srv.nonces.current(), "", mut))
	}
	return doReq(t, req)
}

// call makes a resource request with a token and a proof by key.
func (p *testPDS) call(t testing.TB, token string, key *dpopKey, mut func(h, c map[string]any)) oauthAnswer {
	t.Helper()
	u := p.URL + "/xrpc/com.example.check"
	req, _ := http.NewRequest(http.MethodGet, u+"?collection=app.bsky.feed.post&action=create", nil)
	req.Header.Set("Authorization", "DPoP "+token)
	req.Header.Set("DPoP", key.proof(t, "GET", u, p.srv.nonces.current(), token, mut))
	return doReq(t, req)
}

const testVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP"

func challenge(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// par pushes a request for the site's client with key and returns the
// request_uri.
func (p *testPDS) par(t testing.TB, site *clientSite, key *dpopKey, scope string) string {
	t.Helper()
	a := p.postForm(t, "/oauth/par", url.Values{"client_id": {site.ID}, "redirect_uri": {site.Cb}, "response_type": {"code"},
		"scope": {scope}, "state": {"st"}, "code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}, key, nil)
	if a.Status != http.StatusCreated {
		t.Fatalf("PAR: %d %v", a.Status, a.Body)
	}
	return a.str("request_uri")
}

// code runs PAR and the pages for the site's client and returns the code.
func (p *testPDS) code(t testing.TB, site *clientSite, key *dpopKey, scope string) string {
	t.Helper()
	reqURI := p.par(t, site, key, scope)
	cb := newBrowser(t).approve(p, p.URL+"/oauth/authorize?"+url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode())
	code := cb.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", cb)
	}
	return code
}

func (p *testPDS) exchange(t testing.TB, site *clientSite, key *dpopKey, code, verifier string) oauthAnswer {
	t.Helper()
	f := url.Values{"client_id": {site.ID}, "grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {site.Cb}}
	if verifier != "" {
		f.Set("code_verifier", verifier)
	}
	return p.postForm(t, "/oauth/token", f, key, nil)
}

func (p *testPDS) refreshWith(t testing.TB, site *clientSite, key *dpopKey, refresh, scope string) oauthAnswer {
	t.Helper()
	f := url.Values{"client_id": {site.ID}, "grant_type": {"refresh_token"}, "refresh_token": {refresh}}
	if scope != "" {
		f.Set("scope", scope)
	}
	return p.postForm(t, "/oauth/token", f, key, nil)
}

// tokens runs the whole flow with the hand-rolled client.
func (p *testPDS) tokens(t testing.TB, site *clientSite, key *dpopKey, scope string) oauthAnswer {
	t.Helper()
	a := p.exchange(t, site, key, p.code(t, site, key, scope), testVerifier)
	if a.Status != 200 {
		t.Fatalf("token: %d %v", a.Status, a.Body)
	}
	return a
}

func (p *testPDS) sessionCount(t testing.TB) int {
	t.Helper()
	ss, err := p.srv.Sessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(ss)
}
