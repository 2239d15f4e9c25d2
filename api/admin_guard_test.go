package api

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pdsbox/pds/auth"
)

// TestAdminRoute: on an admin route, right credentials pass; every kind of
// wrong one gets the same answer; attempts beyond the budget get 429,
// right or wrong.
func TestAdminRoute(t *testing.T) {
	s := &server{cfg: Config{AdminPassword: "s3cret", TrustedProxies: DefaultTrustedProxies}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		adminLimit: auth.NewRateLimiter(adminAttempts, 5*time.Minute, nil),
		verifiers:  []auth.Verifier{auth.AdminVerifier{Password: "s3cret"}}}
	h := s.requireAuth(auth.PermAdmin)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	call := func(authz, addr string) (int, string) {
		r := httptest.NewRequest("POST", "/xrpc/x", nil)
		r.RemoteAddr = addr + ":1234"
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	if st, _ := call(basic("admin:s3cret"), "198.51.100.1"); st != 204 {
		t.Fatalf("right credentials: %d", st)
	}
	_, want := call(basic("admin:wrong"), "198.51.100.2")
	for _, authz := range []string{basic("admin:s3cre"), basic("root:s3cret"), basic("admin:s3cret "), "Basic !!!", basic("admins3cret")} {
		if st, body := call(authz, "198.51.100.3"); st != 401 || body != want {
			t.Errorf("%q: %d %s, want 401 %s", authz, st, body, want)
		}
	}
	for i := 0; i < adminAttempts+2; i++ {
		st, _ := call(basic("admin:wrong"), "198.51.100.4")
		if i >= adminAttempts && st != 429 {
			t.Fatalf("attempt %d: %d, want 429", i, st)
		}
	}
	if st, _ := call(basic("admin:s3cret"), "198.51.100.4"); st != 429 {
		t.Fatalf("right credentials past the budget: %d, want 429", st)
	}
}
