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

// checkAdmin reads HTTP Basic admin credentials. Without a Basic header it
// reports false and no error. With one, each attempt counts against the
// client address's admin budget (429 beyond); a wrong user, a wrong
// password and a malformed header all just report false, so the caller
// answers them exactly as it answers no credentials. The comparison is
// constant-time over fixed-length digests, so timing does not leak the
// password's length or a common prefix.
func (s *server) checkAdmin(w http.ResponseWriter, r *http.Request) (bool, error) {
	h := r.Header.Get("Authorization")
	if !hasBasicAuth(r) {
		return false, nil
	}
	if err := rateLimit(w, limitCheck{s.adminLimit, s.addrKey(r)}); err != nil {
		return false, err
	}
	if s.cfg.AdminPassword == "" {
		return false, nil
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
	got := sha256.Sum256(raw)
	want := sha256.Sum256([]byte("admin:" + s.cfg.AdminPassword))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1, nil
}
