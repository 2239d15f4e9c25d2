package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// hasBasicAuth reports whether the request carries HTTP Basic credentials.
func hasBasicAuth(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	return len(h) >= 6 && strings.EqualFold(h[:6], "basic ")
}

// limitAdmin counts an admin credential attempt against the client
// address's budget (adminAttempts per 5 minutes); 429 beyond. Call it for
// every request carrying Basic credentials, before anything else answers.
func (s *server) limitAdmin(w http.ResponseWriter, r *http.Request) error {
	return rateLimit(w, limitCheck{s.adminLimit, s.addrKey(r)})
}

// adminMatches reports whether the request carries the right HTTP Basic
// admin credentials. A wrong user, a wrong password and a malformed header
// all just report false, so the caller answers them exactly as it answers
// no credentials. The comparison is constant-time over fixed-length
// digests, so timing does not leak the password's length or a common
// prefix.
func (s *server) adminMatches(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if !hasBasicAuth(r) || s.cfg.AdminPassword == "" {
		return false
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
	got := sha256.Sum256(raw)
	want := sha256.Sum256([]byte("admin:" + s.cfg.AdminPassword))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// isAdmin reports whether the request carries the right admin credentials,
// without counting the attempt: callers that answer differently for admins
// must call limitAdmin first (or use requireAdmin).
func (s *server) isAdmin(r *http.Request) bool { return s.adminMatches(r) }

// errAdminAuth is the one answer of requireAdmin to every failed admin
// credential (wrong user, wrong password, malformed or missing header).
var errAdminAuth = xerr(http.StatusUnauthorized, "AuthenticationRequired", "Invalid admin credentials")

// requireAdmin guards admin-only routes: every attempt is counted per
// address (429 beyond), every failure gets the same answer.
func (s *server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasBasicAuth(r) {
			if err := s.limitAdmin(w, r); err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		if !s.adminMatches(r) {
			writeError(w, r, s.log, errAdminAuth)
			return
		}
		next.ServeHTTP(w, r)
	})
}
