package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// mailedCode is a second factor whose "email" the test can read.
type mailedCode struct {
	mu   sync.Mutex
	code string
	sent int
}

func (m *mailedCode) Required(context.Context) (bool, error) { return true, nil }

func (m *mailedCode) Send(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent++
	m.code = randomToken(6)
	return nil
}

func (m *mailedCode) Check(_ context.Context, code string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.code == "" || code != m.code {
		return errors.New("bad code")
	}
	m.code = ""
	return nil
}

func TestSecondFactor(t *testing.T) {
	mail := &mailedCode{}
	p := newTestPDS(t, pdsOptions{factor: mail})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	reqURI := p.par(t, site, key, postScope)
	authURL := p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode()
	b := newBrowser(t)
	_, page := b.get(authURL)
	resp, page := b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {field(t, csrfRE, page)}, "request_uri": {reqURI},
		"identifier": {testHandle.String()}, "password": {testPassword}})
	if resp.StatusCode != 200 || !strings.Contains(page, "Check your email") || mail.sent != 1 {
		t.Fatalf("after password: %d sent=%d\n%s", resp.StatusCode, mail.sent, page)
	}
	// The password alone does not sign in: the consent page is not reachable.
	if _, page := b.get(authURL); strings.Contains(page, "Allow this app") {
		t.Fatal("consent page before the second factor")
	}
	csrf := field(t, csrfRE, page)
	resp, _ = b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {csrf}, "request_uri": {reqURI}, "code": {"wrong"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong code: %d", resp.StatusCode)
	}
	resp, _ = b.post(p.URL+"/oauth/authorize/sign-in", url.Values{"csrf": {csrf}, "request_uri": {reqURI}, "code": {mail.code}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right code: %d", resp.StatusCode)
	}
	cb := b.consent(p, resp.Header.Get("Location"), "allow")
	if a := p.exchange(t, site, key, cb.Query().Get("code"), testVerifier); a.Status != 200 {
		t.Fatalf("token: %v", a.Body)
	}
}

func TestSignedInBrowserAndPrompt(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	b := newBrowser(t)
	b.approve(p, p.URL+"/oauth/authorize?"+url.Values{"client_id": {site.ID}, "request_uri": {p.par(t, site, key, postScope)}}.Encode())

	// The same browser goes straight to consent next time...
	u := p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {p.par(t, site, key, postScope)}}.Encode()
	if cb := b.consent(p, u, "deny"); cb.Query().Get("error") != "access_denied" || cb.Query().Get("code") != "" || cb.Query().Get("state") != "st" {
		t.Fatalf("deny: %s", cb)
	}
	// ...unless the app asks for a fresh sign-in.
	a := p.postForm(t, "/oauth/par", url.Values{"client_id": {site.ID}, "redirect_uri": {site.Cb}, "response_type": {"code"}, "prompt": {"login"},
		"scope": {postScope}, "code_challenge": {challenge(testVerifier)}, "code_challenge_method": {"S256"}}, key, nil)
	u = p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {a.str("request_uri")}}.Encode()
	if _, page := b.get(u); !strings.Contains(page, `name="password"`) {
		t.Fatal("prompt=login did not ask for the password")
	}
	if cb := b.approve(p, u); cb.Query().Get("code") == "" {
		t.Fatalf("after a fresh sign-in: %s", cb)
	}
}

func TestAccountPage(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, strings.Split(postScope, " "))
	key := newKey(t)
	tok := p.tokens(t, site, key, postScope)

	b := newBrowser(t)
	_, page := b.get(p.URL + "/oauth/account")
	if !strings.Contains(page, `name="password"`) || strings.Contains(page, "Test App") {
		t.Fatal("account page shown without signing in")
	}
	csrf := field(t, csrfRE, page)
	resp, _ := b.post(p.URL+"/oauth/account/sign-in", url.Values{"csrf": {csrf}, "identifier": {testHandle.String()}, "password": {testPassword}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	_, page = b.get(p.URL + "/oauth/account")
	if !strings.Contains(page, "Test App") || !strings.Contains(page, "Create posts") {
		t.Fatalf("account page:\n%s", page)
	}
	ss, _ := p.srv.Sessions(context.Background())
	// A revoke without the page's token is refused.
	resp, _ = b.post(p.URL+"/oauth/account/revoke", url.Values{"csrf": {"x"}, "session": {ss[0].ID}})
	if resp.StatusCode != http.StatusForbidden || p.sessionCount(t) != 1 {
		t.Fatalf("revoke without CSRF: %d", resp.StatusCode)
	}
	resp, _ = b.post(p.URL+"/oauth/account/revoke", url.Values{"csrf": {field(t, csrfRE, page)}, "session": {ss[0].ID}})
	if resp.StatusCode != http.StatusSeeOther || p.sessionCount(t) != 0 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if a := p.call(t, tok.str("access_token"), key, nil); a.Status != 401 {
		t.Fatalf("revoked app's token: %d", a.Status)
	}
}
