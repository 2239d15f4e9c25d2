package oauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkAuthenticate measures the resource-side cost of one OAuth
// request: access token HMAC, DPoP proof (ES256 verify, replay cache), the
// session read from bbolt and the scope parse.
func BenchmarkAuthenticate(b *testing.B) {
	p := newTestPDS(b, pdsOptions{})
	site, _ := newClientSite(b, strings.Split(postScope, " "))
	key := newKey(b)
	tok := p.tokens(b, site, key, postScope).str("access_token")
	u := p.URL + "/xrpc/com.example.check"
	proofs := make([]string, b.N)
	for i := range proofs {
		proofs[i] = key.proof(b, "GET", u, p.srv.nonces.current(), tok, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "/xrpc/com.example.check", nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", proofs[i])
		if _, err := p.srv.Authenticate(httptest.NewRecorder(), req); err != nil {
			b.Fatal(err)
		}
	}
}
